"""`cli.py cv --by speaker`: leave-one-speaker-out cross-validation, one run directory per fold and seed.

    OUT/cv.json                     what is cross-validated (model, recipe, data; checked on every restart)
    OUT/<speaker>/seed<k>/          a train run with --holdout-speaker <speaker> --seed <k>

Running the same command again (or `cv --resume OUT`) skips finished folds, resumes interrupted ones
from their last.pt (the weights of an uninterrupted run) and starts the rest.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

from audio.datasets import LAYOUTS, find_source, read_pool
from audio.speakers import present_speakers, resolve_speaker
from audio.spike_files import SpikeSet
from common.atomic import atomic_path
from common.errors import InputError
from common.rundir import run_lock, run_parts
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


def _check_or_write_plan(out: Path, plan: dict, data_name: str) -> None:
    """Writes OUT/cv.json, or checks that the one there trains the same model (train.stats.training_settings:
    the definition summary and report group by), adding any new folds and seeds to it."""
    path = out / "cv.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{path}: unreadable cross-validation plan") from None
        try:
            had = training_settings(old.get("train_config", {}), data_name, held_out=True)
        except InputError as exc:
            raise InputError(f"{path}: unreadable cross-validation plan ({exc})") from None
        new = training_settings(plan["train_config"], data_name, held_out=True)
        diff = [k for k in dict.fromkeys([*new, *had]) if had.get(k) != new.get(k)]
        if diff or old.get("by") != plan["by"]:
            raise InputError(f"{out}: holds a cross-validation with other settings ({', '.join(diff) or 'by'}); "
                             "pick another --out, or --resume it as it is")
        plan["folds"] = sorted(set(old.get("folds", [])) | set(plan["folds"]))
        plan["seeds"] = sorted(set(old.get("seeds", [])) | set(plan["seeds"]))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan, indent=2))


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
    out = Path(out)
    plan_cfg = asdict(replace(cfg, holdout_speaker=None))
    with run_lock(out):
        _check_or_write_plan(out, {"by": by, "folds": folds, "seeds": seeds, "train_config": plan_cfg},
                             find_source(cfg.data).name)
        summaries = []
        for k, speaker in enumerate(folds, 1):
            for seed in seeds:
                run_dir = out / _dir_name(speaker) / f"seed{seed}"
                done = run_dir / "summary.json"
                if done.exists():
                    summaries.append(json.loads(done.read_text()))
                    continue
                if progress:
                    print(f"fold {k}/{len(folds)}: speaker {speaker} held out, seed {seed} -> {run_dir}", flush=True)
                fold_cfg = replace(cfg, holdout_speaker=speaker, seed=seed)
                summaries.append(train(fold_cfg, run_dir, resume=bool(run_parts(run_dir)), progress=progress))
    return summaries


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
