"""Mean and Student-t 95 % confidence interval over seeds, as in the study's Table 1."""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from audio.speakers import HELD_OUT, SEEN
from common.errors import InputError


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the `level` CI); the half-width is 0 for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    if x.size == 1:
        return float(x[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def paired_difference(first: dict, second: dict, level: float = 0.95) -> dict:
    """second - first over the same units (e.g. (fold, seed) -> accuracy), mean +- `level` CI of the differences.

    Two candidates are compared only where both ran on the same folds and seeds: a unit present on one side
    only is an error, never silently dropped."""
    if set(first) != set(second):
        only_a = sorted(map(str, set(first) - set(second)))
        only_b = sorted(map(str, set(second) - set(first)))
        raise InputError(f"unpaired comparison: units only in the first ({', '.join(only_a) or '-'}), only in the "
                         f"second ({', '.join(only_b) or '-'})")
    if not first:
        raise InputError("paired comparison of nothing: no common folds and seeds")
    diff = [second[k] - first[k] for k in sorted(first, key=str)]
    mean, half = mean_ci(diff, level)
    return {"mean": mean, "ci95": half, "n": len(diff), "better": int(sum(d > 0 for d in diff)),
            "worse": int(sum(d < 0 for d in diff))}


def seed_spread(acc: dict) -> dict:
    """How far a model's accuracy moves between seeds on one fold: acc maps (fold, seed) -> accuracy; the
    range (max - min) over seeds per fold, its mean and its maximum over folds."""
    by_fold = defaultdict(list)
    for (fold, _seed), a in acc.items():
        by_fold[fold].append(a)
    ranges = {f: float(max(v) - min(v)) for f, v in by_fold.items() if len(v) > 1}
    if not ranges:
        return {"mean": None, "max": None, "per_fold": {}}
    return {"mean": float(np.mean(list(ranges.values()))), "max": max(ranges.values()), "per_fold": ranges}


def run_units(paths: list[str]) -> dict:
    """(fold, seed) -> test accuracy of the finished runs under `paths`; the fold is the held-out speaker(s), or
    'test split' for runs scored on a dataset's own test split. Two runs of one unit are an error."""
    units = {}
    for run in find_runs(paths):
        unit = ((run.get("protocol") or {}).get("test_speaker", "test split"), run["seed"])
        if unit in units:
            raise InputError(f"{', '.join(paths)}: two runs of fold {unit[0]}, seed {unit[1]} ({run['run_dir']}); "
                             "compare one configuration per side")
        units[unit] = run["test_acc"]
    return units


def paired_runs(first: list[str], second: list[str]) -> dict:
    """`cli.py paired A B`: B - A on the folds and seeds both ran (mismatched units are an error)."""
    a, b = run_units(first), run_units(second)
    return {"first": first, "second": second, "difference": paired_difference(a, b),
            "first_mean": float(np.mean(list(a.values()))), "second_mean": float(np.mean(list(b.values()))),
            "first_spread": seed_spread(a), "second_spread": seed_spread(b)}


def format_paired(r: dict) -> str:
    d = r["difference"]
    spread = lambda s: "-" if s["mean"] is None else f"{100 * s['mean']:.2f}"
    return (f"{' '.join(r['second'])} - {' '.join(r['first'])}, paired over {d['n']} folds x seeds: "
            f"{100 * d['mean']:+.2f} +- {100 * d['ci95']:.2f} points (95 % CI; {d['better']} better, {d['worse']} "
            f"worse)\nmeans {100 * r['first_mean']:.2f} % -> {100 * r['second_mean']:.2f} %; seed spread (mean "
            f"max - min per fold) {spread(r['first_spread'])} -> {spread(r['second_spread'])} points")


# ---- which runs are the same model ------------------------------------------------------------------------------
# config.json fields that say how, where or with which draw a run trained, not what: the seed is what a group's
# CI is over; the held-out speaker is the protocol's business (below); valid_speaker counts for held-out runs only
HOW_NOT_WHAT = ("seed", "device", "workers", "input_projection", "holdout_speaker", "valid_speaker")
PLAN_FILES = ("cv.json", "nested.json")  # a held-out run below one of these is a fold of a cross-validation
TEST_SPLIT = "test-split"


def _defaults(data_name: str | None) -> dict:
    """The values a config.json leaves as None (or out), for a dataset of this name."""
    from audio.datasets import LAYOUTS
    layout = LAYOUTS["das" if data_name == "das" else "shd"]
    return {"batch": 512 if data_name == "ssc" else 128, "jitter": 0.0 if data_name == "das" else 2.0,
            "bin_hz": layout["bin_hz"], "duration": layout["duration"], "channels": layout["n_channels"],
            "lr": 1e-3}


def _option_defaults() -> dict:
    from train.neurons import DEFAULT_CLIP, VTH
    return {"clip": list(DEFAULT_CLIP), "surrogate_scale": 1.0, "surrogate_width": VTH, "reset": "late"}


def training_settings(config: dict, data_name: str | None = None, held_out: bool = False) -> dict:
    """What a run's config.json says it trained, defaults filled in (--batch 128 and no --batch are one model):
    model, size, data, epochs, batch, lr, jitter, binning, every layer option (reset, clip, --lava-cuba, ...) and
    the recipe with each of its fields; the validation speaker with `held_out`. data_name: the dataset's name
    (summary.json's 'data'), for the defaults that depend on it."""
    from train.recipe import recipe_from_dict

    defaults, option_defaults = _defaults(data_name), _option_defaults()
    out = {}
    for k, v in config.items():
        if k in HOW_NOT_WHAT or (k == "teacher" and v is None):  # runs before teachers have no such key
            continue
        if k in defaults:
            v = defaults[k] if v is None else v
            v = int(v) if k in ("batch", "channels") else float(v)
        elif k == "data":
            v = os.path.normpath(str(v)) if v != "builtin" else v
        elif k == "options":
            v = {o: list(x) if isinstance(x, tuple) else x for o, x in sorted((v or {}).items())}
            v = {o: x for o, x in v.items() if option_defaults.get(o, object()) != x}
        elif k == "recipe":
            v = recipe_from_dict(v).as_dict()
        out[k] = v
    if held_out:
        out["valid_speaker"] = config.get("valid_speaker", "auto")
    return out


def plan_dir(run_dir: str | Path) -> Path | None:
    """The cross-validation (cv.json) or nested study (nested.json) a run directory belongs to, if any."""
    for d in Path(run_dir).resolve().parents:
        if any((d / f).is_file() for f in PLAN_FILES):
            return d
    return None


def protocol_of(run: dict) -> dict:
    """How a run was scored: the dataset's own test split; a fold of a cross-validation (leave-one-speaker-out,
    or several speakers per fold in a nested study's inner runs); or speakers held out by a run of its own
    (train --holdout-speaker NAME[,NAME]), which never joins a cross-validation's folds."""
    p = run.get("protocol") or {"kind": SEEN}
    if p.get("kind") != HELD_OUT:
        return {"protocol": TEST_SPLIT}
    speakers = p.get("test_speakers") or str(p["test_speaker"]).split(",")
    if run.get("run_dir") and plan_dir(run["run_dir"]) is not None:
        n = len(speakers)
        return {"protocol": "leave-one-speaker-out" if n == 1 else f"leave-{n}-speakers-out"}
    return {"protocol": HELD_OUT, "test_speakers": ",".join(speakers)}


def same_model_key(run: dict) -> dict:
    """The one definition of "the same model" that summary, report and cv group runs by: every setting that changes
    what is trained (training_settings), the protocol it was scored under (protocol_of) and whether it was
    fine-tuned. run: summary.json's fields plus 'config' (config.json, None for a run that has none) and 'run_dir'."""
    config = run.get("config")
    if config is None:  # made before config.json: what summary.json says
        from train.recipe import RECIPES
        config = {k: run[k] for k in ("model", "layers", "hidden", "data", "epochs") if k in run}
        config["recipe"] = RECIPES.get(run.get("recipe", "study"), RECIPES["study"]).as_dict()
    p = protocol_of(run)
    key = training_settings(config, run.get("data"), p["protocol"] != TEST_SPLIT)
    key["finetuned"] = bool(run.get("qat"))
    key.update(p)
    return key


def describe_settings(key: dict, data_name: str | None = None) -> str:
    """The settings of a same_model_key that are not the study's defaults, for people ('reset subtract; lr 0.002')."""
    from train.recipe import RECIPES
    parts = [o.replace("_", "-") + ("" if x is True else " off" if x is None else
                                    " " + (" ".join(f"{y:g}" for y in x) if isinstance(x, list) else str(x)))
             for o, x in key.get("options", {}).items() if o != "shared_readout_decay"]
    recipe = key.get("recipe", {})
    named = RECIPES.get(recipe.get("name"), RECIPES["study"]).as_dict()
    parts += [f"{f.replace('_', '-')} {v}" for f, v in recipe.items() if f != "name" and named.get(f) != v]
    parts += [f"{k.replace('_', '-')} {key[k]:g}" for k, v in _defaults(data_name).items() if k in key and key[k] != v]
    if key.get("valid_speaker", "auto") != "auto":
        parts.append(f"valid speaker {key['valid_speaker']}")
    if key.get("finetuned"):
        parts.append("fine-tuned (QAT)")
    return "; ".join(parts)


def find_runs(paths: list[str]) -> list[dict]:
    """summary.json of every finished run in `paths` (run directories or folders of them), each with its 'run_dir'
    (where it is now) and 'config' (its config.json, None if it has none); a run found twice counts once."""
    found, seen = [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p}: no such run directory")
        for f in sorted(p.rglob("summary.json")):
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            try:
                run = json.loads(f.read_text())
                cfg = f.parent / "config.json"
                run["config"] = json.loads(cfg.read_text()) if cfg.exists() else None
            except json.JSONDecodeError as exc:
                raise InputError(f"{f.parent}: unreadable summary.json or config.json ({exc})") from None
            run["run_dir"] = str(f.parent)
            found.append(run)
    if not found:
        raise InputError(f"{', '.join(paths)}: no finished runs (summary.json) found")
    return found


def group_runs(runs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(same_model_key, its runs) for each model among `runs`, in a stable order."""
    groups = {}
    for run in runs:
        try:
            key = same_model_key(run)
        except InputError as exc:
            raise InputError(f"{run.get('run_dir', 'a run')}: {exc}") from None
        groups.setdefault(json.dumps(key, sort_keys=True), (key, []))[1].append(run)
    order = lambda g: (g[0]["protocol"] != TEST_SPLIT, g[0]["protocol"], g[0]["model"], g[0]["layers"],
                       g[0]["hidden"], g[0]["data"], json.dumps(g[0], sort_keys=True))
    return sorted(groups.values(), key=order)


def group_row(key: dict, runs: list[dict], acc_key: str = "test_acc") -> dict:
    """What summary and report print of one model: its settings, its member runs, seeds (distinct seeds among them),
    epochs (the epochs it was trained for) and accuracy (group_accuracy)."""
    first = runs[0]
    row = {"model": key["model"], "layers": key["layers"], "hidden": key["hidden"], "data": first.get("data"),
           "data_path": key.get("data"), "recipe": key.get("recipe", {}).get("name", "study"),
           "protocol": key["protocol"], "test_speakers": key.get("test_speakers"), "epochs": key.get("epochs"),
           "settings": describe_settings(key, first.get("data")),
           "seeds": len({r.get("seed") for r in runs}), "runs": len(runs),
           "members": sorted(r["run_dir"] for r in runs), "key": key}
    heard = [_test_voices_heard(r) for r in runs]
    row["test_voices"] = heard[0] if len(set(heard)) == 1 else None
    row.update(group_accuracy(runs, key["protocol"], acc_key))
    return row


def _test_voices_heard(run: dict) -> str | None:
    """'heard' when every test speaker also spoke training samples, 'new' when none did, else None."""
    split = run.get("split_speakers") or {}
    if not split.get("test") or split.get("train") is None:
        return None
    inside = [s in split["train"] for s in split["test"]]
    return "heard" if all(inside) else "new" if not any(inside) else "some heard"


def summarize(paths: list[str]) -> list[dict]:
    """One row per model (same_model_key): test accuracy mean +- 95 % CI over seeds or, for a cross-validation,
    over folds (each fold's seeds averaged first); no CI from one seed or fold."""
    return [group_row(key, runs) for key, runs in group_runs(find_runs(paths))]


def group_accuracy(runs: list[dict], protocol: str, key: str = "test_acc") -> dict:
    """test_acc_mean and test_acc_ci95 (None from fewer than two units) of the runs of one model, and 'ci_over': the
    units, seeds (runs of one seed averaged first) or, for a cross-validation, folds (each fold's seeds averaged
    first; then also folds and fold_acc)."""
    per_unit = defaultdict(list)
    folds = protocol not in (TEST_SPLIT, HELD_OUT, SEEN)
    for r in runs:
        fold = r["protocol"]["test_speaker"] if folds else None
        per_unit[(fold, r.get("seed"))].append(r[key])
    by_fold = defaultdict(list)
    for (fold, _seed), values in per_unit.items():
        by_fold[fold].append(float(np.mean(values)))
    values = [float(np.mean(v)) for _, v in sorted(by_fold.items(), key=lambda kv: str(kv[0]))] if folds else \
        by_fold[None]
    mean, half = mean_ci(values)
    out = {"test_acc_mean": mean, "test_acc_ci95": half if len(values) > 1 else None,
           "ci_over": "folds" if folds else "seeds", "n": len(values)}
    if folds:
        out.update(folds=len(by_fold), fold_acc={k: float(np.mean(v)) for k, v in sorted(by_fold.items())})
    return out


def format_accuracy(row: dict, mean: str = "test_acc_mean", ci: str = "test_acc_ci95") -> str:
    """'93.60 +- 1.20 %', or '93.60 % (1 run)' ('1 seed, 2 runs', '1 fold') where there is no interval."""
    if row[ci] is not None:
        return f"{100 * row[mean]:.2f} +- {100 * row[ci]:.2f} %"
    if row.get("ci_over") == "folds":
        one = "1 fold"
    else:
        one = "1 run" if row.get("runs", 1) == 1 else f"1 seed, {row['runs']} runs"
    return f"{100 * row[mean]:.2f} % ({one})"


PROTOCOL_TITLES = {
    TEST_SPLIT: "the dataset's own test split: test accuracy mean +- 95 % CI over seeds ('test voices': whether "
                "its speakers also spoke training samples)",
    HELD_OUT: "speakers held out by runs of their own (train --holdout-speaker): accuracy on them, mean +- 95 % CI "
              "over seeds",
    "folds": "cross-validation ({protocol}): accuracy on each fold's unseen speaker(s), seeds averaged per fold, "
             "mean +- 95 % CI over folds",
}


def protocol_title(protocol: str) -> str:
    return PROTOCOL_TITLES.get(protocol) or PROTOCOL_TITLES["folds"].format(protocol=protocol)


def members_line(members: list[str]) -> str:
    """'runs: a, b' (the directory above them and a count when there are many)."""
    if len(members) <= 4:
        return "runs: " + ", ".join(members)
    return f"runs: {len(members)} under {os.path.commonpath(members)}/"


def format_summary(rows: list[dict]) -> str:
    lines = []
    w = max([10] + [len(data_label(r)) + 2 for r in rows])
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        part = [r for r in rows if r["protocol"] == protocol]
        folds = part[0].get("folds") is not None
        lines += ([""] if lines else []) + [protocol_title(protocol)]
        lines.append(f"{'model':<10}{'size':<8}{'data':<{w}}{'recipe':<9}{'epochs':>6}{'seeds':>6}"
                     + (f"{'folds':>6}" if folds else "") + f"   {'accuracy':<27}"
                     + ("per fold" if folds else "speakers" if protocol == HELD_OUT else "test voices")
                     + "   settings")
        for r in part:
            what = (", ".join(f"{k} {100 * v:.1f}" for k, v in r["fold_acc"].items()) if folds else
                    r["test_speakers"] if protocol == HELD_OUT else r["test_voices"] or "-")
            lines.append((f"{r['model']:<10}{str(r['layers']) + 'x' + str(r['hidden']):<8}{data_label(r):<{w}}"
                         f"{r['recipe']:<9}{r['epochs']:>6}{r['seeds']:>6}" + (f"{r['folds']:>6}" if folds else "")
                         + f"   {format_accuracy(r):<27}{what:<11}" + (f"   {r['settings']}" if r["settings"] else "")
                         ).rstrip())
            lines.append(f"    {members_line(r['members'])}")
    return "\n".join(lines)


def data_label(row: dict) -> str:
    """The data a row was trained on, short: 'builtin', or the name of the dataset's folder or file."""
    path = row.get("data_path") or row.get("data") or "-"
    return path if path == "builtin" else Path(path).name
