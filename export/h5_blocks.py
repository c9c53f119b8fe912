"""One writer/reader pair per neuron type of the netx-style HDF5 format (the types are listed in export/netx_h5.py,
the stock netx ones in export/netx_stock.py)."""
from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from common.errors import InputError
from export import fixed_point as fx
from export.h5_fields import Where, check_keys, get_int, get_ints, get_str, put_ints, put_str
from export.netx_stock import (NETX_BIAS_EXP, NETX_EXP_MAX, NETX_EXP_MIN, NETX_W_MAX, NETX_W_MIN, READOUT_I_DECAY,
                               READOUT_VTH_MANT, REF_DELAY)
from export.qnet import QLayer, Synapse


@dataclass(frozen=True)
class _Conn:
    attr: str  # QLayer field
    key: str  # file key
    rows: str = "n_out"  # weight shape [n, cols]; cols = 'n_in' or 'n_out' (recurrent)
    cols: str = "n_in"


FF = _Conn("ff", "weight")
REC = _Conn("rec", "weight_rec", cols="n_out")
FF_Z = _Conn("ff_z", "weight_gate")
REC_Z = _Conn("rec_z", "weight_gate_rec", cols="n_out")


class Block:
    """One neuron type: writes a QLayer into its layer group and reads it back, checking everything."""

    neuron_type = ""
    layer_type = "dense_rec"
    kind = ""
    netx = False
    conns: tuple[_Conn, ...] = (FF, REC)
    biases: tuple[tuple[str, str, str], ...] = (("bias_mant", "bias_exp", "bias"),)  # mantissa, exp, key
    neuron_keys: tuple[str, ...] = ()
    optional_neuron_keys: tuple[str, ...] = ()

    # -- writing
    def write(self, g: h5py.Group, layer: QLayer) -> None:
        put_str(g, "type", self.layer_type)
        put_ints(g, "shape", np.array([layer.n_out]))
        self.write_synapses(g, layer)
        self.write_biases(g, layer)
        ng = g.create_group("neuron")
        put_str(ng, "type", self.neuron_type)
        self.write_neuron(ng, layer)

    def write_synapses(self, g, layer):
        for c in self.conns:
            syn = getattr(layer, c.attr)
            put_ints(g, c.key, syn.weight)
            put_ints(g, f"{c.key}_exp", int(syn.exp))
            if syn.fine is not None:  # a split weight's residual connection
                put_ints(g, f"{c.key}_fine", syn.fine.weight)
                put_ints(g, f"{c.key}_fine_exp", int(syn.fine.exp))

    def write_biases(self, g, layer):
        for mant, exp, key in self.biases:
            put_ints(g, key, getattr(layer, mant))
            put_ints(g, f"{key}_exp", int(getattr(layer, exp)))

    def write_neuron(self, ng, layer):
        raise NotImplementedError

    # -- reading
    def layer_keys(self) -> set[str]:
        keys = {"type", "shape", "neuron"}
        keys |= {c.key for c in self.conns} | {f"{c.key}_exp" for c in self.conns}
        keys |= {k for _, _, k in self.biases} | {f"{k}_exp" for _, _, k in self.biases}
        return keys

    def optional_layer_keys(self) -> set[str]:
        """A split weight's residual: <key>_fine and <key>_fine_exp."""
        return set() if self.netx else {f"{c.key}_fine{x}" for c in self.conns for x in ("", "_exp")}

    def read(self, g: h5py.Group, n_in: int, w: Where) -> QLayer:
        check_keys(g, self.layer_keys(), w, optional=self.optional_layer_keys())
        if not isinstance(g["neuron"], h5py.Group):
            raise w.error("'neuron' must be a group")
        check_keys(g["neuron"], {"type", *self.neuron_keys}, w, "neuron/", set(self.optional_neuron_keys))
        n = int(get_ints(g, "shape", (1,), 1, 1 << 30, w)[0])
        sizes = {"n_in": n_in, "n_out": n}
        layer = QLayer(self.kind, ff=None)
        for c in self.conns:
            setattr(layer, c.attr, self.read_synapse(g, c, (sizes[c.rows], sizes[c.cols]), w))
        for mant, exp, key in self.biases:
            setattr(layer, mant, get_ints(g, key, (n,), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX, w, "13-bit bias"))
            setattr(layer, exp, get_int(g, f"{key}_exp", 0, fx.BIAS_EXP_MAX, w, "3-bit bias exponent"))
        self.read_neuron(g["neuron"], n, layer, w)
        return layer

    def read_synapse(self, g, c: _Conn, shape, w, key: str | None = None) -> Synapse:
        key = key or c.key
        weight = get_ints(g, key, shape, fx.W_MIN, fx.W_MAX, w, "8-bit weight mantissa")
        syn = Synapse(weight, get_int(g, f"{key}_exp", fx.EXP_MIN, fx.EXP_MAX, w, "weight exponent"))
        fine = f"{c.key}_fine"
        if key == c.key and (fine in g) != (f"{fine}_exp" in g):
            raise w.error(f"'{fine}' and '{fine}_exp' go together")
        if key == c.key and fine in g:
            syn.fine = self.read_synapse(g, c, shape, w, fine)
        return syn

    def read_neuron(self, ng, n, layer, w):
        raise NotImplementedError


