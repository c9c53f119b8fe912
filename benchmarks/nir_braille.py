#!/usr/bin/env python
"""The NIR paper's Braille graphs (snnTorch-written, ../shared/data/nir) through import-nir, Norse and Loihi 2 fixed
point: how close each reading stays to our float model on random 12-channel spike inputs of 256 steps.

    .venv/bin/python benchmarks/nir_braille.py [--samples 500] [--lava 4]

Per graph: the share of equal spikes between our float forward and Norse 1.1.0's reading of the same file; then,
for the fixed-point export with plain 8-bit weights and with --split-weights, the share of equal hidden and output
spikes, and how often the fixed-point network picks the float model's class (the most output spikes), over all
samples and over those whose float winner leads by at least 2 spikes (near-ties flip on any perturbation); and
whether Lava's spikes equal the fast engine's. No test data come with the graphs, so there is no accuracy here.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)

from export.quantize import quantize_checkpoint  # noqa: E402
from nir_io.norse_reading import run_norse  # noqa: E402
from nir_io.to_model import import_nir  # noqa: E402
from sim.integer_net import run_batch  # noqa: E402
from train.checkpoint import load_checkpoint  # noqa: E402
from train.models import model_from_checkpoint  # noqa: E402

NIR_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nir"
GRAPHS = {"braille_noDelay_bias_zero.nir": "zero", "braille_noDelay_noBias_subtract.nir": "subtract"}
DT, STEPS, RATES = 1e-4, 256, (0.01, 0.03, 0.1)


def spikes(n: int, rate: float, seed: int) -> torch.Tensor:
    return (torch.rand(n, STEPS, 12, generator=torch.Generator().manual_seed(seed)) < rate).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500, help="random inputs per rate")
    ap.add_argument("--lava", type=int, default=4, help="samples run through Lava (0: skip)")
    args = ap.parse_args()
    announce_load(f"{args.samples} random inputs of {STEPS} steps per rate {RATES}")
    work = Path(tempfile.mkdtemp())
    for name, reset in GRAPHS.items():
        path = NIR_DIR / name
        import_nir(path, work / name, DT, reset)
        ckpt = load_checkpoint(work / name)
        model = model_from_checkpoint(ckpt)
        x = spikes(32, 0.05, seed=1)
        with torch.no_grad():
            _, h = model(x, return_hidden=True)
        norse = list(run_norse(path, DT, reset, x).values())
        same = [float(np.mean(a.numpy() == b.numpy())) for a, b in zip(h, norse)]
        print(f"\n{name} (reset {reset}): Norse vs ours, equal spikes hidden {same[0]:.6f}, output {same[1]:.6f}")
        nets = {"8-bit": quantize_checkpoint(ckpt)[0], "split": quantize_checkpoint(ckpt, split_weights=True)[0]}
        print(f"  threshold mantissa per layer {[l.vth_mant for l in nets['split'].layers]}")
        print(f"  {'rate':>5} {'weights':>8} {'hidden eq':>10} {'output eq':>10} {'class agree':>12} "
              f"{'agree (lead>=2)':>16} {'out rate':>9}")
        for k, rate in enumerate(RATES):
            x = spikes(args.samples, rate, seed=10 + k)
            with torch.no_grad():
                _, h = model(x, return_hidden=True)
            counts = h[-1].sum(1).numpy()
            want = counts.argmax(-1)
            top = np.sort(counts, axis=-1)
            clear = top[:, -1] - top[:, -2] >= 2
            for label, net in nets.items():
                r = run_batch(net, x.numpy().astype(np.int64))
                got = r["spikes"][-1].sum(1).argmax(-1)
                print(f"  {rate:>5} {label:>8} {np.mean(r['spikes'][0] == h[0].numpy()):>10.4f} "
                      f"{np.mean(r['spikes'][-1] == h[-1].numpy()):>10.4f} {np.mean(got == want):>12.3f} "
                      f"{np.mean(got[clear] == want[clear]):>16.3f} {float(h[-1].mean()):>9.3f}")
        if args.lava:
            from sim.lava_net import run_lava
            from sim.stream import run_stream
            x = spikes(args.lava, 0.05, seed=99).numpy().astype(np.int64)
            fast = run_stream(nets["split"], x, 0, keep_traces=True)  # the stream Lava runs
            lava = run_lava(nets["split"], x, record=True, progress=False)
            equal = all(np.array_equal(a, b) for a, b in zip(fast.spikes, lava.spikes))
            print(f"  Lava (split weights) on {args.lava} samples: spikes equal to the fast engine's: {equal}")


if __name__ == "__main__":
    main()
