"""`cli.py nested`: choose each model's recipe, and the best model of each family, for voices never heard,
without ever using the voice it is then scored on.

    OUT/nested.json                                    the plan (data, models, recipes, seeds, outer seeds, epochs,
                                                       speakers)
    OUT/inner/<model>/<recipe>/<a>+<b>/seed<k>/        trained on every speaker but a and b, scored on each apart
    OUT/outer/<speaker>/<model>/<recipe>/seed<k>/      trained on every speaker but one, scored on it
    OUT/outer-<n>-epochs/...                           the same, trained for n epochs where --outer-epochs n
                                                       differs from the inner runs' (a final claim rerun longer
                                                       than the screening that chose it)

For each outer (test) speaker o:
- a candidate (model, recipe) gets an inner score: the mean, over every other speaker i and every seed, of the
  accuracy on i of the inner run that held out {o, i}. That run never trained or validated on o or i (its
  validation is a seeded share of its own training speakers' samples, so no epoch is chosen on a held-out
  voice either), and its accuracy on o is never read for o's choices.
- each model takes the recipe with the best inner score; each family (ANN: rnn, gru; spiking: lif, cuba-lif,
  spikgru) the model with the best inner score at its chosen recipe;
- each model at its chosen recipe is trained again on every speaker but o (each outer seed: the seeds, and more
  where asked, so that the score and the seed spread on o are measured better than the choices need) and scored
  on o, once.
The recorded speakers of every sample a choice used (each run's split_speakers, and the speaker it was scored
on) are checked: a choice that saw o is an error, never a result.

One inner run on all speakers but {a, b} serves two outer speakers (scored on b for a, on a for b): a candidate
costs C(S, 2) runs per seed. Runs go two (--jobs) at a time, each its own one-thread process; running the same
command again keeps finished runs, resumes interrupted ones from their last epoch, and starts the rest.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from audio.datasets import LAYOUTS, find_source, read_pool
from audio.speakers import RANDOM, present_speakers
from common.atomic import atomic_path, check_output
from common.errors import InputError, terminate_on_signals
from common.rundir import run_lock, run_parts, study_above
from train.models import MODEL_KINDS, SPIKING
from train.recipe import RECIPES
from train.stats import mean_ci, paired_difference, seed_spread
from train.trainer import TrainConfig, config_from_options, train

FAMILIES = {"ann": ("rnn", "gru"), "spiking": SPIKING}
# a distilling recipe's teacher (train.checkpoint): the plan's first ANN at this recipe, same held-out speakers and seed
TEACHER_RECIPE = "study"
PLAN = "nested.json"
_PLAN_KEYS = ("data", "hidden", "epochs")


class Leak(InputError):
    """A choice for a test speaker would have used samples of that speaker."""


def parse_model(name: str) -> tuple[str, int]:
    """'cuba-lif-2' -> ('cuba-lif', 2)."""
    kind, _, layers = name.rpartition("-")
    if kind not in MODEL_KINDS or not layers.isdigit() or int(layers) < 1:
        raise InputError(f"--models {name}: expected KIND-LAYERS with KIND one of {', '.join(MODEL_KINDS)} "
                         "(e.g. cuba-lif-2)")
    return kind, int(layers)


def family_of(model: str) -> str:
    kind, _ = parse_model(model)
    return next(f for f, kinds in FAMILIES.items() if kind in kinds)


def _pair_name(pair: tuple[str, str]) -> str:
    return "+".join(pair)


class Plan:
    """What is compared, and where each run lives."""

    def __init__(self, out: Path, data: str, models: list[str], recipes: list[str], seeds: list[int], epochs: int,
                 hidden: int, speakers: list[str], outer_seeds: list[int] | None = None,
                 outer_epochs: int | None = None):
        self.out, self.data, self.models, self.recipes = Path(out), data, models, recipes
        self.seeds, self.epochs, self.hidden, self.speakers = seeds, epochs, hidden, speakers
        self.outer_seeds = sorted(set(outer_seeds or []) | set(seeds))
        self.outer_epochs = outer_epochs or epochs

    def as_dict(self) -> dict:
        return {"data": self.data, "models": self.models, "recipes": self.recipes, "seeds": self.seeds,
                "outer_seeds": self.outer_seeds, "epochs": self.epochs, "outer_epochs": self.outer_epochs,
                "hidden": self.hidden, "speakers": self.speakers}

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.speakers, 2))

    def inner_dir(self, model: str, recipe: str, pair: tuple[str, str], seed: int) -> Path:
        return self.out / "inner" / model / recipe / _pair_name(pair) / f"seed{seed}"

    def outer_dir(self, speaker: str, model: str, recipe: str, seed: int, epochs: int | None = None) -> Path:
        """epochs: of the outer runs sought (default the plan's outer epochs)."""
        epochs = epochs or self.outer_epochs
        outer = "outer" if epochs == self.epochs else f"outer-{epochs}-epochs"
        return self.out / outer / speaker / model / recipe / f"seed{seed}"

    def shorter_outer_epochs(self) -> list[int]:
        """The epochs of the outer runs on disk that trained for fewer than the plan's outer epochs: the inner
        runs' epochs, and every earlier --outer-epochs."""
        found = {self.epochs} | {int(p.name.split("-")[1]) for p in self.out.glob("outer-*-epochs")
                                 if p.is_dir() and p.name.split("-")[1].isdigit()}
        return sorted(e for e in found if e < self.outer_epochs)

    @property
    def teacher_model(self) -> str | None:
        """The model whose runs at TEACHER_RECIPE teach a distilling recipe's runs: the first ANN named."""
        return next((m for m in self.models if family_of(m) == "ann"), None)

    def config(self, model: str, recipe: str, held_out: tuple[str, ...], seed: int,
               epochs: int | None = None, teacher: Path | None = None) -> TrainConfig:
        """teacher: the run that teaches a distilling recipe (inner_job, outer_job)."""
        kind, layers = parse_model(model)
        return config_from_options(model=kind, layers=layers, hidden=self.hidden, data=self.data,
                                   epochs=epochs or self.epochs, seed=seed, recipe_name=recipe,
                                   holdout_speaker=",".join(held_out), valid_speaker=RANDOM,
                                   teacher=None if teacher is None else str(teacher))

    def inner_job(self, model: str, recipe: str, pair: tuple[str, str], seed: int) -> tuple[Path, TrainConfig]:
        teacher = self.inner_dir(self.teacher_model, TEACHER_RECIPE, pair, seed) if _taught(recipe) else None
        return self.inner_dir(model, recipe, pair, seed), self.config(model, recipe, pair, seed, teacher=teacher)

    def outer_job(self, speaker: str, model: str, recipe: str, seed: int) -> tuple[Path, TrainConfig]:
        teacher = (self.outer_dir(speaker, self.teacher_model, TEACHER_RECIPE, seed) if _taught(recipe) else None)
        return (self.outer_dir(speaker, model, recipe, seed),
                self.config(model, recipe, (speaker,), seed, self.outer_epochs, teacher))

    def inner_jobs(self) -> list[tuple[Path, TrainConfig]]:
        """Seed by seed, so that a first complete seed comes early; the teachers of a seed first."""
        jobs = []
        for k in self.seeds:
            if any(_taught(r) for r in self.recipes):
                jobs += [self.inner_job(self.teacher_model, TEACHER_RECIPE, p, k) for p in self.pairs]
            jobs += [self.inner_job(m, r, p, k) for m in self.models for r in self.recipes for p in self.pairs]
        return _once(jobs)


def _once(jobs: list[tuple[Path, TrainConfig]]) -> list[tuple[Path, TrainConfig]]:
    """Each run once, where it first comes."""
    seen: set[Path] = set()
    return [(d, c) for d, c in jobs if not (d in seen or seen.add(d))]


def _taught(recipe: str) -> bool:
    return RECIPES[recipe].distill > 0


def _speakers_of(data: str) -> list[str]:
    source = find_source(data)
    return present_speakers(read_pool(source, LAYOUTS[source.layout]["n_channels"]))


def make_plan(out: str | Path, data: str, models: list[str], recipes: list[str], n_seeds: int = 2, seed: int = 0,
              epochs: int = 20, hidden: int = 128, only: bool = False, n_outer_seeds: int | None = None,
              outer_epochs: int | None = None) -> Plan:
    """Checks every setting (before anything runs) and merges with a plan already in OUT (more models, recipes or
    seeds may join; data, size and the inner runs' epochs may not change; outer_epochs may, its runs live apart,
    and is kept when not given). only: the candidates become exactly these models and recipes, so that the most
    promising can finish first; the runs of those left out stay and count again when they are named again."""
    check_output(out, kind="nested", resume=True)
    if not models or not recipes:
        raise InputError("--models and --recipes must each name at least one")
    for m in models:
        parse_model(m)
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise InputError(f"--recipes {', '.join(unknown)}: unknown, choose from {', '.join(RECIPES)}")
    if n_seeds < 2:
        raise InputError(f"--seeds {n_seeds}: a spiking model's accuracy on a new voice moves by up to 10 points "
                         "between seeds; anything that decides needs at least 2")
    if n_outer_seeds is not None and n_outer_seeds < n_seeds:
        raise InputError(f"--outer-seeds {n_outer_seeds}: the outer folds train at least the --seeds {n_seeds} the "
                         "choices are made with")
    outer_epochs_asked = epochs if outer_epochs is None else outer_epochs
    for name, v in (("--epochs", epochs), ("--hidden", hidden), ("--outer-epochs", outer_epochs_asked)):
        if v < 1:
            raise InputError(f"{name} must be at least 1, got {v}")
    speakers = _speakers_of(data)
    if len(speakers) < 3:
        raise InputError(f"{data}: {len(speakers)} speakers; the nested protocol needs at least 3 (one to test, two "
                         "to choose with, each inner fold still training on one)")
    plan = Plan(Path(out), data, list(dict.fromkeys(models)), list(dict.fromkeys(recipes)),
                list(range(seed, seed + n_seeds)), epochs, hidden, speakers,
                list(range(seed, seed + (n_outer_seeds or n_seeds))), outer_epochs)
    path = plan.out / PLAN
    if path.exists():
        old = read_plan(plan.out)
        changed = [k for k in _PLAN_KEYS if getattr(old, k) != getattr(plan, k)]
        if changed or old.speakers != plan.speakers:
            raise InputError(f"{plan.out}: holds a nested study with other settings ({', '.join(changed) or 'speakers'});"
                             " pick another --out, or --resume it as it is")
        if not only:
            plan.models = list(dict.fromkeys(old.models + plan.models))
            plan.recipes = list(dict.fromkeys(old.recipes + plan.recipes))
        plan.seeds = sorted(set(old.seeds) | set(plan.seeds))
        plan.outer_seeds = sorted(set(old.outer_seeds) | set(plan.outer_seeds))
        if outer_epochs is None:
            plan.outer_epochs = old.outer_epochs
    if any(_taught(r) for r in plan.recipes) and plan.teacher_model is None:
        raise InputError(f"--recipes {', '.join(r for r in plan.recipes if _taught(r))}: learns from an ANN's runs; "
                         "name one in --models (e.g. gru-2)")
    return plan


def read_plan(out: str | Path) -> Plan:
    """The plan in OUT/nested.json, every field checked (read-only: a running study's report may be read)."""
    path = Path(out) / PLAN
    if not path.exists():
        raise InputError(f"{out}: not a nested study (no {PLAN})")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: unreadable nested plan ({exc})") from None
    if not isinstance(d, dict):
        raise InputError(f"{path}: unreadable nested plan (not a JSON object)")
    is_list = lambda v, t: isinstance(v, list) and bool(v) and all(isinstance(x, t) and not isinstance(x, bool) for x in v)
    checks = {"data": isinstance(d.get("data"), str), "models": is_list(d.get("models"), str),
              "recipes": is_list(d.get("recipes"), str) and all(r in RECIPES for r in d["recipes"]),
              "seeds": is_list(d.get("seeds"), int), "speakers": is_list(d.get("speakers"), str),
              "outer_seeds": "outer_seeds" not in d or is_list(d["outer_seeds"], int),
              **{k: (k == "outer_epochs" and k not in d)
                 or (isinstance(d.get(k), int) and not isinstance(d.get(k), bool) and d[k] >= 1)
                 for k in ("epochs", "hidden", "outer_epochs")}}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise InputError(f"{path}: unreadable nested plan ('{bad[0]}' is missing or malformed)")
    for m in d["models"]:
        parse_model(m)
    return Plan(Path(out), d["data"], d["models"], d["recipes"], d["seeds"], d["epochs"], d["hidden"], d["speakers"],
                d.get("outer_seeds"), d.get("outer_epochs"))


# ------------------------------------------------------------------------------------------------- running
def _job_command(run_dir: Path, cfg: TrainConfig) -> list[str]:
    return [sys.executable, "-m", "train.nested", "--job", str(run_dir), json.dumps(asdict(cfg))]


def run_job(run_dir: Path, cfg: TrainConfig) -> dict:
    """Trains one run (or resumes it) of the study it lies in; returns its summary."""
    done = run_dir / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    return train(cfg, run_dir, resume=bool(run_parts(run_dir)), progress=False, within=study_above(run_dir))


def _teacher_done(cfg: TrainConfig) -> bool:
    return cfg.teacher is None or (Path(cfg.teacher) / "summary.json").exists()


def run_jobs(jobs: list[tuple[Path, TrainConfig]], n_jobs: int = 2, log=print) -> list[str]:
    """Runs every unfinished job, n_jobs side by side (each a one-thread process; n_jobs 0: one at a time in this
    process; a job whose teacher comes earlier in `jobs` waits for it); returns the failures, one line each. A
    stopped parent stops its children (they keep their last epoch for the next start)."""
    todo = [(d, c) for d, c in jobs if not (d / "summary.json").exists()]
    failures: list[str] = []
    if not todo:
        return failures
    log(f"{len(jobs) - len(todo)} of {len(jobs)} runs finished; {len(todo)} to go, {max(1, n_jobs)} at a time")
    t0 = time.monotonic()
    if n_jobs == 0:
        for k, (d, c) in enumerate(todo, 1):
            s = run_job(d, c)
            log(f"[{k}/{len(todo)}] {d}: {100 * s['test_acc']:.1f} %")
        return failures
    root = str(Path(__file__).resolve().parents[1])  # the children run this checkout's code, whatever the cwd
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    pending, running, finished = list(todo), [], 0
    try:
        while pending or running:
            while len(running) < n_jobs and (job := next((j for j in pending if _teacher_done(j[1])), None)):
                pending.remove(job)
                d, c = job
                d.parent.mkdir(parents=True, exist_ok=True)
                log_file = open(d.parent / f"{d.name}.log", "a")
                running.append((subprocess.Popen(_job_command(d, c), env=env, stdout=log_file, stderr=log_file),
                                log_file, d))
            if pending and not running:  # left waiting for teachers that failed
                for d, c in pending:
                    failures.append(f"{d}: not started, its teacher {c.teacher} did not finish")
                    log(f"{d}: not started, its teacher {c.teacher} did not finish")
                break
            time.sleep(0.5)
            for item in list(running):
                proc, log_file, d = item
                if proc.poll() is None:
                    continue
                log_file.close()
                running.remove(item)
                finished += 1
                left = len(pending) + len(running)
                eta = (time.monotonic() - t0) / finished * left / 60
                if proc.returncode == 0 and (d / "summary.json").exists():
                    acc = json.loads((d / "summary.json").read_text())["test_acc"]
                    log(f"[{finished}/{len(todo)}] {d}: {100 * acc:.1f} % (about {eta:.0f} min left)")
                else:
                    last = (d.parent / f"{d.name}.log").read_text().strip().splitlines()[-1:] or ["no output"]
                    failures.append(f"{d}: exit {proc.returncode}: {last[0]}")
                    log(f"[{finished}/{len(todo)}] {d}: FAILED (exit {proc.returncode}): {last[0]}")
    finally:
        for proc, log_file, _ in running:
            proc.terminate()
        for proc, log_file, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log_file.close()
    return failures


def run_nested(plan: Plan, n_jobs: int = 2, log=print) -> dict:
    """Inner runs, the choices, outer runs; returns the report (nested_report)."""
    check_output(plan.out, kind="nested", resume=True)
    with run_lock(plan.out):
        check_output(plan.out, kind="nested", resume=True)
        with atomic_path(plan.out / PLAN) as tmp:
            tmp.write_text(json.dumps(plan.as_dict(), indent=2))
        failures = run_jobs(plan.inner_jobs(), n_jobs, log)
        report = nested_report(plan)
        outer = [((m not in {f["model"] for f in choice["families"].values()}, k, 1),
                  *plan.outer_job(o, m, c["recipe"], k))
                 for o, choice in report["choices"].items() if choice is not None
                 for m, c in choice["models"].items() for k in plan.outer_seeds]
        outer += [((key[0], key[1], 0), *plan.outer_job(c.holdout_speaker, plan.teacher_model, TEACHER_RECIPE,
                                                          c.seed)) for key, _, c in outer if c.teacher]
        # the families' chosen models first, one seed of every fold at a time (each run's teacher before it): a
        # study stopped early (long outer runs) has a paired gap over every test speaker, not a few speakers' whole
        failures += run_jobs(_once([(d, c) for _, d, c in sorted(outer, key=lambda j: j[0])]), n_jobs, log)
        report = nested_report(plan)
        report["failures"] = failures
        return report


# ------------------------------------------------------------------------------------------------- choosing
def _summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _seen(run: dict, scored: str | None = None) -> set[str]:
    """Every speaker whose samples a choice made with `run`'s score on `scored` has used."""
    split = run.get("split_speakers") or {}
    if not split.get("train"):
        raise InputError(f"{run.get('run_dir')}: records no speakers of its samples (trained before the nested "
                         "protocol existed); train it again")
    seen = set(split["train"]) | set(split.get("valid", [])) | ({scored} if scored else set())
    if run.get("teacher"):  # what its teacher heard reached the run through the teacher's answers
        teacher = _summary(Path(run["teacher"]))
        if teacher is None:
            raise InputError(f"{run.get('run_dir')}: its teacher {run['teacher']} is not a finished run")
        seen |= _seen(teacher, scored)
    return seen


def inner_scores(plan: Plan, test_speaker: str) -> dict:
    """(model, recipe) -> {score, units: {(i, seed): accuracy on i}, seen: speakers used}, for the choices of one
    outer speaker; None for a candidate whose inner runs are not all finished."""
    scores = {}
    for m in plan.models:
        for r in plan.recipes:
            units, seen, complete = {}, set(), True
            for i in plan.speakers:
                if i == test_speaker:
                    continue
                pair = tuple(sorted((test_speaker, i), key=plan.speakers.index))
                for k in plan.seeds:
                    run = _summary(plan.inner_dir(m, r, pair, k))
                    if run is None:
                        complete = False
                        continue
                    units[(i, k)] = run["test_acc_by_speaker"][i]
                    seen |= _seen(run, i)
            if test_speaker in seen:
                raise Leak(f"the choice for test speaker {test_speaker} would use its samples ({m}, {r}: "
                           f"{', '.join(sorted(seen))})")
            scores[(m, r)] = ({"score": float(np.mean(list(units.values()))), "units": units,
                               "seen": sorted(seen)} if complete else None)
    return scores


def choose(plan: Plan, test_speaker: str) -> dict | None:
    """Each model's recipe and each family's model for one outer speaker (None until its inner runs are done);
    ties go to the first listed."""
    scores = inner_scores(plan, test_speaker)
    if any(v is None for v in scores.values()):
        return None
    models = {}
    for m in plan.models:
        best = max(plan.recipes, key=lambda r: (scores[(m, r)]["score"], -plan.recipes.index(r)))
        models[m] = {"recipe": best, "inner_score": scores[(m, best)]["score"], "seen": scores[(m, best)]["seen"]}
    families = {}
    for fam in FAMILIES:
        members = [m for m in plan.models if family_of(m) == fam]
        if members:
            best = max(members, key=lambda m: (models[m]["inner_score"], -plan.models.index(m)))
            families[fam] = {"model": best, **models[best]}
    return {"models": models, "families": families,
            "seen": sorted(set().union(*(set(s["seen"]) for s in scores.values())))}


# ------------------------------------------------------------------------------------------------- reporting
def _outcome(acc: dict) -> dict:
    """acc: (fold, seed) -> accuracy. Mean +- CI over folds (seeds averaged per fold) and over fold x seed units,
    and the seed spread."""
    folds = {}
    for (f, _k), a in acc.items():
        folds.setdefault(f, []).append(a)
    per_fold = {f: float(np.mean(v)) for f, v in folds.items()}
    mean, half = mean_ci(list(per_fold.values())) if per_fold else (None, None)
    unit_mean, unit_half = mean_ci(list(acc.values())) if acc else (None, None)
    return {"mean": mean, "ci95": half, "folds": len(per_fold), "runs": len(acc), "per_fold": per_fold,
            "unit_mean": unit_mean, "unit_ci95": unit_half, "spread": seed_spread(acc)}


def ablation(plan: Plan, baseline: str = "study") -> dict:
    """Per model, each recipe against `baseline` on the inner runs (leave-two-speakers-out): unit (pair, seed),
    value the mean of the run's two held-out speakers; paired differences, never overlapping intervals."""
    rows = {}
    for m in plan.models:
        values = {}
        for r in plan.recipes:
            v = {}
            for p in plan.pairs:
                for k in plan.seeds:
                    run = _summary(plan.inner_dir(m, r, p, k))
                    if run is not None:
                        v[(_pair_name(p), k)] = float(np.mean([run["test_acc_by_speaker"][s] for s in p]))
            values[r] = v
        rows[m] = {}
        for r, v in values.items():
            row = {"units": len(v), "mean": float(np.mean(list(v.values()))) if v else None,
                   "spread": seed_spread(v)}
            base = values.get(baseline)
            if r != baseline and base and v:
                common = set(v) & set(base)
                row["vs_" + baseline] = paired_difference({u: base[u] for u in common}, {u: v[u] for u in common})
                row["complete"] = len(common) == len(plan.pairs) * len(plan.seeds)
            rows[m][r] = row
    return rows


def _outer_accuracies(plan: Plan, choices: dict, epochs: int) -> tuple[dict, dict]:
    """Per model, and per family's chosen model: (fold, seed) -> accuracy of the outer runs found that trained for
    `epochs` (an outer run that trained or chose its epoch on its test speaker is an error)."""
    models: dict[str, dict] = {m: {} for m in plan.models}
    families: dict[str, dict] = {f: {} for f in FAMILIES}
    for o, choice in choices.items():
        if choice is None:
            continue
        for m, c in choice["models"].items():
            for k in plan.outer_seeds:
                run = _summary(plan.outer_dir(o, m, c["recipe"], k, epochs))
                if run is None:
                    continue
                if not (run.get("split_speakers") or {}).get("train") or o in _seen(run):
                    raise Leak(f"{run['run_dir']}: the outer run for {o} trained or chose its epoch on {o}, or was "
                               "taught by a run that did")
                models[m][(o, k)] = run["test_acc"]
        for fam, c in choice["families"].items():
            for k in plan.outer_seeds:
                if (o, k) in models[c["model"]]:
                    families[fam][(o, k)] = models[c["model"]][(o, k)]
    return models, families


def nested_report(plan: Plan) -> dict:
    """Choices, outer accuracies and the spiking-minus-ANN gap from whatever runs have finished; with outer runs
    trained longer than the inner ones, also each family's longer-minus-shorter outer score, paired, against every
    shorter length found (report["longer"][shorter epochs][family])."""
    choices = {o: choose(plan, o) for o in plan.speakers}
    models, families = _outer_accuracies(plan, choices, plan.outer_epochs)
    recipes = {m: {o: c["models"][m]["recipe"] for o, c in choices.items() if c is not None and m in c["models"]}
               for m in plan.models}
    report = {"plan": plan.as_dict(), "choices": choices,
              "models": {m: dict(_outcome(acc), recipes=recipes[m]) for m, acc in models.items()},
              "families": {f: _outcome(acc) for f, acc in families.items() if acc},
              "ablation": ablation(plan)}
    ann, spk = families.get("ann", {}), families.get("spiking", {})
    common = set(ann) & set(spk)
    if common:
        report["gap"] = paired_difference({u: ann[u] for u in common}, {u: spk[u] for u in common})
        report["gap"]["complete"] = len(common) == len(plan.speakers) * len(plan.outer_seeds)
    for epochs in plan.shorter_outer_epochs():
        _, short = _outer_accuracies(plan, choices, epochs)
        for fam, acc in families.items():
            units = set(acc) & set(short[fam])
            if units:
                report.setdefault("longer", {}).setdefault(epochs, {})[fam] = paired_difference(
                    {u: short[fam][u] for u in units}, {u: acc[u] for u in units})
    return report


def report_json(obj):
    """The report with its (fold, seed) unit keys as 'fold/seed' strings."""
    if isinstance(obj, dict):
        return {"/".join(map(str, k)) if isinstance(k, tuple) else k: report_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [report_json(v) for v in obj]
    return obj


def percent(x) -> str:
    """A share as percent with two decimals, "-" where there is none (one seed: no spread)."""
    return "-" if x is None else f"{100 * x:.2f}"


def format_nested(report: dict) -> str:
    plan = report["plan"]
    lines = [f"nested speaker-held-out study of {plan['data']}: {len(plan['speakers'])} outer folds "
             f"({', '.join(plan['speakers'])}), seeds {plan['seeds']}"
             + (f" (outer folds {plan['outer_seeds']})" if plan["outer_seeds"] != plan["seeds"] else "")
             + f", {plan['epochs']} epochs"
             + (f" ({plan['outer_epochs']} in the outer folds)" if plan["outer_epochs"] != plan["epochs"] else "")
             + f", hidden {plan['hidden']}",
             "", "inner runs (leave two speakers out; paired against 'study' on the same pairs and seeds):",
             f"{'model':<14}{'recipe':<10}{'runs':>5}{'accuracy':>10}{'seed spread':>13}   vs study (mean +- 95 % CI)"]
    for m, rows in report["ablation"].items():
        for r, row in rows.items():
            vs = row.get("vs_study")
            diff = "" if vs is None else (f"{100 * vs['mean']:+.2f} +- {100 * vs['ci95']:.2f} "
                                          f"({vs['better']} better, {vs['worse']} worse of {vs['n']})")
            spread = row["spread"]["mean"]
            lines.append(f"{m:<14}{r:<10}{row['units']:>5}{percent(row['mean']):>9} %{percent(spread):>11} %   {diff}")
    lines += ["", "outer folds (each model at the recipe chosen without the test speaker; mean +- 95 % CI over "
              "folds, seeds averaged per fold):",
              f"{'model':<14}{'folds':>6}{'runs':>5}   {'held-out accuracy':<20}{'seed spread':>12}   chosen recipes"]
    for m, r in report["models"].items():
        if not r["runs"]:
            continue
        chosen = ", ".join(f"{o} {rec}" for o, rec in r["recipes"].items())
        lines.append(f"{m:<14}{r['folds']:>6}{r['runs']:>5}   {percent(r['mean']):>6} +- {percent(r['ci95']):>5} %"
                     f"{percent(r['spread']['mean']):>11} %   {chosen}")
    for f, r in report["families"].items():
        lines.append(f"{'best ' + f:<14}{r['folds']:>6}{r['runs']:>5}   {percent(r['mean']):>6} +- "
                     f"{percent(r['ci95']):>5} %{percent(r['spread']['mean']):>11} %")
    gap = report.get("gap")
    if gap:
        lines.append(f"spiking - ANN, paired over folds and seeds: {100 * gap['mean']:+.2f} +- {100 * gap['ci95']:.2f} "
                     f"points ({gap['n']} units{'' if gap['complete'] else ', incomplete'})")
    for epochs, by_family in report.get("longer", {}).items():
        for fam, d in by_family.items():
            lines.append(f"{fam}, outer runs at {plan['outer_epochs']} minus at {epochs} epochs (the same folds, seeds "
                         f"and choices): {100 * d['mean']:+.2f} +- {100 * d['ci95']:.2f} points ({d['better']} better, "
                         f"{d['worse']} worse of {d['n']})")
    for line in report.get("failures", []):
        lines.append(f"failed: {line}")
    return "\n".join(lines)


def _main_job(argv: list[str]) -> int:
    """`python -m train.nested --job RUN_DIR CONFIG_JSON`: one run, in its own process."""
    import torch

    from common.errors import Terminated
    terminate_on_signals()
    torch.set_num_threads(1)
    run_dir, cfg = Path(argv[0]), TrainConfig(**json.loads(argv[1]))
    try:
        run_job(run_dir, cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"stopped by {exc}", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--job"]:
    sys.exit(_main_job(sys.argv[2:]))
