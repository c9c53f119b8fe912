"""netx-style HDF5 network files: the writer, the validating reader and the --netx-compatible quantization.

Layout (lava-dl netx's, extended for the study's neurons)
--------------------------------------------------------
Root attributes: ``format`` = "spikaudio-netx", ``format_version`` = 1, ``netx_compatible``
(bool), ``meta`` (the QNetwork's meta as JSON: the authoritative copy; tuples come back as
lists) and, for people and other tools, plain copies of its scalar entries (``model``,
``dataset``, ``channels``, ``steps``, ``bin_hz``, ``duration``, ``n_classes``,
``class_names``). netx-compatible files add ``netx_input_message_bits`` = 8 and
``netx_reset_offset`` = 1 (how to call stock netx, see below).

``layer/0`` is netx's input entry: ``type`` = 'input', ``shape`` = [channels] (no neuron, so
netx creates no process for it). ``layer/1 .. layer/L`` are the recurrent layers
(``type`` = 'dense_rec'), ``layer/L+1`` the readout (``type`` = 'dense'). Every layer has
``shape`` = [n] and ``neuron/type``; strings are stored as netx/slayer do (1-element
fixed-length ASCII). Integers use the narrowest int type that holds them.

Our neuron types. ``weight*`` are 8-bit mantissas [n, n_in] (recurrent: [n, n]) in
[-128, 127], each with its exponent ``<key>_exp`` in [-8, 7]; ``bias*`` are 13-bit mantissas
[n] with ``<key>_exp`` in [0, 7]; semantics in docs/fixed_point.md.

- ``LIF_SOFT`` (LIF, soft reset), dense_rec: weight, weight_rec, bias (each + _exp);
  neuron/{vDecay[n], vThMant, gradedSpike, stateMin, stateMax}.
- ``CUBA_SOFT`` (the study's Cuba-LIF: soft reset, per-neuron decays, (1 - beta) i), dense_rec:
  as LIF_SOFT; neuron/{iDecay[n], vDecay[n], vThMant, gradedSpike, stateMin, stateMax}.
- ``SPIKGRU``, dense_rec: as CUBA_SOFT plus the gate's own connections weight_gate,
  weight_gate_rec and bias_gate (each + _exp); neuron/{iDecay[n], vThMant, gradedSpike,
  sigmoidTable[256], stateMin, stateMax} (the table must equal this toolchain's).
- ``LAVA_CUBA`` (Lava's CUBA, hard reset, shared decays, with our per-connection exponents:
  a --lava-cuba Cuba-LIF exported without --netx-compatible), dense_rec: as LIF_SOFT;
  neuron/{iDecay, vDecay, vThMant, refDelay, gradedSpike} (one value each).
- ``LEAKY_READOUT``, dense: weight, bias (each + _exp); neuron/{vDecay[n]}.

stateMin/stateMax (LIF_SOFT, CUBA_SOFT, SPIKGRU): the clamp of i and v in state units (the training
clip times THETA; -(2^23 - 1) <= stateMin < stateMax <= 2^23 - 1); files without them mean the 24-bit
range. iDecay/vDecay are the 12-bit decays d (factor (4096 - d)/4096); for LAVA_CUBA and CUBA,
iDecay follows netx (Lava's du = iDecay - 1, so the current decays by 4096 - iDecay) and
decays are one value per layer. vThMant is 1024 (threshold 1024 << 6) for every spiking type.

netx-compatible files (``--netx-compatible``)
---------------------------------------------
Only a Cuba-LIF trained with Lava's own CUBA (``train --lava-cuba``, QLayer kind 'lava-cuba')
exports this way. Its layers are stock netx ``CUBA`` neurons with exactly the keys stock
``lava.lib.dl.netx.hdf5.Network`` reads: ``weight``, ``weight_rec``, ``bias``,
``neuron/{type, iDecay, vDecay, vThMant, refDelay, gradedSpike}``.

- Weights: netx passes ``weight`` through ``netx.utils.optimize_weight_bits``, which (for
  integers in [-256, 254]) shifts them up, accumulates and shifts back: the dendritic input
  is exactly ``sum(weight * s)``. So ``weight`` holds mantissa << e, and e must be 0 or 1
  (one exponent shared by ``weight`` and ``weight_rec``, as netx stacks them). With
  vThMant = 1024 that is a weight step of 1/1024 threshold (2/1024 at e = 1) and |w| <= 254/1024;
  larger weights saturate and are reported. ``weight_exp`` is kept (stock netx ignores it) so
  the reader gets the 8-bit mantissas back exactly.
- Bias: netx uses ``bias_exp`` = 6, so the QLayer's bias_exp is 6 and ``bias`` is its 13-bit
  mantissa (|b| <= 4 thresholds, step 1/1024).
- Readout: netx has no leaky integrator, so the readout is a ``dense`` layer of CUBA neurons
  that never spike: iDecay = 4096 (the current is just this step's input), vDecay the
  readout's decay, vThMant = 2**18 - 1 (what slayer's own dense readout writes: above any
  24-bit voltage). Its voltage ``v`` *is* the readout o: read ``net.layers[-1].neuron.v``
  (a Monitor) and take the class with the largest maximum over time. Lava's LIF shares one
  decay per population, so the readout's per-neuron betas are replaced by their mean
  (reported when they differ).
- Running it: ``Network(path, input_message_bits=8, reset_interval=<steps per sample>,
  reset_offset=1)``. The input is graded spike counts (8 bits); netx's ``input`` entry
  without a neuron cannot say so, hence ``input_message_bits``. Every netx layer adds one
  step of delay: the spikes of hidden layer k (0-based) at Lava time step t + 2 + k (1-based;
  Monitor row t + 1 + k) are the fixed-point model's spikes at step t, the readout's at
  t + 2 + L. Layer k runs (on its bias alone) from step 1; ``reset_offset=1`` makes netx zero
  its u and v at step k + 2, just before its first input, which makes the run equal to
  ``export.qnet.run_network`` as long as no hidden neuron spikes on its bias alone before its
  reset (the exporter counts those, ``netx_warmup_spikes``) and no dendritic sum leaves 16
  bits (the spec saturates it, Lava's CPU Dense does not). netx's reset clears u and v but
  not the synapse buffers, so back-to-back samples see one step of the previous sample's
  recurrent input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse
from train.atomic import atomic_path
from train.errors import InputError

FORMAT = "spikaudio-netx"
FORMAT_VERSION = 1

# stock netx (lava-dl 0.6.0 netx/hdf5.py, netx/utils.py) and Lava's LIF
NETX_W_MIN, NETX_W_MAX = -256, 254  # optimize_weight_bits clips to this range
NETX_EXP_MIN, NETX_EXP_MAX = 0, 1  # mantissa << e must stay in that range, exactly
NETX_BIAS_EXP = 6  # get_neuron_params: 'bias_exp': 6
NETX_INPUT_MESSAGE_BITS = fx.PAYLOAD_BITS
NETX_RESET_OFFSET = 1
READOUT_I_DECAY = fx.DECAY_UNITY  # du = 4095, current decays by 4096: u = this step's input
READOUT_VTH_MANT = (1 << 18) - 1  # slayer's dense readout: threshold above any 24-bit voltage
REF_DELAY = 1  # slayer writes refDelay 1; Lava's LIF has no refractory period

_META_ATTRS = ("model", "dataset", "channels", "steps", "bin_hz", "duration", "n_classes")
_ROOT_ATTRS = {"format", "format_version", "netx_compatible", "meta", "class_names",
               "netx_input_message_bits", "netx_reset_offset", *_META_ATTRS}


# ---- low-level write helpers -------------------------------------------------------------

def _put_str(g: h5py.Group, key: str, value: str) -> None:
    """A string the way slayer writes it (netx reads value[0].decode('ascii'))."""
    g.create_dataset(key, (1,), f"S{max(10, len(value))}", [value.encode("ascii")])


def _int_dtype(arr: np.ndarray):
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    return np.int64


def _put_ints(g: h5py.Group, key: str, value) -> None:
    arr = np.asarray(value)
    if arr.dtype == bool:
        g.create_dataset(key, data=arr)
        return
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key}: integers expected, got {arr.dtype}")
    g.create_dataset(key, data=arr.astype(_int_dtype(arr)))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} cannot be stored")


def normalize_meta(meta: dict) -> dict:
    """The meta as it comes back from a file (JSON: tuples become lists, numpy scalars plain)."""
    return json.loads(json.dumps(meta, default=_json_default))


# ---- the reader's checks -----------------------------------------------------------------

class _Where:
    """Names the file and layer in every message."""

    def __init__(self, name: str, layer: int | None = None):
        self.name, self.layer = name, layer

    def error(self, msg: str) -> InputError:
        at = f"layer {self.layer}: " if self.layer is not None else ""
        return InputError(f"{self.name}: {at}{msg}")


def _keys(g: h5py.Group, expected: set[str], w: _Where, prefix: str = "", optional: set[str] = frozenset()) -> None:
    have = set(g.keys())
    missing, unknown = sorted(expected - have), sorted(have - expected - optional)
    if missing:
        raise w.error(f"missing key '{prefix}{missing[0]}'")
    if unknown:
        raise w.error(f"unknown key '{prefix}{unknown[0]}'")


def _get_str(g: h5py.Group, key: str, w: _Where) -> str:
    ds = g[key]
    if not isinstance(ds, h5py.Dataset) or ds.size != 1:
        raise w.error(f"'{key}' must be one string")
    value = ds[()]
    value = value.reshape(-1)[0] if isinstance(value, np.ndarray) else value
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise w.error(f"'{key}' is not an ASCII string") from None
    if isinstance(value, str):
        return value
    raise w.error(f"'{key}' must be a string, found {type(value).__name__}")


def _get_ints(g: h5py.Group, key: str, shape: tuple | None, lo: int, hi: int, w: _Where,
              what: str = "") -> np.ndarray:
    """An integer array of `shape` (None: a scalar, stored as () or (1,)) with values in [lo, hi]."""
    ds = g[key]
    if not isinstance(ds, h5py.Dataset):
        raise w.error(f"'{key}' must be a dataset")
    if not (np.issubdtype(ds.dtype, np.integer) or ds.dtype == bool):
        raise w.error(f"'{key}' must hold integers, found {ds.dtype}")
    arr = np.asarray(ds[()]).astype(np.int64)
    if shape is None:
        if arr.size != 1 or arr.ndim > 1:
            raise w.error(f"'{key}' must be one value, found shape {arr.shape}")
        arr = arr.reshape(())
    elif arr.shape != tuple(shape):
        raise w.error(f"'{key}' has shape {arr.shape}, expected {tuple(shape)}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = int(arr.min()) if arr.min() < lo else int(arr.max())
        raise w.error(f"'{key}' holds {bad}, outside the {what or 'allowed'} range [{lo}, {hi}]")
    return arr


def _get_int(g, key, lo, hi, w, what="") -> int:
    return int(_get_ints(g, key, None, lo, hi, w, what))


# ---- blocks: one writer/reader pair per neuron type ----------------------------------------

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
        _put_str(g, "type", self.layer_type)
        _put_ints(g, "shape", np.array([layer.n_out]))
        self.write_synapses(g, layer)
        self.write_biases(g, layer)
        ng = g.create_group("neuron")
        _put_str(ng, "type", self.neuron_type)
        self.write_neuron(ng, layer)

    def write_synapses(self, g, layer):
        for c in self.conns:
            syn = getattr(layer, c.attr)
            _put_ints(g, c.key, syn.weight)
            _put_ints(g, f"{c.key}_exp", int(syn.exp))

    def write_biases(self, g, layer):
        for mant, exp, key in self.biases:
            _put_ints(g, key, getattr(layer, mant))
            _put_ints(g, f"{key}_exp", int(getattr(layer, exp)))

    def write_neuron(self, ng, layer):
        raise NotImplementedError

    # -- reading
    def layer_keys(self) -> set[str]:
        keys = {"type", "shape", "neuron"}
        keys |= {c.key for c in self.conns} | {f"{c.key}_exp" for c in self.conns}
        keys |= {k for _, _, k in self.biases} | {f"{k}_exp" for _, _, k in self.biases}
        return keys

    def read(self, g: h5py.Group, n_in: int, w: _Where) -> QLayer:
        _keys(g, self.layer_keys(), w)
        if not isinstance(g["neuron"], h5py.Group):
            raise w.error("'neuron' must be a group")
        _keys(g["neuron"], {"type", *self.neuron_keys}, w, "neuron/", set(self.optional_neuron_keys))
        n = int(_get_ints(g, "shape", (1,), 1, 1 << 30, w)[0])
        sizes = {"n_in": n_in, "n_out": n}
        layer = QLayer(self.kind, ff=None)
        for c in self.conns:
            setattr(layer, c.attr, self.read_synapse(g, c, (sizes[c.rows], sizes[c.cols]), w))
        for mant, exp, key in self.biases:
            setattr(layer, mant, _get_ints(g, key, (n,), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX, w, "13-bit bias"))
            setattr(layer, exp, _get_int(g, f"{key}_exp", 0, fx.BIAS_EXP_MAX, w, "3-bit bias exponent"))
        self.read_neuron(g["neuron"], n, layer, w)
        return layer

    def read_synapse(self, g, c: _Conn, shape, w) -> Synapse:
        weight = _get_ints(g, c.key, shape, fx.W_MIN, fx.W_MAX, w, "8-bit weight mantissa")
        return Synapse(weight, _get_int(g, f"{c.key}_exp", fx.EXP_MIN, fx.EXP_MAX, w, "weight exponent"))

    def read_neuron(self, ng, n, layer, w):
        raise NotImplementedError


def _vth(ng, w, value=fx.VTH_MANT):
    _get_int(ng, "vThMant", value, value, w, "threshold (this toolchain's vThMant)")


def _not_graded(ng, w):
    _get_int(ng, "gradedSpike", 0, 0, w, "binary spike (gradedSpike false)")


def _per_neuron_decay(ng, key, n, w):
    return _get_ints(ng, key, (n,), 0, fx.DECAY_MAX, w, "12-bit decay")


STATE_BOUND_KEYS = ("stateMin", "stateMax")


def _write_state_bounds(ng, layer):
    lo, hi = fx.check_bounds(layer.state_lo, layer.state_hi)
    _put_ints(ng, "stateMin", lo)
    _put_ints(ng, "stateMax", hi)


def _read_state_bounds(ng, layer, w):
    """neuron/{stateMin, stateMax}: the clamp of i and v (state units); both absent (files written before
    the clamp existed) means the 24-bit range."""
    have = [k in ng for k in STATE_BOUND_KEYS]
    if not any(have):
        layer.state_lo, layer.state_hi = -fx.STATE_MAX, fx.STATE_MAX
        return
    if not all(have):
        raise w.error(f"missing key 'neuron/{STATE_BOUND_KEYS[have.index(False)]}' (stateMin and stateMax go together)")
    lo = _get_int(ng, "stateMin", -fx.STATE_MAX, fx.STATE_MAX, w, "24-bit state")
    hi = _get_int(ng, "stateMax", -fx.STATE_MAX, fx.STATE_MAX, w, "24-bit state")
    if lo >= hi:
        raise w.error(f"'neuron/stateMin' ({lo}) must be below 'neuron/stateMax' ({hi})")
    layer.state_lo, layer.state_hi = lo, hi


class LifSoftBlock(Block):
    neuron_type, kind = "LIF_SOFT", "lif"
    neuron_keys = ("vDecay", "vThMant", "gradedSpike")
    optional_neuron_keys = STATE_BOUND_KEYS

    def write_neuron(self, ng, layer):
        _put_ints(ng, "vDecay", layer.v_decay)
        _put_ints(ng, "vThMant", fx.VTH_MANT)
        _put_ints(ng, "gradedSpike", np.bool_(False))
        _write_state_bounds(ng, layer)

    def read_neuron(self, ng, n, layer, w):
        _vth(ng, w)
        _not_graded(ng, w)
        layer.v_decay = _per_neuron_decay(ng, "vDecay", n, w)
        _read_state_bounds(ng, layer, w)


class CubaSoftBlock(Block):
    neuron_type, kind = "CUBA_SOFT", "cuba-lif"
    neuron_keys = ("iDecay", "vDecay", "vThMant", "gradedSpike")
    optional_neuron_keys = STATE_BOUND_KEYS

    def write_neuron(self, ng, layer):
        _put_ints(ng, "iDecay", layer.i_decay)
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
        _put_ints(ng, "iDecay", layer.i_decay)
        _put_ints(ng, "vThMant", fx.VTH_MANT)
        _put_ints(ng, "gradedSpike", np.bool_(False))
        _put_ints(ng, "sigmoidTable", fx.SIGMOID_TABLE)
        _write_state_bounds(ng, layer)

    def read_neuron(self, ng, n, layer, w):
        _vth(ng, w)
        _not_graded(ng, w)
        table = _get_ints(ng, "sigmoidTable", (fx.SIGMOID_ENTRIES,), 0, fx.DECAY_MAX, w, "12-bit gate")
        if not np.array_equal(table, fx.SIGMOID_TABLE):
            raise w.error("'neuron/sigmoidTable' differs from this toolchain's gate table (docs/fixed_point.md)")
        layer.i_decay = _per_neuron_decay(ng, "iDecay", n, w)
        _read_state_bounds(ng, layer, w)


class LavaCubaBlock(Block):
    """Lava's CUBA with this toolchain's weights (8-bit mantissa and exponent per connection)."""

    neuron_type, kind = "LAVA_CUBA", "lava-cuba"
    neuron_keys = ("iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike")

    def write_neuron(self, ng, layer):
        _put_ints(ng, "iDecay", fx.lava_d(layer.du))  # netx: du = iDecay - 1
        _put_ints(ng, "vDecay", _one(layer.v_decay, "v_decay"))
        _put_ints(ng, "vThMant", fx.VTH_MANT)
        _put_ints(ng, "refDelay", REF_DELAY)
        _put_ints(ng, "gradedSpike", np.bool_(False))

    def read_neuron(self, ng, n, layer, w):
        _vth(ng, w)
        _not_graded(ng, w)
        _get_int(ng, "refDelay", REF_DELAY, REF_DELAY, w, "refDelay")
        layer.du = int(fx.lava_du(_get_int(ng, "iDecay", 1, fx.DECAY_UNITY, w, "Lava du + 1")))
        layer.v_decay = np.array([_get_int(ng, "vDecay", 0, fx.DECAY_MAX, w, "12-bit decay")])


class LeakyReadoutBlock(Block):
    neuron_type, kind, layer_type = "LEAKY_READOUT", "readout", "dense"
    conns = (FF,)
    neuron_keys = ("vDecay",)

    def write_neuron(self, ng, layer):
        _put_ints(ng, "vDecay", layer.v_decay)

    def read_neuron(self, ng, n, layer, w):
        layer.v_decay = _per_neuron_decay(ng, "vDecay", n, w)


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
            _put_ints(g, c.key, getattr(layer, c.attr).weight.astype(np.int64) << e)
        _put_ints(g, "weight_exp", e)

    def write_biases(self, g, layer):
        if layer.bias_exp != NETX_BIAS_EXP:
            raise ValueError(f"stock netx fixes bias_exp at {NETX_BIAS_EXP}, got {layer.bias_exp}")
        _put_ints(g, "bias", layer.bias_mant)

    def write_neuron(self, ng, layer):
        LavaCubaBlock.write_neuron(self, ng, layer)

    def read(self, g, n_in, w):
        layer = super().read(g, n_in, w)
        n = layer.n_out
        layer.bias_mant = _get_ints(g, "bias", (n,), -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX, w, "13-bit bias")
        layer.bias_exp = NETX_BIAS_EXP
        return layer

    def read_synapse(self, g, c, shape, w):
        e = _get_int(g, "weight_exp", NETX_EXP_MIN, NETX_EXP_MAX, w, "stock netx weight exponent")
        eff = _get_ints(g, c.key, shape, NETX_W_MIN, NETX_W_MAX, w, "stock netx weight")
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
        _put_ints(ng, "iDecay", READOUT_I_DECAY)
        _put_ints(ng, "vDecay", _one(layer.v_decay, "readout v_decay"))
        _put_ints(ng, "vThMant", READOUT_VTH_MANT)
        _put_ints(ng, "refDelay", REF_DELAY)
        _put_ints(ng, "gradedSpike", np.bool_(False))

    def read_neuron(self, ng, n, layer, w):
        _get_int(ng, "iDecay", READOUT_I_DECAY, READOUT_I_DECAY, w, "readout iDecay")
        _get_int(ng, "vThMant", READOUT_VTH_MANT, READOUT_VTH_MANT, w, "readout (never spiking) vThMant")
        _get_int(ng, "refDelay", REF_DELAY, REF_DELAY, w, "refDelay")
        _not_graded(ng, w)
        layer.v_decay = np.full(n, _get_int(ng, "vDecay", 0, fx.DECAY_MAX, w, "12-bit decay"), dtype=np.int64)


def _one(arr: np.ndarray, name: str) -> int:
    """The single value of a per-layer parameter (Lava's LIF shares du and dv over the population)."""
    vals = np.unique(np.asarray(arr))
    if vals.size != 1:
        raise ValueError(f"{name}: Lava's CUBA shares one value per layer, got {vals.size} different values")
    return int(vals[0])


BLOCKS: tuple[Block, ...] = (LifSoftBlock(), CubaSoftBlock(), SpikGRUBlock(), LavaCubaBlock(), LeakyReadoutBlock(),
                             NetxCubaBlock(), NetxReadoutBlock())
_BY_FILE = {(b.layer_type, b.neuron_type): b for b in BLOCKS}
_BY_KIND = {(b.kind, b.netx): b for b in BLOCKS}


def block_for(layer: QLayer, netx_compatible: bool) -> Block:
    block = _BY_KIND.get((layer.kind, netx_compatible))
    if block is None:
        if netx_compatible:
            raise InputError(f"a {layer.kind} layer has no stock netx neuron: --netx-compatible needs a Cuba-LIF "
                             "trained with Lava's CUBA (train --model cuba-lif --lava-cuba)")
        raise InputError(f"no file block for neuron kind {layer.kind!r}")
    return block


# ---- whole files ---------------------------------------------------------------------------

def _check_structure(net: QNetwork) -> None:
    if not net.layers or net.readout.kind != "readout":
        raise InputError("a network ends with its readout layer")
    if any(l.kind == "readout" for l in net.hidden):
        raise InputError("only the last layer may be a readout")
    for k in range(1, len(net.layers)):
        if net.layers[k].n_in != net.layers[k - 1].n_out:
            raise InputError(f"layer {k} takes {net.layers[k].n_in} inputs, layer {k - 1} gives {net.layers[k - 1].n_out}")


def write_network(path: str | Path, net: QNetwork, netx_compatible: bool = False) -> Path:
    """Writes `net` atomically (temp file, read back and checked, then renamed onto `path`)."""
    path = Path(path)
    _check_structure(net)
    blocks = [block_for(l, netx_compatible) for l in net.layers]
    meta_json = json.dumps(net.meta, default=_json_default, sort_keys=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["netx_compatible"] = bool(netx_compatible)
            f.attrs["meta"] = meta_json
            for key in _META_ATTRS:
                value = net.meta.get(key)
                if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    f.attrs[key] = value
            if net.meta.get("class_names"):
                f.attrs["class_names"] = np.array([str(c) for c in net.meta["class_names"]], dtype=h5py.string_dtype())
            if netx_compatible:
                f.attrs["netx_input_message_bits"] = NETX_INPUT_MESSAGE_BITS
                f.attrs["netx_reset_offset"] = NETX_RESET_OFFSET
            g0 = f.create_group("layer/0")
            _put_str(g0, "type", "input")
            _put_ints(g0, "shape", np.array([net.layers[0].n_in]))
            for i, (block, layer) in enumerate(zip(blocks, net.layers), start=1):
                try:
                    block.write(f.create_group(f"layer/{i}"), layer)
                except ValueError as exc:
                    raise InputError(f"{path}: layer {i}: {exc}") from None
        read_network(tmp, name=str(path))  # the file must pass its own reader
    return path


def read_network(path: str | Path, name: str | None = None) -> QNetwork:
    """Reads and validates a file; anything unknown, missing, mis-shaped or out of range is an InputError
    naming the file, the layer and the key."""
    path = Path(path)
    w = _Where(name or str(path))
    if path.is_dir():
        raise w.error("is a directory; name an exported network file (.h5)")
    if not path.is_file():
        raise w.error("no such file")
    if not h5py.is_hdf5(path):
        raise w.error("not an HDF5 file (truncated, damaged or another format)")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, w)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise w.error(f"cannot be read, truncated or damaged? ({exc.__class__.__name__}: {exc})") from None


def _read(f: h5py.File, w: _Where) -> QNetwork:
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise w.error(f"not a {FORMAT} file (format attribute {fmt!r}; a stock netx file or another HDF5?)")
    version = f.attrs.get("format_version")
    if version is None or not np.issubdtype(np.asarray(version).dtype, np.integer) or int(version) != FORMAT_VERSION:
        raise w.error(f"format version {version!r}, this reader reads version {FORMAT_VERSION}")
    unknown = sorted(set(f.attrs) - _ROOT_ATTRS)
    if unknown:
        raise w.error(f"unknown root attribute '{unknown[0]}'")
    try:
        meta = json.loads(f.attrs.get("meta", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise w.error("root attribute 'meta' is not JSON") from None
    if not isinstance(meta, dict):
        raise w.error("root attribute 'meta' must be a JSON object")
    netx = bool(f.attrs.get("netx_compatible", False))
    if set(f.keys()) != {"layer"}:
        extra = sorted(set(f.keys()) - {"layer"})
        raise w.error(f"unknown root key '{extra[0]}'" if extra else "no 'layer' group")
    lg = f["layer"]
    n = len(lg)
    if set(lg.keys()) != {str(i) for i in range(n)}:
        raise w.error(f"layers must be named 0..{n - 1}, found {sorted(lg.keys(), key=str)}")
    if n < 2:
        raise w.error("needs an input entry and at least a readout layer")
    w0 = _Where(w.name, 0)
    g0 = lg["0"]
    _keys(g0, {"type", "shape"}, w0)
    if _get_str(g0, "type", w0) != "input":
        raise w0.error("the first layer must be netx's 'input' entry")
    channels = int(_get_ints(g0, "shape", (1,), 1, 1 << 30, w0)[0])
    layers, n_in = [], channels
    for i in range(1, n):
        wi = _Where(w.name, i)
        g = lg[str(i)]
        if not isinstance(g, h5py.Group):
            raise wi.error("must be a group")
        for key in ("type", "neuron"):
            if key not in g:
                raise wi.error(f"missing key '{key}'")
        if not isinstance(g["neuron"], h5py.Group) or "type" not in g["neuron"]:
            raise wi.error("missing key 'neuron/type'")
        ltype, ntype = _get_str(g, "type", wi), _get_str(g["neuron"], "type", wi)
        if ltype not in ("dense", "dense_rec"):
            raise wi.error(f"unknown layer type '{ltype}' (this toolchain writes dense_rec and dense)")
        block = _BY_FILE.get((ltype, ntype))
        if block is None:
            known = ", ".join(sorted({f"{b.neuron_type} ({b.layer_type})" for b in BLOCKS}))
            raise wi.error(f"unknown neuron type '{ntype}' in a {ltype} layer (known: {known})")
        if block.netx != netx:
            raise wi.error(f"neuron type '{ntype}' in a file whose netx_compatible attribute is {netx}")
        last = i == n - 1
        if (block.kind == "readout") != last:
            raise wi.error("the readout must be the last layer" if not last
                           else f"the last layer must be a readout, found {ntype}")
        layer = block.read(g, n_in, wi)
        layers.append(layer)
        n_in = layer.n_out
    net = QNetwork(layers, meta)
    for key, value in (("channels", channels), ("n_in", channels), ("n_classes", net.readout.n_out),
                       ("layers", len(net.hidden))):
        if meta.get(key) is not None and meta[key] != value:
            raise w.error(f"meta {key} = {meta[key]!r} but the layers say {value}")
    return net


# ---- --netx-compatible quantization ----------------------------------------------------------

def _netx_synapse(w: np.ndarray, exp: int, layer: int, name: str, report) -> Synapse:
    mant, sat = fx.quantize_weight(w, exp)
    report.add(layer, name, exp, sat, w, fx.dequantize_weight(mant, exp))
    return Synapse(mant, exp)


def netx_exponent(*ws: np.ndarray) -> int:
    """One exponent for all of a layer's weights (netx stacks weight and weight_rec), in [0, 1]."""
    e = fx.weight_exponent(np.concatenate([np.abs(np.asarray(w, dtype=np.float64)).ravel() for w in ws]))
    return int(np.clip(e, NETX_EXP_MIN, NETX_EXP_MAX))


def _netx_bias(b: np.ndarray, layer: int, report) -> np.ndarray:
    scale = 1 << NETX_BIAS_EXP
    m = np.rint(np.asarray(b, dtype=np.float64) * fx.THETA / scale)
    sat = int(np.sum((m < -fx.BIAS_MANT_MAX - 1) | (m > fx.BIAS_MANT_MAX)))
    m = np.clip(m, -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX).astype(np.int64)
    report.add(layer, "b", NETX_BIAS_EXP, sat, b, fx.bias_value(m, NETX_BIAS_EXP) / fx.THETA)
    return m


def quantize_for_netx(ckpt: dict):
    """A lava-cuba checkpoint -> (QNetwork, QuantReport, notes) that stock netx runs exactly.

    Differs from export.quantize only where stock netx needs it: one weight exponent per layer in
    [0, 1], bias_exp 6, and one voltage decay for the readout (the mean of its betas)."""
    from export.quantize import QuantReport, quantize_checkpoint
    from train.models import ModelConfig, model_from_checkpoint

    cfg = ModelConfig(**ckpt["model"])
    if cfg.kind != "cuba-lif" or not cfg.options.get("lava_cuba"):
        what = "Cuba-LIF with the study's dynamics" if cfg.kind == "cuba-lif" else f"{cfg.kind} model"
        raise InputError(f"{ckpt.get('path', 'checkpoint')}: --netx-compatible needs a Cuba-LIF trained with Lava's "
                         f"CUBA (train --model cuba-lif --lava-cuba); this is a {what}")
    base, _ = quantize_checkpoint(ckpt)  # validates and gives the meta
    model = model_from_checkpoint(ckpt)
    report, notes, layers = QuantReport(), [], []
    for l, block in enumerate(model.hidden_layers):
        p = block.export_params()
        e = netx_exponent(p["W"], p["U"])
        layers.append(QLayer("lava-cuba", _netx_synapse(p["W"], e, l, "W", report),
                             _netx_synapse(p["U"], e, l, "U", report), bias_mant=_netx_bias(p["b"], l, report),
                             bias_exp=NETX_BIAS_EXP, du=int(np.ravel(fx.lava_du(fx.decay_to_int(p["alpha"])))[0]),
                             v_decay=fx.decay_to_int(p["beta"])))
    p = model.readout.export_params()
    l = len(layers)
    beta = np.asarray(p["beta"], dtype=np.float64)
    dv = int(fx.decay_to_int(beta.mean()))
    shared = (fx.DECAY_UNITY - dv) / fx.DECAY_UNITY
    report.add(l, "beta", 0, 0, beta, np.full_like(beta, shared))
    if np.unique(fx.decay_to_int(beta)).size > 1:
        notes.append(f"stock netx shares one voltage decay per layer: the readout's betas "
                     f"({beta.min():.4f} .. {beta.max():.4f}) are replaced by their mean ({shared:.4f}); "
                     f"largest change {np.abs(beta - shared).max():.4f}")
    layers.append(QLayer("readout", _netx_synapse(p["W"], netx_exponent(p["W"]), l, "W", report),
                         bias_mant=_netx_bias(p["b"], l, report), bias_exp=NETX_BIAS_EXP,
                         v_decay=np.full(beta.shape, dv, dtype=np.int64)))
    net = QNetwork(layers, dict(base.meta, netx_compatible=True))
    return net, report, notes


def netx_warmup_spikes(net: QNetwork) -> list[tuple[int, int]]:
    """(layer, neurons) of hidden layers that spike on their bias alone in the k + 1 steps stock netx runs
    layer k before its first input (and its reset): there a netx run may differ from run_network."""
    out = []
    for k, layer in enumerate(net.hidden):
        if layer.kind != "lava-cuba":
            continue
        u = v = np.zeros(layer.n_out, dtype=np.int64)
        fired = np.zeros(layer.n_out, dtype=bool)
        for _ in range(k + 1):
            s, u, v = fx.lava_cuba_step(np.zeros(layer.n_out, dtype=np.int64), u, v, layer.du,
                                        int(layer.v_decay.ravel()[0]), layer.bias)
            fired |= s > 0
        if fired.any():
            out.append((k, int(fired.sum())))
    return out
