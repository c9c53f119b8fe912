"""The fast engine: a whole split through the integer network (sim.integer_net) in batches, with the tally the
Lava counters would give (sim.tally); tests/test_sim.py checks it spike for spike, count for count, against
export.qnet.run_network, the PyTorch fixed-point forward (export.qat.run_fixed_point) and the Lava run.

Samples are independent, so `threads` > 1 runs batches side by side in threads (the compiled kernels release
the GIL); the results are the same whatever the number of threads (integer tallies, predictions in order)."""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from common.progress import progress_bar
from export.qnet import QNetwork, predict
from sim.integer_net import Inputs, run_batch
from sim.tally import Tally, tally_batch


@dataclass
class SimResult:
    pred: np.ndarray
    labels: np.ndarray
    tally: Tally
    spikes: list[np.ndarray] | None = None  # kept only when asked (memory)
    readout: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float((self.pred == self.labels).mean()) if len(self.labels) else 0.0


def default_threads() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def batch_size(n: int, batch: int, threads: int) -> int:
    """`batch`, made smaller when that leaves a thread without a batch (60 samples on 2 threads: 2 x 30)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return max(1, min(batch, math.ceil(n / threads)))


def map_batches(fn, batches, n: int, progress: bool, desc: str, threads: int = 1) -> list:
    """[fn(inputs) for inputs in batches], in order, `threads` batches side by side; the bar counts `n` samples."""
    bar = progress_bar(n, desc, progress)
    out = []

    def one(inputs):
        return inputs.B, fn(inputs)

    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
        for size, result in (pool.map if pool else map)(one, batches):
            out.append(result)
            bar.update(size)
    bar.close()
    return out


def _run_batches(net: QNetwork, batches, n: int, keep_traces: bool, progress: bool, desc: str, threads: int = 1):
    t0 = time.perf_counter()
    total, preds, spikes, readouts = Tally(), [], [], []

    def one(inputs):
        out = run_batch(net, inputs)
        return out, predict(out["readout"]), tally_batch(net, inputs, out["spikes"])

    for out, pred, tally in map_batches(one, batches, n, progress, desc, threads):
        preds.append(pred)
        total.add(tally)
        if keep_traces:
            spikes.append(out["spikes"])
            readouts.append(out["readout"])
    traces = {}
    if keep_traces and spikes:
        traces = {"spikes": [np.concatenate([b[k] for b in spikes]) for k in range(len(net.hidden))],
                  "readout": np.concatenate(readouts)}
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return pred, total, traces, time.perf_counter() - t0


def input_batches(samples, index: np.ndarray, batch: int):
    """Inputs of `batch` samples at a time: samples[index] of a binned split (audio.binning.BinnedSet, straight
    from its event indices) or of integer counts [N, T, C]."""
    index = np.asarray(index, dtype=np.int64)
    for s in range(0, len(index), batch):
        part = index[s:s + batch]
        yield Inputs.from_dense(samples[part]) if isinstance(samples, np.ndarray) else Inputs.from_split(samples, part)


def run_counts(net: QNetwork, counts: np.ndarray, labels: np.ndarray | None = None, batch: int = 128,
               keep_traces: bool = False, progress: bool = False, desc: str = "fast engine",
               threads: int = 1) -> "SimResult":
    """Integer counts [N, T, C] through the network in batches of `batch` samples."""
    counts = np.asarray(counts)
    N = counts.shape[0]
    batch = batch_size(N, batch, threads)
    batches = input_batches(counts, np.arange(N), batch)
    pred, total, traces, seconds = _run_batches(net, batches, N, keep_traces, progress, desc, threads)
    labels = np.full(N, -1) if labels is None else np.asarray(labels)[:N]
    return SimResult(pred, labels, total, traces.get("spikes"), traces.get("readout"), seconds)


def run_fast(net: QNetwork, split, limit: int | None = None, batch: int = 128, keep_traces: bool = False,
             progress: bool = True, index: np.ndarray | None = None, threads: int = 1) -> SimResult:
    """All (or the first `limit`, or those of `index`) samples of a binned split (audio.binning.BinnedSet)
    through the network, batched (`threads` batches at a time); inputs straight from the split's event indices."""
    if index is None:
        index = np.arange(len(split) if limit is None else min(limit, len(split)))
    index = np.asarray(index, dtype=np.int64)
    if split.spec.n_channels != net.layers[0].n_in:
        raise ValueError(f"the samples have {split.spec.n_channels} channels, the network takes {net.layers[0].n_in}")
    batch = batch_size(len(index), batch, threads)
    batches = input_batches(split, index, batch)
    pred, total, traces, seconds = _run_batches(net, batches, len(index), keep_traces, progress, "fast engine",
                                                threads)
    return SimResult(pred, np.asarray(split.labels)[index], total, traces.get("spikes"), traces.get("readout"), seconds)
