"""`cli.py simulate`: an exported network file through a dataset split, in Lava or the fast engine.

    simulate("net.h5", "builtin", engine="lava", limit=20)  -> dict (see format_simulate)

Every engine runs the same stream (sim.stream): the samples back to back, `gap` silent steps after each,
every layer reset at its sample's first step by itself, nothing written from the host. The gap is ``--gap``,
or the smallest after which the network falls silent on the validation split (sim.stream.quiet_gap; a network
that never does streams with no gap, and says so); ``--raw-stream`` is ``--gap 0``. The fast engine's account
of the stream (sim.stream.run_stream) also checks it: every sample whose answer differs from its answer alone
is reported.

Lava (``engine='lava'``) builds the network of this project's processes (sim.lava_net) and streams
the samples through it in Loihi2SimCfg (or Loihi2HwCfg with ``backend='loihi2'`` where Intel's
lava-loihi is installed); predictions come from the readout's per-sample maxima, operations from
the event counters. A --netx-compatible file runs the same way (LavaCubaLIF layers, counted), or,
with ``stock_netx=True``, in lava-dl's stock netx ``Network``, whose layers have no counters: the
counts then come from the fast engine on the same samples, and the result says so.
The fast engine (``engine='fast'``) computes the same spikes and counts for the whole split at once.

Anything wrong with the inputs (file, dataset, channel count, options) and any Lava failure is an
InputError: the CLI prints one line and exits with code 2, and no partial result is shown.
"""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import time
from pathlib import Path

import h5py
import numpy as np

from audio.datasets import limit_index
from common.errors import InputError
from export.netx_h5 import read_network
from export.qnet import QNetwork
from lava_procs import LavaRunError
from sim import lava_net
from sim.engine import default_threads
from sim.stream import gap_cost, quiet_gap, run_stream
from sim.tally import Tally, counted_ops

ENGINES = ("lava", "fast")
LAVA_DEFAULT_LIMIT = 20  # the Lava simulator runs a few hundred to ~1000 steps/s: a whole split takes minutes
SPLITS = ("train", "valid", "test")


class SimulationFailed(InputError):
    """Lava failed during a run; the runtime was stopped and nothing of the run is reported."""


def load_net(path: str | Path) -> tuple[QNetwork, bool]:
    """(network, netx_compatible) of an exported file; any problem is an InputError naming the file."""
    net = read_network(path)
    with h5py.File(path, "r") as f:
        netx = bool(f.attrs.get("netx_compatible", False))
    return net, netx


def network_origin(net: QNetwork) -> dict:
    """Where the network's samples came from (export records audio.datasets.origin_of; older files: the bin
    rate and window, and the dataset only when it was the built-in one)."""
    meta = net.meta or {}
    if meta.get("origin"):
        return meta["origin"]
    from audio.datasets import origin_of
    return origin_of("builtin" if meta.get("dataset") == "builtin" else None,
                     spec={"bin_hz": meta.get("bin_hz"), "duration": meta.get("duration")},
                     layout="das" if meta.get("dataset") == "das" else None)


def load_split(net: QNetwork, data: str | None, split: str | None = None, channels: int | None = None,
               path: str | Path = "network"):
    """(EvalSet, its binned samples) the network runs on (audio.datasets.eval_set_for): `data` (a file: all its
    samples unless `split`), or the network's own test set; bin rate and window are the ones it was trained with,
    the channel count the network's (or `channels`)."""
    from audio.datasets import eval_set_for

    n_in = net.layers[0].n_in
    ev = eval_set_for(network_origin(net), data, split, channels if channels is not None else n_in)
    where = data or (net.meta or {}).get("origin", {}).get("data") or "the dataset"
    if ev.samples.spec.n_channels != n_in:
        raise InputError(f"{where}: the dataset has {ev.samples.spec.n_channels} input channels, the network {path} "
                         f"takes {n_in}")
    n_classes = net.readout.n_out
    if ev.n_classes > n_classes:
        raise InputError(f"{where}: {ev.n_classes} classes, the network {path} has {n_classes} outputs")
    return ev, ev.samples


def stream_gap(net: QNetwork, gap: int | None, raw_stream: bool, data: str | None, channels: int | None,
               path: str | Path, threads: int | None = None) -> tuple[int, str]:
    """(gap, how it was chosen): --gap, --raw-stream (0), or the smallest gap after which the network falls silent
    on the validation split of `data` or else of its own dataset (sim.stream.quiet_gap; never the split being
    scored). A network that does not fall silent, or one without a validation split, streams with no gap: the
    stream check then reports what that changes."""
    if raw_stream and gap not in (None, 0):
        raise InputError(f"--raw-stream is --gap 0: give one of --raw-stream and --gap {gap}")
    if raw_stream:
        return 0, "--raw-stream: back to back, no gap (free-running)"
    if gap is not None:
        if gap < 0:
            raise InputError(f"--gap must be at least 0, got {gap}")
        return gap, f"--gap {gap}"
    try:
        _, calibration = load_split(net, data, "valid", channels, path)
    except InputError as exc:
        if data is not None:
            return stream_gap(net, None, False, None, channels, path, threads)  # the network's own dataset
        return 0, f"no validation split to choose the gap on ({exc}); streamed with no gap (--gap N to give one)"
    choice = quiet_gap(net, calibration, threads=threads or default_threads())
    if choice.gap is None:
        return 0, choice.describe("validation") + "; streamed back to back (gap 0)"
    return choice.gap, choice.describe("validation")


