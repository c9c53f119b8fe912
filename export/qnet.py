"""A quantized network: plain integer arrays per layer, and its integer semantics.

`QNetwork` is what the exporter writes, what the HDF5 reader returns and what the
fast engine and the Lava builder consume. `run_network` is the reference meaning of
a QNetwork in model time (no Lava delays): every layer sees the layer below at the
same step, its own spikes one step late, exactly as the float equations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from export import fixed_point as fx

NEURON_KINDS = ("lif", "cuba-lif", "spikgru", "lava-cuba", "readout")


@dataclass
class Synapse:
    """One dense connection: 8-bit mantissas [n_out, n_in] and one exponent; `fine`, when present, a second
    connection between the same neurons holding the residual (export --split-weights: about 15-bit weights
    for twice the synapses; the two dendrites saturate each to 16 bits and add, as two connections do)."""

    weight: np.ndarray
    exp: int
    fine: "Synapse | None" = None

    def accumulate(self, s: np.ndarray) -> np.ndarray:
        a = fx.dendrite(self.weight, self.exp, s)
        return a if self.fine is None else a + self.fine.accumulate(s)

    def to_float(self, vth_mant: int = fx.VTH_MANT) -> np.ndarray:
        w = fx.dequantize_weight(self.weight, self.exp, vth_mant)
        return w if self.fine is None else w + self.fine.to_float(vth_mant)

    def parts(self) -> list["Synapse"]:
        """The connection itself and its residual, each one plain 8-bit connection."""
        return [Synapse(self.weight, self.exp)] + ([] if self.fine is None else self.fine.parts())


@dataclass
class QLayer:
    """One layer's integer parameters; unused fields of a kind stay None.

    i_decay, v_decay: 12-bit decays d (factor (4096 - d)/4096), per neuron (lava-cuba: v_decay one value).
    du: lava-cuba's current decay, Lava's own parameter (the current decays by fixed_point.lava_d(du)).
    bias: bias_mant with exponent bias_exp (state units: bias_mant << bias_exp).
    state_lo, state_hi: the clamp of i and v of lif / cuba-lif / spikgru neurons in state units (the
    training clip times THETA; default the 24-bit saturation range). lava-cuba and readout ignore them.
    rec None: a layer without recurrence. A readout with i_decay has a current stage (fixed_point.current_readout_step).
    """

    kind: str
    ff: Synapse
    rec: Synapse | None = None
    bias_mant: np.ndarray | None = None
    bias_exp: int = 0
    i_decay: np.ndarray | None = None
    du: int | None = None
    v_decay: np.ndarray | None = None
    ff_z: Synapse | None = None  # SpikGRU gate
    rec_z: Synapse | None = None
    bias_z_mant: np.ndarray | None = None
    bias_z_exp: int = 0
    state_lo: int = -fx.STATE_MAX
    state_hi: int = fx.STATE_MAX
    reset: str = "late"  # lif / cuba-lif: train.neurons.RESETS
    vth_mant: int = fx.VTH_MANT  # the threshold mantissa: vth = 1 is theta = vth_mant << 6 state units

    @property
    def n_in(self) -> int:
        return self.ff.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.ff.weight.shape[0]

    @property
    def theta(self) -> int:
        return fx.theta_of(self.vth_mant)

    @property
    def bias(self) -> np.ndarray:
        return fx.bias_value(self.bias_mant, self.bias_exp)

    @property
    def bias_z(self) -> np.ndarray:
        return fx.bias_value(self.bias_z_mant, self.bias_z_exp)

    def synapses(self) -> dict[str, Synapse]:
        names = ("ff", "rec", "ff_z", "rec_z")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def connections(self) -> dict[str, Synapse]:
        """Every 8-bit connection, a split weight's residual as '<name>.fine': what Lava builds and counts."""
        out = {}
        for name, syn in self.synapses().items():
            for k, part in enumerate(syn.parts()):
                out[name + ".fine" * k] = part
        return out


@dataclass
class QNetwork:
    """Hidden layers then the readout; `meta` carries model kind, dataset, channels, steps, bin rate, classes."""

    layers: list[QLayer]
    meta: dict = field(default_factory=dict)

    @property
    def hidden(self) -> list[QLayer]:
        return self.layers[:-1]

    @property
    def readout(self) -> QLayer:
        return self.layers[-1]


