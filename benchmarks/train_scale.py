#!/usr/bin/env python
"""Training throughput of one process against two (torchrun, gloo, on the CPU), same model, data and global batch.

Each run trains a Cuba-LIF 2x128 for --epochs epochs (one thread per process) and reports the samples per second
of its last epoch (metrics.jsonl: global samples over the epoch's wall time). The last line:

    samples_per_s_1=<x> samples_per_s_2=<y> ratio=<y / x>

    .venv/bin/python benchmarks/train_scale.py [--data ../shared/data/fsdd-shd] [--epochs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]


def run(nproc: int, out: Path, args) -> float:
    train = [str(REPO / "cli.py"), "train", "--model", "cuba-lif", "--layers", "2", "--hidden", "128", "--data",
             str(args.data), "--epochs", str(args.epochs), "--recipe", "study", "--batch", str(args.batch), "--quiet",
             "--out", str(out)]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc-per-node", str(nproc)]
    subprocess.run(launcher + train, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True,
                   capture_output=True)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["samples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fsdd-shd")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    announce_load()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, Path(tmp) / "one", args)
        two = run(2, Path(tmp) / "two", args)
    print(f"1 process: {one:.1f} samples/s; 2 processes (torchrun, gloo): {two:.1f} samples/s")
    print(f"samples_per_s_1={one:.1f} samples_per_s_2={two:.1f} ratio={two / one:.2f}")


if __name__ == "__main__":
    main()