def run_engine(net: QNetwork, split, engine: str, index: np.ndarray, backend: str = "sim", progress: bool = True,
               path: str | Path | None = None, stock_netx: bool = False, netx: bool = False, gap: int = 0,
               threads: int | None = None) -> dict:
    """One engine over the samples `index` of a split, streamed with `gap` silent steps after each: predictions,
    labels, tally, seconds, notes, and 'stream': the fast engine's account of the same stream (sim.stream).

    stock_netx: run the file in lava-dl's stock netx; threads: the fast engine's (default: every core)."""
    index = np.asarray(index, dtype=np.int64)
    n = len(index)
    if n < 1:
        raise InputError("no samples to run (empty split)")
    threads = threads or default_threads()
    notes = []
    labels = np.asarray(split.labels)[index]
    if engine == "fast":
        if backend != "sim":
            raise InputError("--backend loihi2 runs Lava: use it with --engine lava")
        st = run_stream(net, split, gap, index, threads=threads, progress=progress)
        return {"pred": st.pred, "labels": labels, "tally": st.tally, "seconds": st.seconds, "notes": notes,
                "stream": st}
    if engine != "lava":
        raise InputError(f"--engine {engine!r}: choose lava or fast")
    cfg = lava_net.run_config(backend)
    counts = split.dense(index).numpy().astype(np.int64)
    if stock_netx and not netx:
        raise InputError(f"{path}: --stock-netx needs a --netx-compatible file")
    try:
        if stock_netx:
            res = lava_net.run_stock_netx(path, net, counts, progress=progress, run_cfg=cfg, gap=gap)
        else:
            res = lava_net.run_lava(net, counts, progress=progress, run_cfg=cfg, gap=gap)
    except LavaRunError as exc:
        raise SimulationFailed(f"{exc} (Lava stopped; no results)") from None
    st = run_stream(net, counts, gap, threads=threads)
    if stock_netx:
        res.tally = st.tally
        res.tally.source = "fast"
    notes += res.notes
    if not np.array_equal(res.sample_max, st.sample_max):
        bad = np.flatnonzero((res.sample_max != st.sample_max).any(axis=1))
        notes.append(f"Lava's readout maxima differ from the fast engine's account of the same stream on {len(bad)} "
                     f"samples (positions {bad[:10].tolist()}): please report this")
    if backend == "loihi2":
        notes.append("Loihi2HwCfg: this project's neurons have CPU models only and run on the host")
    return {"pred": res.pred, "labels": labels, "tally": res.tally, "seconds": res.seconds, "notes": notes,
            "stream": st}


def stream_report(net: QNetwork, st, labels: np.ndarray, steps: int, how: str) -> dict:
    """The stream's cost (sim.stream.gap_cost) and check (samples whose answer differs from their answer alone)."""
    alone = st.alone_max.argmax(axis=1)
    return {"gap": st.gap, "how": how, "cost": gap_cost(net, steps, st.gap), "gap_spikes": st.gap_spikes,
            "carried": len(st.carried), "differs": st.differs.tolist(), "pred_differs": st.pred_differs.tolist(),
            "accuracy_alone": float(np.mean(alone == labels))}


