"""What Loihi 2 would execute for a counted run, beside the study's Table 2, and an energy estimate from it.

Table 2 counts a dense layer: every input event costs the whole fan-out, and a spike count c
arriving on a graded input is c events. The chip differs in two ways, both counted at run time by
the Lava connections and the fast engine (`sim.tally.Tally`):

* it stores only nonzero synapses, so a message costs the nonzero weights of its source's column
  (8-bit quantization zeroes a share of the weights: ``syn_ops_nz``);
* a bin with c input spikes is one graded-spike message carrying c (``messages``).

From the resource mapping (`export.resources.estimate`: how many cores each layer spans) every
message leaving a layer goes to each core of each destination layer: ``core_messages``. Every
neuron updates once per step: ``neuron_updates``.

Energy estimate (labelled as such everywhere it is shown): Loihi's per-operation energies as
published in Davies et al., "Loihi: a neuromorphic manycore processor with on-chip learning",
IEEE Micro 38(1), 2018, Table 2 (pre-silicon simulation, Loihi 1, 14 nm, 0.75 V): 23.6 pJ per
synaptic spike operation (their minimum), 52 pJ per neuron update (81 pJ "active": taken here for
an update that emits a spike), 1.7 pJ per spike within a tile and 3.0 / 4.0 pJ per tile hop
(E-W / N-S; taken here as one hop of 3.5 pJ per core message). Intel has not published Loihi 2
per-operation energies; these are the closest published figures, not a measurement.
"""
from __future__ import annotations

import numpy as np

from export.qnet import QNetwork
from export.resources import Resources
from sim.tally import Tally, layer_names

LOIHI_PJ = {"syn_op": 23.6, "neuron_update": 52.0, "neuron_update_spiking": 81.0, "spike_in_tile": 1.7,
            "tile_hop": 3.5}
LOIHI_SOURCE = ("Davies et al., IEEE Micro 38(1) 2018, Table 2 (Loihi 1, pre-silicon): 23.6 pJ/synaptic op, "
                "52 pJ/neuron update (81 pJ when it spikes), 1.7 pJ + one 3.5 pJ hop per core message; an estimate")


def zero_weight_share(net: QNetwork) -> dict[str, float]:
    """Per connection "<layer>.<synapse>": the share of its quantized weights that are 0."""
    names = layer_names(net)
    return {f"{names[k]}.{syn_name}": float(np.mean(syn.weight == 0))
            for k, layer in enumerate(net.layers) for syn_name, syn in layer.connections().items()}


def hardware_ops(net: QNetwork, counts: Tally, res: Resources) -> list[dict]:
    """Per layer, per timestep per sample: the study's dense synaptic events, the chip's synaptic operations on
    nonzero synapses, the messages received, the core messages sent, neuron updates and spikes."""
    per = max(1, counts.samples * counts.steps)
    names = layer_names(net)
    sent = [counts.input_messages] + list(counts.spikes)  # messages leaving the input and each hidden layer
    rows = []
    for k, (name, layer) in enumerate(zip(names, net.layers)):
        keys = [f"{name}.{s}" for s in layer.connections()]
        dense = sum(counts.syn_events.get(key, 0) for key in keys)
        nonzero = sum(counts.syn_ops_nz.get(key, 0) for key in keys)
        into_cores = sent[k] * res.layers[k].cores  # the feed-forward messages reach every core of this layer
        if layer.rec is not None:  # its own spikes come back to each of its cores
            into_cores += sent[k + 1] * res.layers[k].cores
        rows.append({"name": name, "kind": layer.kind, "syn_dense": dense / per, "syn_nonzero": nonzero / per,
                     "nonzero_vs_dense": (nonzero - dense) / dense if dense else 0.0,
                     "messages_in": sum(counts.messages.get(key, 0) for key in keys) / per,
                     "core_messages_in": into_cores / per, "neuron_updates": float(layer.n_out),
                     "spikes": (counts.spikes[k] / per) if k < len(counts.spikes) else 0.0})
    return rows


def loihi_energy_pj(rows: list[dict]) -> float:
    """Energy per timestep per sample (pJ) of hardware_ops rows at LOIHI_PJ: an estimate."""
    e = LOIHI_PJ
    return float(sum(r["syn_nonzero"] * e["syn_op"] + r["neuron_updates"] * e["neuron_update"]
                     + r["spikes"] * (e["neuron_update_spiking"] - e["neuron_update"])
                     + r["core_messages_in"] * (e["spike_in_tile"] + e["tile_hop"]) for r in rows))


def explain(net: QNetwork, counts: Tally, rows: list[dict]) -> list[str]:
    """One line per layer saying why the chip's synaptic operations differ from Table 2's."""
    zeros = zero_weight_share(net)
    lines = []
    for k, r in enumerate(rows):
        parts = [f"{100 * z:.1f} % of {key.split('.', 1)[1]} weights quantize to 0"
                 for key, z in zeros.items() if key.startswith(r["name"] + ".") and z > 0]
        if k == 0 and counts.input_messages:
            parts.append(f"the input's {counts.input_events / counts.input_messages:.2f} events per graded message "
                         "cost one synaptic operation each, not one per event")
        if parts:
            lines.append(f"{r['name']}: {100 * r['nonzero_vs_dense']:+.1f} % because " + "; ".join(parts))
    return lines
