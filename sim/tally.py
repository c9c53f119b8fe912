"""What a run did, counted: the quantities the Lava counters count (lava_procs.process docstring), per connection
"<layer>.<synapse>" (layer1.ff, layer1.rec, layer1.ff_z, ..., readout.ff): the study's events x fan-out (a
graded payload c is c events), messages and the operations on nonzero synapses; spikes per hidden layer;
neuron_ops per layer (MAC, AC) from lava_procs.NEURON_OPS, the soft reset counted once per spike. The fast
engine tallies each batch with `tally_batch`; sim.lava_net reads the same fields from Lava's counters."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from export import fixed_point as fx
from export.qnet import QNetwork
from lava_procs.process import NEURON_OPS
from sim.integer_net import Inputs


def ops_kind(layer) -> str:
    """The layer's row of lava_procs.NEURON_OPS (a readout with a current stage has its own)."""
    return "current-readout" if layer.kind == "readout" and layer.i_decay is not None else layer.kind


def layer_names(net: QNetwork) -> list[str]:
    """layer1 .. layerL, readout: the names counts and reports use."""
    return [f"layer{k + 1}" for k in range(len(net.hidden))] + ["readout"]


@dataclass
class Tally:
    """Totals over the samples run (the Lava counters' quantities).

    Per connection "<layer>.<synapse>": syn_events (the study's Table 2: events x fan-out, a graded
    payload c being c events), messages (spike messages received, one per nonzero input) and
    syn_ops_nz (each message costs the nonzero weights of its input's column: what Loihi executes).
    spikes: per hidden layer; neuron_ops: layer -> (MAC, AC) of the neuron terms; input_events: the
    (clipped) input spike counts summed, input_messages: the nonzero input bins.
    source: 'fast' (this engine), 'lava' (Lava's counters) or 'none'."""

    samples: int = 0
    steps: int = 0
    syn_events: dict[str, int] = field(default_factory=dict)
    spikes: list[int] = field(default_factory=list)
    neuron_ops: dict[str, tuple[int, int]] = field(default_factory=dict)
    input_events: int = 0
    source: str = "fast"
    messages: dict[str, int] = field(default_factory=dict)
    syn_ops_nz: dict[str, int] = field(default_factory=dict)
    input_messages: int = 0

    def add(self, other: "Tally") -> None:
        if self.samples and other.steps != self.steps:
            raise ValueError(f"cannot add counts of {other.steps}-step samples to {self.steps}-step ones")
        self.samples += other.samples
        self.steps = other.steps
        self.input_events += other.input_events
        self.input_messages += other.input_messages
        for mine, theirs in ((self.syn_events, other.syn_events), (self.messages, other.messages),
                             (self.syn_ops_nz, other.syn_ops_nz)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k, (mac, ac) in other.neuron_ops.items():
            m0, a0 = self.neuron_ops.get(k, (0, 0))
            self.neuron_ops[k] = (m0 + mac, a0 + ac)
        self.spikes = [a + b for a, b in zip(self.spikes, other.spikes)] if self.spikes else list(other.spikes)

    def key(self) -> tuple:
        """Everything that must be equal between two runs of the same samples."""
        return (self.samples, self.steps, tuple(sorted(self.syn_events.items())), tuple(self.spikes),
                tuple(sorted(self.neuron_ops.items())), self.input_events, tuple(sorted(self.messages.items())),
                tuple(sorted(self.syn_ops_nz.items())), self.input_messages)

    def equals(self, other: "Tally") -> bool:
        return self.key() == other.key()

    def rates(self, net: QNetwork) -> list[float]:
        """[input events per channel per step, spikes per neuron per step of each hidden layer] (the activity
        train.ops.model_ops takes; train.evaluate.run_split gives the float model's)."""
        per = max(1, self.samples * self.steps)
        widths = [net.layers[0].n_in] + [l.n_out for l in net.hidden]
        return [e / (per * w) for e, w in zip([self.input_events] + list(self.spikes), widths)]

    def as_dict(self) -> dict:
        return {"samples": self.samples, "steps": self.steps, "syn_events": dict(self.syn_events),
                "messages": dict(self.messages), "syn_ops_nz": dict(self.syn_ops_nz),
                "spikes": list(self.spikes), "neuron_ops": {k: list(v) for k, v in self.neuron_ops.items()},
                "input_events": self.input_events, "input_messages": self.input_messages, "source": self.source}


def _per_source(counts) -> tuple[np.ndarray, np.ndarray]:
    """(events, messages) per input channel of a batch: payload sums and nonzero bins."""
    if isinstance(counts, Inputs):
        csr = counts.csr
        events = np.bincount(csr.indices, weights=csr.data, minlength=counts.C)
        return np.rint(events).astype(np.int64), np.bincount(csr.indices[csr.data != 0], minlength=counts.C)
    clipped = np.clip(np.asarray(counts), 0, fx.PAYLOAD_MAX)
    return clipped.sum(axis=(0, 1), dtype=np.int64), np.count_nonzero(clipped, axis=(0, 1))


def tally_batch(net: QNetwork, counts, spikes: list[np.ndarray]) -> Tally:
    """Tally of one batch: counts [B, T, C] graded input (or Inputs), spikes per hidden layer [B, T, n]."""
    B, T = (counts.B, counts.T) if isinstance(counts, Inputs) else np.shape(counts)[:2]
    events, msgs = _per_source(counts)
    per_neuron = [np.asarray(s).sum(axis=(0, 1), dtype=np.int64) for s in spikes]  # spikes are messages
    c = Tally(samples=B, steps=T, input_events=int(events.sum()), input_messages=int(msgs.sum()))
    sources = [c.input_events] + [int(p.sum()) for p in per_neuron]
    messages = [msgs] + per_neuron
    c.spikes = sources[1:]
    names = layer_names(net)
    for k, layer in enumerate(net.layers):
        for syn_name, syn in layer.connections().items():
            src = k + 1 if syn_name.startswith("rec") else k
            key = f"{names[k]}.{syn_name}"
            c.syn_events[key] = sources[src] * syn.weight.shape[0]
            c.messages[key] = int(messages[src].sum())
            c.syn_ops_nz[key] = int(messages[src] @ np.count_nonzero(syn.weight, axis=0))
        mac, ac, soft = NEURON_OPS[ops_kind(layer)]
        per = layer.n_out * B * T
        c.neuron_ops[names[k]] = (mac * per, ac * per + (sources[k + 1] if soft and layer.kind != "readout" else 0))
    return c


def counted_ops(net: QNetwork, c: Tally) -> list[dict]:
    """MAC and AC per timestep per sample of each layer, from a tally (Table 2's terms).

    AC = the layer's synaptic events (all its connections) + its neuron AC terms (bias, the soft
    reset once per spike); MAC = its neuron MAC terms."""
    per = max(1, c.samples * c.steps)
    rows = []
    for k, (name, layer) in enumerate(zip(layer_names(net), net.layers)):
        syn = sum(v for key, v in c.syn_events.items() if key.startswith(name + "."))
        mac, ac = c.neuron_ops.get(name, (0, 0))
        rows.append({"name": name, "kind": layer.kind, "m": layer.n_in, "n": layer.n_out,
                     "mac": mac / per, "ac": (syn + ac) / per})
    return rows