def simulate(path: str | Path, data: str | None = None, split: str | None = None, limit: int | None = None,
             engine: str = "lava", backend: str = "sim", channels: int | None = None, progress: bool = True,
             stock_netx: bool = False, raw_stream: bool = False, threads: int | None = None,
             gap: int | None = None) -> dict:
    """Everything `cli.py simulate` prints, as a plain dict (no partial result: errors raise).

    data/split: as audio.datasets.eval_set_for (a file: all its samples unless `split`); gap, raw_stream: as
    stream_gap."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r}: choose lava or fast")
    if backend not in lava_net.BACKENDS:
        raise InputError(f"--backend {backend!r}: choose sim or loihi2")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if backend == "loihi2":
        lava_net.run_config("loihi2")  # says so in one line when lava-loihi is missing, before any work
    net, netx = load_net(path)
    dataset, binned = load_split(net, data, split, channels, path)
    notes = []
    if engine == "lava" and limit is None:
        limit = LAVA_DEFAULT_LIMIT
        if len(binned) > limit:
            notes.append(f"Lava runs {limit} of the {len(binned)} samples by default (--limit N for more; "
                         "--engine fast runs the whole split)")
    t0 = time.perf_counter()
    index = limit_index(binned.labels, limit)
    gap, how = stream_gap(net, gap, raw_stream, data, channels, path, threads)
    run = run_engine(net, binned, engine, index, backend, progress, path, stock_netx, netx, gap, threads)
    tally: Tally = run["tally"]
    rows = counted_ops(net, tally)
    mac, ac = sum(r["mac"] for r in rows), sum(r["ac"] for r in rows)
    steps = tally.steps
    return {
        "file": str(path), "model": net.meta.get("model", net.layers[0].kind), "netx_compatible": netx,
        "layers": [f"{l.kind} {l.n_in}->{l.n_out}" for l in net.layers], "data": dataset.name, "split": dataset.what,
        "engine": engine, "backend": backend, "stock_netx": stock_netx, "samples": int(len(run["pred"])),
        "stream": stream_report(net, run["stream"], run["labels"], steps, how),
        "split_samples": len(binned), "steps": steps, "accuracy": float(np.mean(run["pred"] == run["labels"])),
        "correct": int(np.sum(run["pred"] == run["labels"])), "index": index.tolist(), "pred": run["pred"].tolist(),
        "rates": tally.rates(net), "ops": rows, "ops_total": {"mac": mac, "ac": ac, "ops": mac + ac},
        "ops_per_sample": {"mac": mac * steps, "ac": ac * steps, "ops": (mac + ac) * steps},
        "tally": tally.as_dict(), "tally_from": tally.source, "seconds": run["seconds"],
        "wall_seconds": time.perf_counter() - t0, "notes": notes + run["notes"],
    }


def format_simulate(r: dict) -> str:
    eng = {"lava": f"Lava ({'Loihi2HwCfg' if r['backend'] == 'loihi2' else 'Loihi2SimCfg'}, fixed_pt"
                   f"{', stock netx' if r['stock_netx'] else ''})",
           "fast": "fast engine"}[r["engine"]]
    lines = [f"{r['file']}: {r['model']} ({', '.join(r['layers'])})",
             f"{eng} on {r['data']}, {r['split']}: "
             + (f"{r['samples']} of them (spread over the classes)" if r['samples'] < r['split_samples'] else "all")
             + f" x {r['steps']} steps "
             f"in {r['seconds']:.2f} s ({r['samples'] / max(r['seconds'], 1e-9):.1f} samples/s)",
             f"accuracy {100 * r['accuracy']:.2f} % ({r['correct']}/{r['samples']})",
             f"input events per channel per step {r['rates'][0]:.4f}; spikes per neuron per step "
             + ", ".join(f"layer{k + 1} {x:.4f}" for k, x in enumerate(r["rates"][1:])),
             f"measured operations ({'Lava event counters' if r['tally_from'] == 'lava' else 'fast engine counts'}):",
             f"  {'layer':<9}{'kind':<11}{'m':>6}{'n':>6}{'MAC/step':>13}{'AC/step':>13}"]
    for o in r["ops"]:
        lines.append(f"  {o['name']:<9}{o['kind']:<11}{o['m']:>6}{o['n']:>6}{o['mac']:>13.1f}{o['ac']:>13.1f}")
    t, s = r["ops_total"], r["ops_per_sample"]
    lines.append(f"  {'total':<32}{t['mac']:>13.1f}{t['ac']:>13.1f}   (MAC+AC {t['ops']:.1f} per step per sample)")
    lines.append(f"  per sample ({r['steps']} steps): MAC {s['mac']:.0f}, AC {s['ac']:.0f}, MAC+AC {s['ops']:.0f}")
    lines += format_stream(r["stream"], r["samples"])
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def format_stream(st: dict, samples: int) -> list[str]:
    """The stream's lines: its gap and how it was chosen, what the gap costs, and the check."""
    c = st["cost"]
    latency = "" if c["latency_ms"] is None else (f"; latency {c['latency_ms']:.0f} ms per sample at "
                                                  f"{c['step_ms']:g} ms per step")
    lines = [f"stream: {samples} samples back to back, {st['gap']} silent steps after each ({st['how']})",
             f"  gap cost: {c['period']} steps per sample (+{100 * c['extra_fraction']:.1f} %){latency}, plus "
             f"{c['pipeline_steps']} steps through the layers; +{c['extra_neuron_updates']} neuron updates per sample "
             f"({c['gap']} x {c['neurons']} neurons); {st['gap_spikes']} hidden spikes in the gaps"]
    if not st["differs"]:
        lines.append(f"  stream check (fast engine): every sample's answer equals its answer alone"
                     + (f" ({st['carried']} got spikes from the step before and still agree)" if st["carried"] else ""))
    else:
        lines.append(f"  stream check (fast engine): {len(st['differs'])} of {samples} samples differ from their answer "
                     f"alone ({len(st['pred_differs'])} predictions; accuracy alone {100 * st['accuracy_alone']:.2f} %); "
                     f"first positions {st['differs'][:10]}")
    return lines
