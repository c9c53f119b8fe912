"""The fast engine: a whole split through the integer network at once, with event counts.

It runs export.qnet.run_network (the spec's step functions, batched over samples)
and counts what Lava's counters count, per sample: synaptic events per connection
(each event adds its fan-out; a graded payload c is c events), spikes per layer and
the neuron terms of the study's Table 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from export.qnet import QNetwork, predict, run_network

# neuron terms of Table 2 per neuron per step: (MAC, AC); the per-spike reset AC is counted from spikes
NEURON_TERMS = {"lif": (1, 1), "cuba-lif": (3, 1), "lava-cuba": (3, 1), "spikgru": (3, 2), "readout": (1, 1)}


@dataclass
class Counts:
    """Totals over the samples run: events per connection, spikes and neuron ops per layer."""

    samples: int = 0
    steps: int = 0
    syn_events: dict[str, int] = field(default_factory=dict)  # "layer1.ff" -> events
    spikes: list[int] = field(default_factory=list)  # per hidden layer
    input_events: int = 0

    def add(self, other: "Counts") -> None:
        self.samples += other.samples
        self.steps = other.steps
        self.input_events += other.input_events
        for k, v in other.syn_events.items():
            self.syn_events[k] = self.syn_events.get(k, 0) + v
        self.spikes = [a + b for a, b in zip(self.spikes, other.spikes)] if self.spikes else list(other.spikes)


def count_events(net: QNetwork, counts: np.ndarray, spikes: list[np.ndarray]) -> Counts:
    """Events of one batch: counts [B, T, C] graded input, spikes per hidden layer [B, T, n]."""
    c = Counts(samples=counts.shape[0], steps=counts.shape[1])
    c.input_events = int(np.clip(counts, 0, None).sum())
    sources = [c.input_events] + [int(s.sum()) for s in spikes]
    c.spikes = sources[1:]
    for k, layer in enumerate(net.layers):
        name = "readout" if layer.kind == "readout" else f"layer{k + 1}"
        for syn_name, syn in layer.synapses().items():
            presyn = sources[k + 1] if syn_name.startswith("rec") else sources[k]
            c.syn_events[f"{name}.{syn_name}"] = presyn * syn.weight.shape[0]
    return c


@dataclass
class SimResult:
    pred: np.ndarray
    labels: np.ndarray
    counts: Counts
    spikes: list[np.ndarray] | None = None  # kept only when asked (memory)
    readout: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return float((self.pred == self.labels).mean()) if len(self.labels) else 0.0


def run_fast(net: QNetwork, split, limit: int | None = None, batch: int = 64, keep_traces: bool = False,
             progress: bool = True) -> SimResult:
    """All (or the first `limit`) samples of a binned split through the integer network."""
    n = len(split) if limit is None else min(limit, len(split))
    preds, total, spikes, readouts = [], Counts(), [], []
    bar = tqdm(total=n, desc="fast engine", unit="sample", disable=not progress, leave=False)
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        x = split.dense(idx).numpy().astype(np.int64)
        out = run_network(net, x)
        preds.append(predict(out["readout"]))
        total.add(count_events(net, x, out["spikes"]))
        if keep_traces:
            spikes.append(out["spikes"])
            readouts.append(out["readout"])
        bar.update(len(idx))
    bar.close()
    res = SimResult(np.concatenate(preds) if preds else np.zeros(0, int), split.labels[:n], total)
    if keep_traces:
        res.spikes = [np.concatenate([b[k] for b in spikes]) for k in range(len(net.hidden))]
        res.readout = np.concatenate(readouts)
    return res


def measured_ops(net: QNetwork, c: Counts) -> list[dict]:
    """MAC and AC per timestep per sample of each layer, from counted events (Table 2's terms).

    AC = synaptic events of the layer's connections + one reset per spike + the neuron's AC terms;
    MAC = the neuron's MAC terms.
    """
    per = max(1, c.samples * c.steps)
    rows = []
    for k, layer in enumerate(net.layers):
        name = "readout" if layer.kind == "readout" else f"layer{k + 1}"
        mac_n, ac_n = NEURON_TERMS[layer.kind]
        syn = sum(v for key, v in c.syn_events.items() if key.startswith(name + "."))
        resets = c.spikes[k] if layer.kind != "readout" else 0
        rows.append({"name": name, "kind": layer.kind, "n": layer.n_out,
                     "mac": mac_n * layer.n_out, "ac": (syn + resets) / per + ac_n * layer.n_out})
    return rows
