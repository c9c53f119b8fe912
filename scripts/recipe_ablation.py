#!/usr/bin/env python
"""Which recipe change helps on unseen speakers: leave-one-speaker-out, judged on the *validation* speaker.

Every variant trains one model per fold (each speaker held out in turn, `train --holdout-speaker S`, the
validation speaker the next one by name, as `cv` does). Variants are compared on the validation speaker's
accuracy (mean of the last 5 epochs, and the best epoch's), never on the test speaker; the test speaker's
accuracy is printed beside it for the record only. Resumable: finished runs are kept, interrupted ones resumed.

    .venv/bin/python scripts/recipe_ablation.py --out runs/ablation --jobs 2 [--model cuba-lif] [--epochs 20]
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
DATA = REPO.parent / "shared" / "data" / "fsdd-shd"
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "yweweler"]
UNSEEN = ["--recipe", "unseen"]
VARIANTS = {
    "study": [],
    "unseen": UNSEEN,
    "unseen-no-dropout": UNSEEN + ["--dropout", "0"],
    "unseen-no-wd": UNSEEN + ["--weight-decay", "0"],
    "unseen-no-cosine": UNSEEN + ["--lr-schedule", "constant"],
    "unseen-no-shift": UNSEEN + ["--channel-shift", "0"],
    "unseen-no-stretch": UNSEEN + ["--time-stretch", "0"],
    "unseen-no-drop": UNSEEN + ["--event-drop", "0"],
    "unseen-shift48": UNSEEN + ["--channel-shift", "48"],
    "unseen-tilt": UNSEEN + ["--spectral-tilt", "0.5"],
    "unseen-smooth": UNSEEN + ["--label-smoothing", "0.1"],
    "unseen-ratereg": UNSEEN + ["--rate-reg", "0.5"],
    "study-jitter6": ["--jitter", "6"],
    "study-jitter12": ["--jitter", "12"],
    "unseen-jitter12": UNSEEN + ["--jitter", "12"],
    "unseen-strong": UNSEEN + ["--dropout", "0.4", "--weight-decay", "0.1", "--channel-shift", "48",
                               "--time-stretch", "0.25", "--event-drop", "0.3", "--spectral-tilt", "0.5"],
    "unseen-1x128": UNSEEN + ["--layers", "1"],
}


def run_dir(root: Path, variant: str, speaker: str, seed: int) -> Path:
    return root / variant / speaker / f"seed{seed}"


def command(args, variant: str, speaker: str, seed: int) -> list[str]:
    d = run_dir(args.out, variant, speaker, seed)
    base = [sys.executable, str(REPO / "cli.py"), "train", "--quiet"]
    if (d / "config.json").exists():
        return base + ["--resume", str(d)]
    return base + ["--model", args.model, "--layers", str(args.layers), "--hidden", str(args.hidden),
                   "--data", str(args.data), "--epochs", str(args.epochs), "--seed", str(seed),
                   "--holdout-speaker", speaker, "--out", str(d)] + VARIANTS[variant]


def run_all(args, jobs: list[tuple[str, str, int]]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            v, s, seed = pending.pop(0)
            d = run_dir(args.out, v, s, seed)
            d.parent.mkdir(parents=True, exist_ok=True)
            log = open(d.parent / f"seed{seed}.log", "a")
            running.append((subprocess.Popen(command(args, v, s, seed), env=env, stdout=log, stderr=log), log, (v, s)))
            print(f"started {v} / {s} / seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            proc, log, what = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"finished {what[0]} / {what[1]}: exit {proc.returncode}", flush=True)


def table(args, variants: list[str], seeds: list[int]) -> str:
    lines = [f"{'variant':<20}{'folds':>6}{'valid last5':>13}{'valid best':>12}{'test (record)':>15}"]
    for v in variants:
        last5, best, test = [], [], []
        for s in SPEAKERS:
            for seed in seeds:
                d = run_dir(args.out, v, s, seed)
                if not (d / "summary.json").exists():
                    continue
                summary = json.loads((d / "summary.json").read_text())
                hist = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
                last5.append(np.mean([h["valid_acc"] for h in hist[-5:]]))
                best.append(summary["best_valid_acc"])
                test.append(summary["test_acc"])
        if last5:
            lines.append(f"{v:<20}{len(last5):>6}{100 * np.mean(last5):>12.2f}%{100 * np.mean(best):>11.2f}%"
                         f"{100 * np.mean(test):>14.2f}%")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="cuba-lif")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    seeds = list(range(args.seeds))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if not args.table_only:
        jobs = [(v, s, seed) for v in variants for s in SPEAKERS for seed in seeds
                if not (run_dir(args.out, v, s, seed) / "summary.json").exists()]
        run_all(args, jobs)
    print(table(args, variants, seeds))


if __name__ == "__main__":
    main()