def _vth(ng, w, value=fx.VTH_MANT):
    get_int(ng, "vThMant", value, value, w, "threshold (this toolchain's vThMant)")


def _layer_vth(ng, layer, w):
    """vThMant of a LIF_SOFT / CUBA_SOFT layer (and, optional, a LEAKY_READOUT's: its state units): 1..1024."""
    layer.vth_mant = get_int(ng, "vThMant", 1, fx.VTH_MANT, w, "threshold mantissa") if "vThMant" in ng \
        else fx.VTH_MANT


def _not_graded(ng, w):
    get_int(ng, "gradedSpike", 0, 0, w, "binary spike (gradedSpike false)")


def _per_neuron_decay(ng, key, n, w):
    return get_ints(ng, key, (n,), 0, fx.DECAY_MAX, w, "12-bit decay")


STATE_BOUND_KEYS = ("stateMin", "stateMax")
RESET_KEY = "resetMode"
RESETS = ("late", "subtract", "zero")  # train.neurons.RESETS


def _write_reset(ng, layer):
    """neuron/resetMode, only for the same-step resets: a file without it is the study's late reset."""
    if layer.reset != "late":
        put_str(ng, RESET_KEY, layer.reset)


def _read_reset(ng, layer, w):
    layer.reset = get_str(ng, RESET_KEY, w) if RESET_KEY in ng else "late"
    if layer.reset not in RESETS:
        raise w.error(f"'neuron/{RESET_KEY}' is {layer.reset!r}, expected one of {', '.join(RESETS)}")


def _write_state_bounds(ng, layer):
    lo, hi = fx.check_bounds(layer.state_lo, layer.state_hi)
    put_ints(ng, "stateMin", lo)
    put_ints(ng, "stateMax", hi)


def _read_state_bounds(ng, layer, w):
    """neuron/{stateMin, stateMax}: the clamp of i and v (state units); both absent (files written before
    the clamp existed) means the 24-bit range."""
    have = [k in ng for k in STATE_BOUND_KEYS]
    if not any(have):
        layer.state_lo, layer.state_hi = -fx.STATE_MAX, fx.STATE_MAX
        return
    if not all(have):
        raise w.error(f"missing key 'neuron/{STATE_BOUND_KEYS[have.index(False)]}' (stateMin and stateMax go together)")
    lo = get_int(ng, "stateMin", -fx.STATE_MAX, fx.STATE_MAX, w, "24-bit state")
    hi = get_int(ng, "stateMax", -fx.STATE_MAX, fx.STATE_MAX, w, "24-bit state")
    if lo >= hi:
        raise w.error(f"'neuron/stateMin' ({lo}) must be below 'neuron/stateMax' ({hi})")
    layer.state_lo, layer.state_hi = lo, hi


class LifSoftBlock(Block):
    neuron_type, kind = "LIF_SOFT", "lif"
    neuron_keys = ("vDecay", "vThMant", "gradedSpike")
    optional_neuron_keys = STATE_BOUND_KEYS + (RESET_KEY,)

    def write_neuron(self, ng, layer):
        put_ints(ng, "vDecay", layer.v_decay)
        put_ints(ng, "vThMant", layer.vth_mant)
        put_ints(ng, "gradedSpike", np.bool_(False))
        _write_state_bounds(ng, layer)
        _write_reset(ng, layer)

    def read_neuron(self, ng, n, layer, w):
        _layer_vth(ng, layer, w)
        _not_graded(ng, w)
        layer.v_decay = _per_neuron_decay(ng, "vDecay", n, w)
        _read_state_bounds(ng, layer, w)
        _read_reset(ng, layer, w)


class CubaSoftBlock(Block):
    neuron_type, kind = "CUBA_SOFT", "cuba-lif"
    neuron_keys = ("iDecay", "vDecay", "vThMant", "gradedSpike")
    optional_neuron_keys = STATE_BOUND_KEYS + (RESET_KEY,)

    def write_neuron(self, ng, layer):
        put_ints(ng, "iDecay", layer.i_decay)
        LifSoftBlock.write_neuron(self, ng, layer)

    def read_neuron(self, ng, n, layer, w):
        LifSoftBlock.read_neuron(self, ng, n, layer, w)
        layer.i_decay = _per_neuron_decay(ng, "iDecay", n, w)


