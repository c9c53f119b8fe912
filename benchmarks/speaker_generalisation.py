#!/usr/bin/env python
"""Voices never heard: leave-one-speaker-out over the shared digits, GRU against the spiking models.

For each model (default: GRU 2x128, LIF / Cuba-LIF / SpikGRU 2x128, Cuba-LIF / SpikGRU 1x128) it runs
`cli.py cv --by speaker` (the default recipe and protocol: each speaker held out in turn, the next one by
name as validation, never the test speaker), two folds at a time; a finished fold is kept, an interrupted
one resumed. Then, per spiking fold, the best checkpoint is exported to Loihi 2 fixed point and the fast
engine (bit-equal to Lava) runs the held-out speaker: the fixed-point accuracy.

Printed: per model the held-out accuracy mean +- 95 % CI over folds (Student t), the fixed-point
accuracy, and the operations per step (Table 2 at the held-out speakers' activity); the last line:

    loso_gru=<acc> loso_spiking=<the spiking 2x128 best on validation> gap=<spiking - gru> fixed_point_loss=<points>
    ops_ratio=<GRU ops / that spiking model's>

    .venv/bin/python benchmarks/speaker_generalisation.py --out runs/loso [--data ../shared/data/fsdd-das/fsdd-das.hdf5]
        [--models gru-2,cuba-lif-2,...] [--seeds 1] [--epochs 20] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)

from train.stats import mean_ci  # noqa: E402

MODELS = ["gru-2", "lif-2", "cuba-lif-2", "spikgru-2", "cuba-lif-1", "spikgru-1"]
SPIKING = ("lif", "cuba-lif", "spikgru")


def parse(model: str) -> tuple[str, int]:
    kind, layers = model.rsplit("-", 1)
    return kind, int(layers)


def run_cv(args, models: list[str]) -> None:
    """The cv runs, at most `jobs` folds at a time (each fold its own `cv --speakers` process)."""
    from train.crossval import fold_speakers
    from train.trainer import config_from_options
    speakers, _ = fold_speakers(config_from_options(model="gru", data=str(args.data)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    jobs = [(m, s) for s in speakers for m in models]  # one cv directory is locked by its running fold
    running = []
    while jobs or running:
        while jobs and len(running) < args.jobs:
            m, s = jobs.pop(0)
            kind, layers = parse(m)
            out = args.out / m
            if all((out / s / f"seed{k}" / "summary.json").exists() for k in range(args.seeds)):
                continue
            cmd = [sys.executable, str(REPO / "cli.py"), "cv", "--model", kind, "--layers", str(layers), "--hidden",
                   str(args.hidden), "--data", str(args.data), "--epochs", str(args.epochs), "--seeds", str(args.seeds),
                   "--speakers", s, "--out", str(out), "--quiet"]
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / f"{s}.log", "a")
            running.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log, m, s))
            print(f"started {m} fold {s}", flush=True)
        time.sleep(2)
        for item in list(running):
            proc, log, m, s = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"finished {m} fold {s}: exit {proc.returncode}", flush=True)
                if proc.returncode == 2 and "in use by another command" in (args.out / m / f"{s}.log").read_text():
                    jobs.append((m, s))  # two folds of one cv directory: its plan lock; try again later


def fixed_point_accuracy(run_dir: Path) -> float:
    """Export the fold's best checkpoint (cached beside it) and run the held-out speaker in the fast engine."""
    from export.exporter import export_checkpoint
    from sim.engine import run_fast
    from sim.simulate import load_net, load_split
    net_path = run_dir / "net.h5"
    if not net_path.exists():
        export_checkpoint(run_dir / "best.pt", net_path)
    net, _ = load_net(net_path)
    _, split = load_split(net, None, None, None, net_path)
    return run_fast(net, split, progress=False).accuracy


def collect(args, models: list[str]) -> dict:
    from train.evaluate import evaluate
    rows = {}
    for m in models:
        kind, _ = parse(m)
        summaries = [json.loads(p.read_text()) for p in sorted((args.out / m).glob("*/seed*/summary.json"))]
        if not summaries:
            continue
        by_fold = {}
        for s in summaries:
            by_fold.setdefault(s["protocol"]["test_speaker"], []).append(s)
        fold_acc = [float(np.mean([s["test_acc"] for s in v])) for v in by_fold.values()]
        mean, half = mean_ci(fold_acc)
        valid = float(np.mean([s["best_valid_acc"] for s in summaries]))
        ops = float(np.mean([evaluate(s["run_dir"] + "/best.pt")["ops_total"]["ops"] for s in summaries]))
        fixed = None
        if kind in SPIKING:
            per_fold = [float(np.mean([fixed_point_accuracy(Path(s["run_dir"])) for s in v])) for v in by_fold.values()]
            fixed = float(np.mean(per_fold))
        rows[m] = {"folds": len(by_fold), "runs": len(summaries), "mean": mean, "ci95": half, "fold_acc": fold_acc,
                   "valid": valid, "fixed": fixed, "float_minus_fixed": (mean - fixed) if fixed is not None else None, "ops": ops,
                   "speakers": sorted(by_fold)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "loso")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fsdd-shd")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="only collect what is there")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    announce_load(f"data {args.data}")
    if not args.report_only:
        run_cv(args, models)
    rows = collect(args, models)
    print(f"{'model':<14}{'folds':>6}{'runs':>6}{'validation':>11}   {'held-out accuracy':<20}{'fixed point':>12}"
          f"{'MAC+AC/step':>14}   per fold")
    for m, r in rows.items():
        fixed = "-" if r["fixed"] is None else f"{100 * r['fixed']:.2f} %"
        folds = ", ".join(f"{sp} {100 * a:.1f}" for sp, a in zip(r["speakers"], r["fold_acc"]))
        print(f"{m:<14}{r['folds']:>6}{r['runs']:>6}{100 * r['valid']:9.2f} %   {100 * r['mean']:6.2f} +- {100 * r['ci95']:5.2f} %"
              f"{fixed:>12}{r['ops']:>14,.0f}   {folds}")
    gru = rows.get("gru-2")
    spiking = {m: r for m, r in rows.items() if parse(m)[0] in SPIKING and parse(m)[1] == 2}
    if gru and spiking:
        best_m, best = max(spiking.items(), key=lambda kv: kv[1]["valid"])  # chosen on validation speakers only
        print(f"best spiking 2x{args.hidden} (by mean validation accuracy, never the held-out speaker): {best_m}")
        print(f"loso_gru={100 * gru['mean']:.2f} loso_spiking={100 * best['mean']:.2f} "
              f"gap={100 * (best['mean'] - gru['mean']):+.2f} fixed_point_loss={100 * best['float_minus_fixed']:.2f} "
              f"ops_ratio={gru['ops'] / best['ops']:.1f}")


if __name__ == "__main__":
    main()
