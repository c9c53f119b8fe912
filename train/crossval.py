"""`cli.py cv --by speaker`: leave-one-speaker-out cross-validation, one run directory per fold and seed.

    OUT/cv.json                     what is cross-validated (model, recipe, data; checked on every restart)
    OUT/<speaker>/seed<k>/          a train run with --holdout-speaker <speaker> --seed <k>

Running the same command again (or `cv --resume OUT`) skips finished folds, resumes interrupted ones
from their last.pt (the weights of an uninterrupted run) and starts the rest; with more --epochs it extends
every fold to them (never fewer: the finished folds would be reported as they are). A fold directory holding
a run of other settings is an error, found before anything trains; no other command writes inside OUT
(common.atomic.check_output), so the folds not yet running are safe from a `train --out OUT/<fold>/...`.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

from audio.datasets import LAYOUTS, find_source, read_pool
from audio.speakers import present_speakers, resolve_speaker
from audio.spike_files import SpikeSet
from common.atomic import atomic_path, check_output
from common.errors import InputError
from common.rundir import run_lock, run_parts
from train.checkpoint import teacher_run
from train.stats import training_settings
from train.trainer import TrainConfig, train

BY = ("speaker",)


def fold_speakers(cfg: TrainConfig) -> tuple[list[str], SpikeSet]:
    """(the speakers of cfg.data that have samples, sorted; the pooled samples of every file of the dataset)."""
    source = find_source(cfg.data)
    pool = read_pool(source, cfg.channels or LAYOUTS[source.layout]["n_channels"])
    return present_speakers(pool), pool


def _dir_name(speaker: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", speaker) or "speaker"


def fold_dir(out: str | Path, speaker: str, seed: int) -> Path:
    """The run directory of the fold that holds out `speaker` with `seed`."""
    return Path(out) / _dir_name(speaker) / f"seed{seed}"


def _merged_plan(out: Path, plan: dict, data_name: str) -> dict:
    """The plan with the folds and seeds of the one already in OUT, which must train the same model
    (train.stats.training_settings: the definition summary and report group by) for as many epochs or fewer."""
    path = out / "cv.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if not isinstance(old, dict) or not isinstance(old.get("train_config"), dict):
            raise InputError(f"{path}: unreadable cross-validation plan")
        try:
            had = training_settings(old["train_config"], data_name, held_out=True)
        except InputError as exc:
            raise InputError(f"{path}: unreadable cross-validation plan ({exc})") from None
        new = training_settings(plan["train_config"], data_name, held_out=True)
        diff = [k for k in dict.fromkeys([*new, *had]) if k != "epochs" and had.get(k) != new.get(k)]
        if diff or old.get("by") != plan["by"]:
            raise InputError(f"{out}: holds a cross-validation with other settings ({', '.join(diff) or 'by'}); "
                             "pick another --out, or --resume it as it is")
        before = old.get("train_config", {}).get("epochs", 0)
        if plan["train_config"]["epochs"] < before:
            raise InputError(f"{out}: its folds train for {before} epochs; --epochs {plan['train_config']['epochs']} "
                             f"cannot shorten them (give {before} or more, or pick another --out)")
        plan["folds"] = sorted(set(old.get("folds", [])) | set(plan["folds"]))
        plan["seeds"] = sorted(set(old.get("seeds", [])) | set(plan["seeds"]))
    return plan


def cross_validate(cfg: TrainConfig, out: str | Path, by: str = "speaker", n_seeds: int = 1,
                   speakers: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Trains every (fold, seed) not yet finished; returns the summaries of all of them."""
    if by not in BY:
        raise InputError(f"--by {by!r}: choose {', '.join(BY)}")
    if n_seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {n_seeds}")
    cfg.validate()
    names, pool = fold_speakers(cfg)
    if len(names) < 2:
        raise InputError(f"{cfg.data}: only {len(names)} speaker(s); leave-one-speaker-out needs at least 2")
    folds = names if not speakers else [resolve_speaker(pool, s, "--speakers") for s in speakers]
    seeds = list(range(cfg.seed, cfg.seed + n_seeds))
    for speaker in folds if cfg.teacher else []:  # every fold's teacher is there before OUT is made
        for seed in seeds:
            teacher_run(cfg.teacher, speaker, seed)
    out = check_output(out, kind="cv", resume=True)
    plan_cfg = _as_json(replace(cfg, holdout_speaker=None))
    with run_lock(out):
        check_output(out, kind="cv", resume=True)
        data_name = find_source(cfg.data).name
        plan = _merged_plan(out, {"by": by, "folds": folds, "seeds": seeds, "train_config": plan_cfg}, data_name)
        runs = [(k, speaker, fold_dir(out, speaker, seed), replace(cfg, holdout_speaker=speaker, seed=seed))
                for k, speaker in enumerate(folds, 1) for seed in seeds]
        for _, _, run_dir, fold_cfg in runs:
            _check_fold(out, run_dir, fold_cfg, data_name)
        with atomic_path(out / "cv.json") as tmp:
            tmp.write_text(json.dumps(plan, indent=2))
        summaries = []
        for k, speaker, run_dir, fold_cfg in runs:
            done = run_dir / "summary.json"
            if done.exists() and json.loads(done.read_text()).get("epochs") == cfg.epochs:
                summaries.append(json.loads(done.read_text()))
                continue
            if progress:
                print(f"fold {k}/{len(folds)}: speaker {speaker} held out, seed {fold_cfg.seed} -> {run_dir}", flush=True)
            summaries.append(train(fold_cfg, run_dir, resume=bool(run_parts(run_dir)), progress=progress, within=out))
    return summaries


def _as_json(cfg: TrainConfig) -> dict:
    """cfg as its config.json reads back (tuples as lists), to compare with one."""
    return json.loads(json.dumps(asdict(cfg)))


def _check_fold(out: Path, run_dir: Path, cfg: TrainConfig, data_name: str) -> None:
    """A fold directory is empty or holds this fold's run (at most cfg.epochs long): never another run."""
    check_output(run_dir, kind="run", resume=True, within=out)
    if not run_parts(run_dir):
        return
    try:
        have = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        have = None
    if not isinstance(have, dict):
        raise InputError(f"{run_dir}: holds a run without a readable config.json, not this cross-validation's fold; "
                         "move it away or pick another --out")
    want = _as_json(cfg)
    try:
        had, new = training_settings(have, data_name, held_out=True), training_settings(want, data_name, held_out=True)
    except (InputError, TypeError, ValueError):
        had, new = {"config.json": "unreadable"}, {}
    diff = [k for k in dict.fromkeys([*new, *had]) if k != "epochs" and had.get(k) != new.get(k)]
    diff += [k for k in ("holdout_speaker", "seed") if have.get(k) != want.get(k)]
    if diff or have.get("epochs", 0) > cfg.epochs:
        raise InputError(f"{run_dir}: holds another run ({', '.join(diff) or 'epochs'} differ from this fold's); "
                         "the cross-validation never replaces it: move it away or pick another --out")


def resume_cv(out: str | Path, progress: bool = True) -> list[dict]:
    """Continues the cross-validation planned in OUT/cv.json."""
    path = Path(out) / "cv.json"
    if not path.exists():
        raise InputError(f"{out}: not a cross-validation directory (no cv.json)")
    try:
        plan = json.loads(path.read_text())
        cfg = TrainConfig(**plan["train_config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: unreadable cross-validation plan ({exc})") from None
    seeds = plan.get("seeds") or [cfg.seed]
    cfg.seed = seeds[0]
    return cross_validate(cfg, out, plan.get("by", "speaker"), len(seeds), plan.get("folds"), progress)