class SpikGRUBlock(Block):
    neuron_type, kind = "SPIKGRU", "spikgru"
    conns = (FF, REC, FF_Z, REC_Z)
    biases = (("bias_mant", "bias_exp", "bias"), ("bias_z_mant", "bias_z_exp", "bias_gate"))
    neuron_keys = ("iDecay", "vThMant", "gradedSpike", "sigmoidTable")
    optional_neuron_keys = STATE_BOUND_KEYS

    def write_neuron(self, ng, layer):
        put_ints(ng, "iDecay", layer.i_decay)
        put_ints(ng, "vThMant", fx.VTH_MANT)
        put_ints(ng, "gradedSpike", np.bool_(False))
        put_ints(ng, "sigmoidTable", fx.SIGMOID_TABLE)
        _write_state_bounds(ng, layer)

    def read_neuron(self, ng, n, layer, w):
        _vth(ng, w)
        _not_graded(ng, w)
        table = get_ints(ng, "sigmoidTable", (fx.SIGMOID_ENTRIES,), 0, fx.DECAY_MAX, w, "12-bit gate")
        if not np.array_equal(table, fx.SIGMOID_TABLE):
            raise w.error("'neuron/sigmoidTable' differs from this toolchain's gate table (docs/fixed_point.md)")
        layer.i_decay = _per_neuron_decay(ng, "iDecay", n, w)
        _read_state_bounds(ng, layer, w)


class LavaCubaBlock(Block):
    """Lava's CUBA with this toolchain's weights (8-bit mantissa and exponent per connection)."""

    neuron_type, kind = "LAVA_CUBA", "lava-cuba"
    neuron_keys = ("iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike")

    def write_neuron(self, ng, layer):
        put_ints(ng, "iDecay", fx.lava_d(layer.du))  # netx: du = iDecay - 1
        put_ints(ng, "vDecay", _one(layer.v_decay, "v_decay"))
        put_ints(ng, "vThMant", fx.VTH_MANT)
        put_ints(ng, "refDelay", REF_DELAY)
        put_ints(ng, "gradedSpike", np.bool_(False))

    def read_neuron(self, ng, n, layer, w):
        _vth(ng, w)
        _not_graded(ng, w)
        get_int(ng, "refDelay", REF_DELAY, REF_DELAY, w, "refDelay")
        layer.du = int(fx.lava_du(get_int(ng, "iDecay", 1, fx.DECAY_UNITY, w, "Lava du + 1")))
        layer.v_decay = np.array([get_int(ng, "vDecay", 0, fx.DECAY_MAX, w, "12-bit decay")])


class LifSoftDenseBlock(LifSoftBlock):
    """LIF_SOFT without recurrence (an imported NIR graph's output layer): a dense layer, no weight_rec."""
    layer_type, conns = "dense", (FF,)


class CubaSoftDenseBlock(CubaSoftBlock):
    layer_type, conns = "dense", (FF,)


class LeakyReadoutBlock(Block):
    """neuron/iDecay, when present, is the current stage (fixed_point.current_readout_step)."""
    neuron_type, kind, layer_type = "LEAKY_READOUT", "readout", "dense"
    conns = (FF,)
    neuron_keys = ("vDecay",)
    optional_neuron_keys = ("iDecay", "vThMant")

    def write_neuron(self, ng, layer):
        put_ints(ng, "vDecay", layer.v_decay)
        if layer.i_decay is not None:
            put_ints(ng, "iDecay", layer.i_decay)
        if layer.vth_mant != fx.VTH_MANT:
            put_ints(ng, "vThMant", layer.vth_mant)

    def read_neuron(self, ng, n, layer, w):
        _layer_vth(ng, layer, w)
        layer.v_decay = _per_neuron_decay(ng, "vDecay", n, w)
        layer.i_decay = _per_neuron_decay(ng, "iDecay", n, w) if "iDecay" in ng else None


