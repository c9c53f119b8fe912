"""Simulation speed: the fast integer engine vs Lava (Loihi2SimCfg, fixed_pt) on one exported 2x128 network.

One run: a 2x128 spiking network (700 inputs -> 128 -> 128 -> readout, default Cuba-LIF; --checkpoint
to take a trained one) is exported with `cli.py export`'s code path to a netx-style HDF5 file and read
back; N test samples of the built-in data at 250 Hz (250 steps each; --data for another dataset) go
through
  lava - sim.lava_net.run_lava, as `cli.py simulate --engine lava` runs it (build, compile, run,
         read the counters), timed;
  fast - sim.engine.run_fast, as `cli.py simulate --engine fast` runs it: on the same N samples, and on
         the whole split (which holds them) as it is used every day, batched; best of 3.
A second Lava run with spike recorders attached (not timed: the recorders are extra processes) gives
the spike trains of every layer on the N samples, compared with the fast engine's account of the same
stream (sim.stream.run_stream, no gap); the counts (synaptic events per connection, spikes and neuron ops
per layer) and the predictions are compared too.

speedup = Lava seconds per sample / fast-engine seconds per sample on the same N samples (by default
the whole test split; the fast engine's figure over the whole split is printed above it), the fast engine on
one thread; and again with the fast engine on every core (batches side by side, as `simulate` runs it; Lava
uses every core too). The fast engine runs first (compiled), best of 5, so that Lava's processes do not load
the machine while it is timed. The last line is
    speedup=<one thread> speedup_<N>_threads=<N threads> spikes_equal=<True|False> counts_equal=<True|False>

--scaling prints instead a table of both engines' time per sample against hidden size (64, 128, 256, 512)
and input density, on random Bernoulli inputs (--scaling-samples each; Lava timed the same way).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sim_speed.py [--samples N] [--model cuba-lif|lif|spikgru]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sim_speed.py --scaling
"""
# Lava first: it fixes multiprocessing's start method when imported
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from machine import announce_load  # noqa: E402  (benchmarks/machine.py)
from export.exporter import export_checkpoint  # noqa: E402
from export.netx_h5 import read_network  # noqa: E402
from sim.engine import default_threads, run_fast  # noqa: E402
from sim.lava_net import run_lava  # noqa: E402
from audio.datasets import limit_index  # noqa: E402
from sim.simulate import load_split  # noqa: E402
from sim.stream import run_stream  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.models import ModelConfig, build_model  # noqa: E402

N_IN, HIDDEN, LAYERS, CLASSES, BIN_HZ = 700, 128, 2, 6, 250.0


def make_checkpoint(path: Path, kind: str, gain: float, seed: int = 0, hidden: int = HIDDEN) -> Path:
    """A freshly initialised 2 x hidden model whose weights are scaled by `gain` so that both layers fire."""
    torch.manual_seed(seed)
    cfg = ModelConfig(kind, N_IN, CLASSES, LAYERS, hidden, {})
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("W", "U", "Wz", "Uz")):
                p.mul_(gain * (2.0 if name.startswith("hidden_layers.0.W") else 1.0))
    save_checkpoint(path, {"model": asdict(cfg), "state_dict": model.state_dict(), "epoch": 0,
                           "data": {"name": "builtin", "spec": {"bin_hz": BIN_HZ, "duration": 1.0, "n_channels": N_IN},
                                    "class_names": [f"c{k}" for k in range(CLASSES)]}})
    return path


