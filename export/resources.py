"""Loihi 2 limits: bit-width checks of a QNetwork and an estimate of the cores, neurons and synapse memory it needs.

The figures are Intel's published Loihi 2 numbers where Intel published one, and stated
assumptions where it did not (marked). Synapses are counted dense, one byte each (8-bit
weight mantissas; the exponent is per connection, not per synapse). A layer is split over
as many cores as its neurons, its synapse memory and its axons need; layers do not share
cores. The input channels come from outside the neuro cores (host or embedded core) and
take no neuro core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from export import fixed_point as fx
from export.qnet import QNetwork

# Intel, Loihi 2 brief (2021): 128 neuro cores, up to 8192 neurons per core,
# up to 1 million neurons and 120 million synapses per chip.
CORES_PER_CHIP = 128
NEURONS_PER_CORE = 8192
NEURONS_PER_CHIP = 1 << 20
SYNAPSES_PER_CHIP = 120_000_000
# Synapse memory per core: 128 KB (the figure this project's design uses; the Loihi 1 core had 128 KB too).
SYNAPSE_BYTES_PER_CORE = 128 * 1024
WEIGHT_BYTES = 1  # 8-bit weight mantissas, dense
# Assumption: Loihi 2's per-core axon limits are not published; Loihi 1's (Davies et al., IEEE Micro 2018:
# 4096 input and 4096 output axons per core) are used. Fan-in: distinct sources feeding one core's neurons
# (a dense layer: all its inputs plus, if recurrent, all its own neurons). Fan-out: output axons of a core,
# one per (neuron, destination core) pair.
IN_AXONS_PER_CORE = 4096
OUT_AXONS_PER_CORE = 4096
# bit widths (docs/fixed_point.md)
DECAY_BITS = fx.DECAY_BITS
STATE_BITS = fx.STATE_BITS


@dataclass
class LayerUse:
    index: int  # 0-based QNetwork layer
    kind: str
    neurons: int
    fan_in: int  # distinct inputs per neuron
    synapses_per_neuron: int  # SpikGRU: two dendrites over the same inputs
    dest_layers: tuple  # indices of layers its spikes go to (-1: off chip)
    cores: int = 0
    fan_out_cores: int = 0  # destination cores per neuron

    @property
    def synapses(self) -> int:
        return self.neurons * self.synapses_per_neuron

    @property
    def synapse_bytes(self) -> int:
        return self.synapses * WEIGHT_BYTES


def _total(field: str) -> property:
    return property(lambda self: sum(getattr(layer, field) for layer in self.layers), doc=f"{field} of all layers")


@dataclass
class Resources:
    layers: list[LayerUse]
    chips: int

    cores = _total("cores")
    neurons = _total("neurons")
    synapses = _total("synapses")
    synapse_bytes = _total("synapse_bytes")


# ---- bit widths ----------------------------------------------------------------------------

def check_bit_widths(net: QNetwork) -> list[str]:
    """Every value that must fit a Loihi 2 register, checked; returns one message per violation."""
    problems = []

    def rng(what, arr, lo, hi):
        arr = np.asarray(arr)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            problems.append(f"{what} holds {int(arr.min() if arr.min() < lo else arr.max())}, outside [{lo}, {hi}]")

    for k, layer in enumerate(net.layers):
        at = f"layer {k} ({layer.kind})"
        for name, syn in layer.connections().items():
            rng(f"{at} {name} weight mantissa (8-bit)", syn.weight, fx.W_MIN, fx.W_MAX)
            rng(f"{at} {name} weight exponent", syn.exp, fx.EXP_MIN, fx.EXP_MAX)
        for mant, exp in (("bias_mant", "bias_exp"), ("bias_z_mant", "bias_z_exp")):
            if getattr(layer, mant) is not None:
                rng(f"{at} {mant} (13-bit)", getattr(layer, mant), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX)
                rng(f"{at} {exp} (3-bit)", getattr(layer, exp), 0, fx.BIAS_EXP_MAX)
                bias = fx.bias_value(np.clip(getattr(layer, mant), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX),
                                     int(np.clip(getattr(layer, exp), 0, fx.BIAS_EXP_MAX)))
                rng(f"{at} bias value (24-bit state)", bias, -fx.STATE_MAX, fx.STATE_MAX)
        for name in ("i_decay", "v_decay", "du"):
            if getattr(layer, name) is not None:
                rng(f"{at} {name} (12-bit)", getattr(layer, name), 0, fx.DECAY_MAX)
    if fx.THETA > fx.STATE_MAX or (fx.ACC_MAX << fx.ACT_SHIFT) > fx.STATE_MAX:
        problems.append("threshold or synaptic input does not fit the 24-bit state")
    return problems


# ---- cores ---------------------------------------------------------------------------------

def _uses(net: QNetwork) -> list[LayerUse]:
    uses = []
    last = len(net.layers) - 1
    for k, layer in enumerate(net.layers):
        recurrent = layer.rec is not None
        fan_in = layer.n_in + (layer.n_out if recurrent else 0)
        synapses = sum(c.weight.shape[1] for c in layer.connections().values())  # gate and residual ones too
        dest = ((k,) if recurrent else ()) + ((k + 1,) if k < last else (-1,))
        uses.append(LayerUse(k, layer.kind, layer.n_out, fan_in, synapses, dest))
    return uses


def estimate(net: QNetwork, chips: int = 1) -> Resources:
    """Cores, neurons and synapse memory per layer and in total; InputError if a layer cannot be mapped
    (fan-in too large for one core) or the network needs more than `chips` Loihi 2 chips."""
    if chips < 1:
        raise InputError(f"--chips must be at least 1, got {chips}")
    uses = _uses(net)
    for u in uses:
        at = f"layer {u.index} ({u.kind})"
        if u.fan_in > IN_AXONS_PER_CORE:
            raise InputError(f"{at}: fan-in {u.fan_in} exceeds {IN_AXONS_PER_CORE} input axons per core "
                             "(a neuron's inputs must all reach its core)")
        if u.synapses_per_neuron * WEIGHT_BYTES > SYNAPSE_BYTES_PER_CORE:
            raise InputError(f"{at}: one neuron needs {u.synapses_per_neuron * WEIGHT_BYTES} bytes of synapses, "
                             f"more than a core's {SYNAPSE_BYTES_PER_CORE}")
    # neurons and synapse memory per core; then output axons (neurons x destination cores), which depend on
    # the destinations' split: iterate to a fixed point (cores only grow, bounded by one neuron per core)
    for u in uses:
        per_core = min(NEURONS_PER_CORE, SYNAPSE_BYTES_PER_CORE // (u.synapses_per_neuron * WEIGHT_BYTES))
        u.cores = math.ceil(u.neurons / per_core)
    for _ in range(64):
        changed = False
        for u in reversed(uses):
            u.fan_out_cores = sum(1 if d < 0 else uses[d].cores for d in u.dest_layers)
            if u.fan_out_cores > OUT_AXONS_PER_CORE:
                raise InputError(f"layer {u.index} ({u.kind}): fan-out to {u.fan_out_cores} cores exceeds "
                                 f"{OUT_AXONS_PER_CORE} output axons per core")
            per_core = min(NEURONS_PER_CORE, SYNAPSE_BYTES_PER_CORE // (u.synapses_per_neuron * WEIGHT_BYTES),
                           OUT_AXONS_PER_CORE // u.fan_out_cores)
            cores = math.ceil(u.neurons / per_core)
            if cores != u.cores:
                u.cores, changed = max(cores, u.cores), True
        if not changed:
            break
    res = Resources(uses, chips)
    limits = (("cores", res.cores, CORES_PER_CHIP), ("neurons", res.neurons, NEURONS_PER_CHIP),
              ("synapses", res.synapses, SYNAPSES_PER_CHIP))
    for what, need, per_chip in limits:
        if need > per_chip * chips:
            raise InputError(f"the network needs {need:,} {what}, {chips} Loihi 2 chip(s) have {per_chip * chips:,} "
                             f"({math.ceil(need / per_chip)} chips would do: --chips)")
    return res


def format_resources(res: Resources) -> str:
    rows = [f"Loihi 2 resource estimate ({res.chips} chip(s); dense 8-bit synapses, {SYNAPSE_BYTES_PER_CORE // 1024} KiB "
            f"synapse memory and up to {NEURONS_PER_CORE} neurons per core):",
            f"  {'layer':<16}{'neurons':>9}{'fan-in':>8}{'fan-out':>9}{'cores':>7}{'synapse bytes':>15}"]
    for u in res.layers:
        rows.append(f"  {f'{u.index} {u.kind}':<16}{u.neurons:>9}{u.fan_in:>8}{u.fan_out_cores:>9}{u.cores:>7}"
                    f"{u.synapse_bytes:>15,}")
    rows.append(f"  {'total':<16}{res.neurons:>9}{'':>8}{'':>9}{res.cores:>7}{res.synapse_bytes:>15,}")
    rows.append(f"  of {res.chips * CORES_PER_CHIP} cores, {res.chips * NEURONS_PER_CHIP:,} neurons, "
                f"{res.chips * SYNAPSES_PER_CHIP:,} synapses")
    return "\n".join(rows)