class NetxCubaBlock(Block):
    """Stock netx CUBA (dense_rec): effective integer weights, one exponent, bias_exp 6."""

    neuron_type, kind, netx = "CUBA", "lava-cuba", True
    neuron_keys = ("iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike")
    biases = ()

    def layer_keys(self):
        return {"type", "shape", "neuron", "bias", "weight_exp", *(c.key for c in self.conns)}

    def write_synapses(self, g, layer):
        exps = {getattr(layer, c.attr).exp for c in self.conns}
        if len(exps) != 1 or not NETX_EXP_MIN <= next(iter(exps)) <= NETX_EXP_MAX:
            raise ValueError(f"stock netx needs one weight exponent in [{NETX_EXP_MIN}, {NETX_EXP_MAX}] "
                             f"per layer, got {sorted(exps)}")
        e = exps.pop()
        for c in self.conns:
            put_ints(g, c.key, getattr(layer, c.attr).weight.astype(np.int64) << e)
        put_ints(g, "weight_exp", e)

    def write_biases(self, g, layer):
        if layer.bias_exp != NETX_BIAS_EXP:
            raise ValueError(f"stock netx fixes bias_exp at {NETX_BIAS_EXP}, got {layer.bias_exp}")
        put_ints(g, "bias", layer.bias_mant)

    def write_neuron(self, ng, layer):
        LavaCubaBlock.write_neuron(self, ng, layer)

    def read(self, g, n_in, w):
        layer = super().read(g, n_in, w)
        n = layer.n_out
        layer.bias_mant = get_ints(g, "bias", (n,), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX, w, "13-bit bias")
        layer.bias_exp = NETX_BIAS_EXP
        return layer

    def read_synapse(self, g, c, shape, w):
        e = get_int(g, "weight_exp", NETX_EXP_MIN, NETX_EXP_MAX, w, "stock netx weight exponent")
        eff = get_ints(g, c.key, shape, NETX_W_MIN, NETX_W_MAX, w, "stock netx weight")
        mant = eff >> e
        if not np.array_equal(mant << e, eff):
            raise w.error(f"'{c.key}' holds values that are not multiples of 2**weight_exp = {1 << e}")
        if mant.size and (mant.min() < fx.W_MIN or mant.max() > fx.W_MAX):
            raise w.error(f"'{c.key}' >> weight_exp leaves the 8-bit mantissa range")
        return Synapse(mant, e)

    def read_neuron(self, ng, n, layer, w):
        LavaCubaBlock.read_neuron(self, ng, n, layer, w)


class NetxReadoutBlock(NetxCubaBlock):
    """Stock netx CUBA (dense) that never spikes: the leaky readout, its voltage is o."""

    kind, layer_type = "readout", "dense"
    conns = (FF,)

    def write_neuron(self, ng, layer):
        put_ints(ng, "iDecay", READOUT_I_DECAY)
        put_ints(ng, "vDecay", _one(layer.v_decay, "readout v_decay"))
        put_ints(ng, "vThMant", READOUT_VTH_MANT)
        put_ints(ng, "refDelay", REF_DELAY)
        put_ints(ng, "gradedSpike", np.bool_(False))

    def read_neuron(self, ng, n, layer, w):
        get_int(ng, "iDecay", READOUT_I_DECAY, READOUT_I_DECAY, w, "readout iDecay")
        get_int(ng, "vThMant", READOUT_VTH_MANT, READOUT_VTH_MANT, w, "readout (never spiking) vThMant")
        get_int(ng, "refDelay", REF_DELAY, REF_DELAY, w, "refDelay")
        _not_graded(ng, w)
        layer.v_decay = np.full(n, get_int(ng, "vDecay", 0, fx.DECAY_MAX, w, "12-bit decay"), dtype=np.int64)


def _one(arr: np.ndarray, name: str) -> int:
    """The single value of a per-layer parameter (Lava's LIF shares du and dv over the population)."""
    vals = np.unique(np.asarray(arr))
    if vals.size != 1:
        raise ValueError(f"{name}: Lava's CUBA shares one value per layer, got {vals.size} different values")
    return int(vals[0])


BLOCKS: tuple[Block, ...] = (LifSoftBlock(), CubaSoftBlock(), SpikGRUBlock(), LavaCubaBlock(), LeakyReadoutBlock(),
                             NetxCubaBlock(), NetxReadoutBlock(), LifSoftDenseBlock(), CubaSoftDenseBlock())
_BY_FILE = {(b.layer_type, b.neuron_type): b for b in BLOCKS}
_BY_KIND = {(b.kind, b.netx, REC in b.conns or b.kind == "readout"): b for b in BLOCKS}


def by_file(layer_type: str, neuron_type: str) -> Block | None:
    """The block that reads a layer of this (type, neuron/type), or None."""
    return _BY_FILE.get((layer_type, neuron_type))


def block_for(layer: QLayer, netx_compatible: bool) -> Block:
    block = _BY_KIND.get((layer.kind, netx_compatible, layer.rec is not None or layer.kind == "readout"))
    if block is None:
        if netx_compatible:
            raise InputError(f"a {layer.kind} layer has no stock netx neuron: --netx-compatible needs a Cuba-LIF "
                             "trained with Lava's CUBA (train --model cuba-lif --lava-cuba)")
        raise InputError(f"no file block for neuron kind {layer.kind!r}")
    return block