def best_of(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def scaling(args) -> None:
    """Time per sample of both engines against hidden size and input density (random Bernoulli inputs)."""
    from sim.integer_net import Inputs, run_batch
    rng = np.random.default_rng(0)
    T, n = int(BIN_HZ), args.scaling_samples
    print(f"{'hidden':>7}{'density':>9}{'rates l1/l2':>14}{'lava ms/sample':>16}{'fast ms/sample':>16}{'ratio':>8}")
    for hidden, density in [(64, 0.01), (128, 0.01), (256, 0.01), (512, 0.01), (128, 0.003), (128, 0.03), (128, 0.1)]:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = make_checkpoint(Path(tmp) / "model.pt", args.model, args.gain, hidden=hidden)
            net = read_network(export_checkpoint(ckpt, Path(tmp) / "net.h5", "loihi2").out)
        counts = (rng.random((n, T, N_IN)) < density).astype(np.int64)
        inputs = Inputs.from_dense(counts)
        t_fast, out = best_of(lambda: run_batch(net, inputs), 5)
        t0 = time.perf_counter()
        run_lava(net, counts, progress=False)
        t_lava = time.perf_counter() - t0
        rates = "/".join(f"{float(s.mean()):.3f}" for s in out["spikes"])
        print(f"{hidden:>7}{density:>9}{rates:>14}{1e3 * t_lava / n:>16.1f}{1e3 * t_fast / n:>16.3f}"
              f"{t_lava / t_fast:>8.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=None, help="samples run in both engines, spread over the split (default: all)")
    ap.add_argument("--model", default="cuba-lif", choices=["lif", "cuba-lif", "spikgru"])
    ap.add_argument("--checkpoint", default=None, help="a trained 2x128 checkpoint instead of a scaled initial one")
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--gain", type=float, default=4.0, help="weight scale of the initial model")
    ap.add_argument("--scaling", action="store_true", help="the hidden-size and density table instead")
    ap.add_argument("--scaling-samples", type=int, default=20, help="random samples per row of --scaling")
    args = ap.parse_args()
    announce_load("fast engine: one thread, then every core (numba); Lava: its own processes")
    if args.scaling:
        scaling(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or make_checkpoint(Path(tmp) / "model.pt", args.model, args.gain)
        exported = export_checkpoint(ckpt, Path(tmp) / "net.h5", "loihi2")
        net = read_network(exported.out)
    if [l.n_out for l in net.hidden] != [HIDDEN] * LAYERS:
        print(f"note: the network is {'x'.join(str(l.n_out) for l in net.hidden)}, not 2x128", file=sys.stderr)
    _, split = load_split(net, args.data, "test")
    index = limit_index(split.labels, args.samples)
    n, T = len(index), split.spec.n_steps
    print(f"network: {', '.join(f'{l.kind} {l.n_in}->{l.n_out}' for l in net.layers)}; {n} of {len(split)} "
          f"{args.data} test samples x {T} steps")

    # the fast engine first (nothing else running): the same samples, and the whole split
    cores = default_threads()
    t_same, same = best_of(lambda: run_fast(net, split, index=index, progress=False, keep_traces=True), 5)
    t_cores, on_cores = best_of(lambda: run_fast(net, split, index=index, progress=False, threads=cores), 5)
    t_split, whole = best_of(lambda: run_fast(net, split, progress=False), 5)
    # Lava, timed as `simulate --engine lava` runs it
    counts = split.dense(index).numpy().astype(np.int64)
    t0 = time.perf_counter()
    lava = run_lava(net, counts, progress=False)
    t_lava = time.perf_counter() - t0
    # Lava again with spike recorders, for the spike trains
    rec = run_lava(net, counts, record=True, progress=False)

    stream = run_stream(net, split, 0, index, keep_traces=True)  # the stream Lava runs (sim.stream)
    spikes_equal = all(np.array_equal(a, b) for a, b in zip(rec.spikes, stream.spikes))
    counts_equal = on_cores.tally.equals(same.tally) and all(t.equals(stream.tally) for t in (lava.tally, rec.tally))
    preds_equal = bool(np.array_equal(lava.pred, stream.pred) and np.array_equal(whole.pred[index], same.pred)
                       and np.array_equal(on_cores.pred, same.pred))
    rates = [round(float(s.mean()), 4) for s in same.spikes]
    per_lava, per_same, per_split = t_lava / n, t_same / n, t_split / len(split)
    print(f"spikes per neuron per step: {rates}; predictions equal: {preds_equal}; "
          f"accuracy lava {100 * np.mean(lava.pred == same.labels):.1f} % fast {100 * same.accuracy:.1f} %")
    print(f"lava: {t_lava:.2f} s for {n} samples ({lava.lava_steps} steps, {lava.lava_steps / t_lava:.0f} steps/s, "
          f"build + compile + run) = {1e3 * per_lava:.1f} ms/sample")
    print(f"fast, same {n} samples: {1e3 * t_same:.1f} ms = {1e3 * per_same:.3f} ms/sample, {1 / per_same:,.0f} "
          f"samples/s, {T / per_same:,.0f} steps/s on one thread (speedup {per_lava / per_same:.0f}x)")
    per_cores = t_cores / n
    print(f"fast, same {n} samples on {cores} threads (batches side by side): {1e3 * t_cores:.1f} ms = "
          f"{1e3 * per_cores:.3f} ms/sample, {1 / per_cores:,.0f} samples/s (speedup {per_lava / per_cores:.0f}x)")
    print(f"fast, whole split ({len(split)} samples): {1e3 * t_split:.1f} ms = {1e3 * per_split:.3f} ms/sample")
    print(f"speedup={per_lava / per_same:.0f} speedup_{cores}_threads={per_lava / per_cores:.0f} "
          f"spikes_equal={spikes_equal} counts_equal={counts_equal}")


if __name__ == "__main__":
    main()