def zero_state(layer: QLayer, batch_shape: tuple) -> dict[str, np.ndarray]:
    z = lambda: np.zeros(batch_shape + (layer.n_out,), dtype=np.int64)
    if layer.kind == "readout":
        return {"o": z()} if layer.i_decay is None else {"i": z(), "o": z()}
    if layer.kind == "lif":
        return {"s": z(), "v": z()}
    return {"s": z(), "i": z(), "v": z()}


def layer_step(layer: QLayer, x: np.ndarray, st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One step of one layer: input x (spikes or graded counts of the layer below at this step)."""
    a = layer.ff.accumulate(x)
    if layer.kind == "readout":
        if layer.i_decay is None:
            return {"o": fx.readout_step(a, st["o"], layer.v_decay, layer.bias)}
        i, o = fx.current_readout_step(a, st["i"], st["o"], layer.i_decay, layer.v_decay, layer.bias)
        return {"i": i, "o": o}
    if layer.rec is not None:
        a = a + layer.rec.accumulate(st["s"])
    if layer.kind == "lif":
        s, v = fx.lif_step(a, st["v"], st["s"], layer.v_decay, layer.bias, layer.state_lo, layer.state_hi,
                           layer.reset, layer.theta)
        return {"s": s, "v": v}
    if layer.kind == "cuba-lif":
        s, i, v = fx.cuba_lif_step(a, st["i"], st["v"], st["s"], layer.i_decay, layer.v_decay, layer.bias,
                                     layer.state_lo, layer.state_hi, layer.reset, layer.theta)
    elif layer.kind == "spikgru":
        az = layer.ff_z.accumulate(x) + layer.rec_z.accumulate(st["s"])
        s, i, v = fx.spikgru_step(a, az, st["i"], st["v"], st["s"], layer.i_decay, layer.bias, layer.bias_z,
                                    layer.state_lo, layer.state_hi)
    elif layer.kind == "lava-cuba":
        # Lava's CUBA takes the recurrent input through the same dendrite; reset is built in
        s, i, v = fx.lava_cuba_step(a, st["i"], st["v"], layer.du,
                                    int(layer.v_decay.ravel()[0]), layer.bias)
    else:
        raise ValueError(f"unknown neuron kind {layer.kind}")
    return {"s": s, "i": i, "v": v}


def run_network(net: QNetwork, counts: np.ndarray, record_states: bool = False) -> dict:
    """Runs integer counts [B, T, C] (or [T, C]) through the network in model time.

    Returns {'spikes': [per hidden layer int array [..., T, n]], 'readout': [..., T, K],
    'states': per layer {name: [..., T, n]} when record_states}.
    """
    counts = np.clip(np.asarray(counts, dtype=np.int64), 0, fx.PAYLOAD_MAX)
    batch_shape, T = counts.shape[:-2], counts.shape[-2]
    states = [zero_state(l, batch_shape) for l in net.layers]
    spikes = [np.zeros(batch_shape + (T, l.n_out), dtype=np.int8) for l in net.hidden]
    readout = np.zeros(batch_shape + (T, net.readout.n_out), dtype=np.int64)
    trace = [{k: np.zeros(batch_shape + (T, l.n_out), dtype=np.int64) for k in zero_state(l, ())} for l in net.layers]
    for t in range(T):
        x = counts[..., t, :]
        for k, layer in enumerate(net.layers):
            states[k] = layer_step(layer, x, states[k])
            if record_states:
                for name, value in states[k].items():
                    trace[k][name][..., t, :] = value
            if layer.kind == "readout":
                readout[..., t, :] = states[k]["o"]
            else:
                x = states[k]["s"]
                spikes[k][..., t, :] = x
    out = {"spikes": spikes, "readout": readout}
    if record_states:
        out["states"] = trace
    return out


def predict(readout: np.ndarray) -> np.ndarray:
    """Class with the largest readout maximum over time (the max-over-time rule)."""
    return readout.max(axis=-2).argmax(axis=-1)
