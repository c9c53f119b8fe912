"""The fast engine's arithmetic: the integer network over a whole batch at once.

Same arithmetic as ``export.qnet.run_network`` (docs/fixed_point.md), organised for speed:

* layer-major: a layer's feed-forward dendrites (W x, and Wz x for SpikGRU) depend only on the
  layer below, so they are one matrix product over all samples and steps (the graded input as a
  sparse matrix straight from the split's event indices); only the recurrent part (U s_{t-1},
  Uz s_{t-1}) and the neuron update run step by step, batched over samples ([T, B, n] layout);
* integers held in floating point, where every operation is exact: products of a 24-bit state
  and a 12-bit factor stay below 2**37 in float64, and x * (4096 - d) / 4096 rounded toward zero
  is ``trunc(x * f)`` with f = (4096 - d) / 4096 exactly representable; dendritic sums of binary
  spikes and 8-bit weights (and the input's, whenever its largest possible sum allows) stay below
  2**24 and run in float32, the recurrent ones in torch (pre-scaled weights, one addmm per step);
  shifts are multiplications by powers of two (floor for negative exponents), saturation is
  clamping (skipped for a connection no spike pattern can saturate).

tests/test_sim.py checks it spike for spike (and state for state) against run_network, the
PyTorch fixed-point forward (export.qat.run_fixed_point) and the Lava run.

One of four forms of the fixed-point arithmetic: export/fixed_point.py is the specification; this form is
tested equal to it (tests/test_sim.py) and reproduces the conformance sequences every form must
(tests/test_fixed_point_forms.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse
from train.data import ranges

THETA = float(fx.THETA)
SAT = float(fx.STATE_MAX)
ACC_MIN, ACC_MAX = float(fx.ACC_MIN), float(fx.ACC_MAX)
ACT = float(1 << fx.ACT_SHIFT)
UNITY = float(fx.DECAY_UNITY)
F32_EXACT = float(1 << 24)  # integers below this are exact in float32
SIGMOID_Z = fx.SIGMOID_TABLE.astype(np.float64) / UNITY  # z / 4096, exact
HALF_TABLE = fx.SIGMOID_ENTRIES // 2
SYN_ORDER = ("ff", "rec", "ff_z", "rec_z")


@dataclass
class Inputs:
    """A batch's graded input as a sparse matrix [T * B, C] (row t * B + b), counts clipped to 8 bits."""

    csr: sp.csr_matrix
    B: int
    T: int
    C: int

    @property
    def events(self) -> int:
        return int(self.csr.data.sum(dtype=np.int64))

    @property
    def peak_sum(self) -> float:
        """The largest input sum of one sample at one step (bounds the input dendrite)."""
        return float(np.asarray(self.csr.sum(axis=1)).max()) if self.csr.nnz else 0.0

    @classmethod
    def from_dense(cls, counts: np.ndarray) -> "Inputs":
        """counts [B, T, C] of non-negative integers (counts above 255 clip to 255)."""
        counts = np.asarray(counts)
        B, T, C = counts.shape
        b, t, c = np.nonzero(counts)
        data = np.minimum(counts[b, t, c], fx.PAYLOAD_MAX).astype(np.float32)
        if data.size and data.min() < 0:
            raise ValueError("spike counts must be non-negative")
        csr = sp.csr_matrix((data, (t * B + b, c)), shape=(T * B, C))
        return cls(csr, B, T, C)

    @classmethod
    def from_split(cls, split, index: np.ndarray) -> "Inputs":
        """Samples `index` of a binned split (train.binning.BinnedSet), straight from its event indices."""
        index = np.asarray(index, dtype=np.int64)
        B, T, C = len(index), split.spec.n_steps, split.spec.n_channels
        starts, stops = split.offsets[index], split.offsets[index + 1]
        flat = split.flat[ranges(starts, stops)]
        owner = np.repeat(np.arange(B), stops - starts)
        step, channel = np.divmod(flat, C)
        coo = sp.coo_matrix((np.ones(len(flat), dtype=np.float32), (step * B + owner, channel)), shape=(T * B, C))
        csr = coo.tocsr()  # sums repeated (step, channel) events into counts
        csr.sum_duplicates()
        np.minimum(csr.data, fx.PAYLOAD_MAX, out=csr.data)
        return cls(csr, B, T, C)

    def dense(self) -> np.ndarray:
        """[B, T, C] int64, as SampleSource and run_network take them."""
        return self.csr.toarray().reshape(self.T, self.B, self.C).transpose(1, 0, 2).astype(np.int64)


# ------------------------------------------------------------------------------------------ kernels
def _shift_clip(acc: np.ndarray, exp: int) -> np.ndarray:
    """In place: acc << exp (floor for exp < 0), saturated to 16 bits."""
    if exp > 0:
        acc *= float(1 << exp)
    elif exp < 0:
        acc *= 1.0 / float(1 << -exp)
        np.floor(acc, out=acc)
    np.clip(acc, ACC_MIN, ACC_MAX, out=acc)
    return acc


def ff_dendrite(syn, x, peak_sum: float, out_dtype=np.float64) -> np.ndarray:
    """fx.dendrite of a feed-forward connection over a whole batch, as [T, B, n] of out_dtype.

    x: Inputs (graded counts) or float32 spikes [T, B, m]; peak_sum bounds the sum of inputs at one
    step, so that float32 is used only where every partial sum is exact (below 2**24)."""
    w = syn.weight
    top = float(np.abs(w).max()) if w.size else 0.0
    dtype = np.float32 if top * peak_sum < F32_EXACT else np.float64
    wt = w.T.astype(dtype)
    if isinstance(x, Inputs):
        acc = np.asarray(x.csr.astype(dtype) @ wt).reshape(x.T, x.B, -1)
    else:
        T, B, m = x.shape
        acc = np.matmul(x.reshape(T * B, m).astype(dtype), wt).reshape(T, B, -1)
    return _shift_clip(acc, syn.exp).astype(out_dtype, copy=False)


def _factor(d) -> np.ndarray:
    """(4096 - d) / 4096 as float64 (exact): decay(x, d) = trunc(x * factor)."""
    return (UNITY - np.asarray(d, dtype=np.float64)) / UNITY


class _Rec:
    """A recurrent connection, one spike vector [B, n] at a time: returns its dendrite << 6 as float32.

    Weights are pre-scaled by 2**(exp + 6) when exp >= 0 (every partial sum is a multiple of
    2**(exp + 6) below 2**14 of them: exact in float32); the 16-bit saturation is skipped when no
    spike pattern can reach it."""

    def __init__(self, syn, B: int):
        w = syn.weight.astype(np.float64)
        e = int(syn.exp)
        pos, neg = np.clip(w, 0, None).sum(axis=1), np.clip(w, None, 0).sum(axis=1)
        self.floor = e < 0
        scale = 2.0 ** e
        reach_hi, reach_lo = (pos.max() if pos.size else 0.0) * scale, (neg.min() if neg.size else 0.0) * scale
        self.clip = reach_hi > ACC_MAX or reach_lo < ACC_MIN
        if not self.floor:
            scale *= ACT  # shift and << 6 folded into the weights
        self.wt = torch.from_numpy(np.ascontiguousarray((w * scale).T.astype(np.float32)))
        self.out = np.empty((B, syn.weight.shape[0]), dtype=np.float32)
        self.out_t = torch.from_numpy(self.out)
        self.lo, self.hi = (ACC_MIN, ACC_MAX) if self.floor else (ACC_MIN * ACT, ACC_MAX * ACT)
        self.simple = not (self.floor or self.clip)

    def plus(self, s_t: torch.Tensor, c: np.ndarray) -> np.ndarray:
        """The dendrite of s_t << 6, plus c (float32 [B, n], sum below 2**24: exact), in one call when it can."""
        if self.simple:
            torch.addmm(torch.from_numpy(c), s_t, self.wt, out=self.out_t)
            return self.out
        out = self(s_t)
        np.add(out, c, out=out)
        return out

    def __call__(self, s_t: torch.Tensor) -> np.ndarray:
        """s_t: the spikes [B, n] as a float32 tensor; the result is overwritten by the next call."""
        torch.mm(s_t, self.wt, out=self.out_t)
        if self.floor:
            np.floor(self.out, out=self.out)
        if self.clip:
            self.out_t.clamp_(self.lo, self.hi)
        if self.floor:
            self.out *= ACT
        return self.out


def run_hidden(layer: QLayer, x, peak_sum: float, trace: dict | None = None) -> np.ndarray:
    """One hidden layer over a whole batch: input x (Inputs, or spikes [T, B, m]) -> spikes [T, B, n] bool.

    trace: if a dict, filled with the states [T, B, n] (float64) for checks.
    Per step, the feed-forward part of the input (64 W x + bias, float32: below 2**23, exact) plus the
    recurrent part (float32, exact) is added to the float64 states."""
    B = x.B if isinstance(x, Inputs) else x.shape[1]
    C = ff_dendrite(layer.ff, x, peak_sum, np.float32)
    C *= ACT
    if layer.kind != "lava-cuba":
        C += fx.bias_value(layer.bias_mant, layer.bias_exp).astype(np.float32)
    G = None
    if layer.kind == "spikgru":
        G = ff_dendrite(layer.ff_z, x, peak_sum, np.float32)
        G *= ACT
        G += fx.bias_value(layer.bias_z_mant, layer.bias_z_exp).astype(np.float32)
    return scan_hidden(layer, C, _Rec(layer.rec, B), trace, G, _Rec(layer.rec_z, B) if G is not None else None)


def scan_hidden(layer: QLayer, C: np.ndarray, rec: "_Rec | None" = None, trace: dict | None = None,
                G: np.ndarray | None = None, rec_z: "_Rec | None" = None) -> np.ndarray:
    """The neuron updates of one hidden layer, step by step: C [T, B, n] float32 the feed-forward input << 6 (plus
    the bias, except for lava-cuba, whose bias joins v), G likewise for SpikGRU's gate; rec / rec_z the recurrent
    connections (None: no recurrent input). Returns spikes [T, B, n] bool (trace: the states, as run_hidden)."""
    T, B, n = C.shape
    kind = layer.kind
    none = Synapse(np.zeros((n, n), dtype=np.int64), 0)
    rec = rec or _Rec(none, B)
    rec_z = rec_z or (_Rec(none, B) if G is not None else None)
    bias = fx.bias_value(layer.bias_mant, layer.bias_exp).astype(np.float64)
    S = np.zeros((T, B, n), dtype=bool)
    s = np.zeros((B, n), dtype=np.float32)  # the previous step's spikes
    s_t = torch.from_numpy(s)
    iv = np.zeros((2, B, n))  # i and v side by side: their decays are one multiply
    i, v = iv[0], iv[1]
    i_t, v_t = torch.from_numpy(i), torch.from_numpy(v)
    tmp = np.zeros((B, n))
    record = trace is not None
    if record:
        trace.update({name: np.zeros((T, B, n)) for name in (("v",) if kind == "lif" else ("i", "v"))})
    trunc, mul, add, greater = np.trunc, np.multiply, np.add, np.greater
    lo, hi = float(layer.state_lo), float(layer.state_hi)  # the state clamp (fixed_point step functions)
    states = {"i": i, "v": v}

    def decay_(x: np.ndarray, f: np.ndarray) -> None:
        """x = trunc(x * f) in place: fixed_point.decay with f = (4096 - d) / 4096."""
        mul(x, f, out=x)
        trunc(x, out=x)

    def add_product(x: np.ndarray, y: np.ndarray, f: np.ndarray) -> None:
        """x += trunc(y * f): the truncating 12-bit multiply (fixed_point.mul12) added in place."""
        mul(y, f, out=tmp)
        trunc(tmp, out=tmp)
        add(x, tmp, out=x)

    def soft_reset_and_fire(t: int) -> None:
        """The study's neurons' end of a step: v -= vth s_prev, the clamp, spike when v > vth."""
        v_t.sub_(s_t, alpha=THETA)
        v_t.clamp_(lo, hi)
        greater(v, THETA, out=S[t])
        s[...] = S[t]
        if record:
            for name, arr in trace.items():
                arr[t] = states[name]
    if kind == "lif":
        fv = _factor(layer.v_decay)
        for t in range(T):
            r = rec.plus(s_t, C[t])
            decay_(v, fv)
            add(v, r, out=v)
            soft_reset_and_fire(t)
    elif kind == "cuba-lif":
        fiv = np.stack([_factor(layer.i_decay), _factor(layer.v_decay)])[:, None, :]
        gv = np.asarray(layer.v_decay, np.float64) / UNITY
        for t in range(T):
            r = rec.plus(s_t, C[t])
            decay_(iv, fiv)
            add(i, r, out=i)
            i_t.clamp_(lo, hi)
            add_product(v, i, gv)
            soft_reset_and_fire(t)
    elif kind == "spikgru":
        fi = _factor(layer.i_decay)
        g = np.zeros((B, n))
        g_t = torch.from_numpy(g)
        z = np.zeros((B, n))
        idx = np.zeros((B, n), dtype=np.intp)
        inv = 1.0 / float(1 << fx.SIGMOID_SHIFT)
        for t in range(T):
            r = rec.plus(s_t, C[t])
            decay_(i, fi)
            add(i, r, out=i)
            i_t.clamp_(lo, hi)
            rz = rec_z(s_t)
            add(rz, G[t], out=rz)  # below 2**24: exact
            mul(rz, inv, out=g)
            np.floor(g, out=g)
            g += HALF_TABLE
            g_t.clamp_(0, 2 * HALF_TABLE - 1)
            idx[...] = g
            np.take(SIGMOID_Z, idx, out=z)  # z / 4096
            decay_(v, z)
            np.subtract(1.0, z, out=z)
            add_product(v, i, z)
            soft_reset_and_fire(t)
    elif kind == "lava-cuba":
        fu = _factor(fx.lava_d(layer.du))
        fv = _factor(int(np.ravel(layer.v_decay)[0]))
        span, top = float(1 << fx.STATE_BITS), float(fx.STATE_MAX + 1)
        for t in range(T):
            r = rec.plus(s_t, C[t])
            decay_(i, fu)
            add(i, r, out=i)
            i[i > top] -= span  # Lava's 24-bit wrap of the current
            i[i <= -top] += span
            decay_(v, fv)
            add(v, i, out=v)
            add(v, bias, out=v)
            v_t.clamp_(-SAT, SAT)
            greater(v, THETA, out=S[t])
            v[S[t]] = 0.0  # hard reset
            s[...] = S[t]
            if record:
                trace["i"][t], trace["v"][t] = i, v
    else:
        raise ValueError(f"no fast kernel for neuron kind {kind!r}")
    return S


def run_readout(layer: QLayer, x: np.ndarray) -> np.ndarray:
    """The leaky readout over a whole batch: spikes [T, B, m] -> o [T, B, K] (float64 integers)."""
    C = ff_dendrite(layer.ff, x, float(x.shape[2]))  # spikes in: float32 sums, exact
    C *= ACT
    C += fx.bias_value(layer.bias_mant, layer.bias_exp).astype(np.float64)
    return scan_readout(layer, C)


def scan_readout(layer: QLayer, C: np.ndarray) -> np.ndarray:
    """The readout's leaky integration of C [T, B, K] (its input << 6 plus bias) -> o [T, B, K]."""
    T, B = C.shape[:2]
    fv = _factor(layer.v_decay)
    out = np.empty_like(C)
    o = np.zeros((B, layer.n_out))
    for t in range(T):
        np.multiply(o, fv, out=o)
        np.trunc(o, out=o)
        o += C[t]
        np.minimum(o, SAT, out=o)
        np.maximum(o, -SAT, out=o)
        out[t] = o
    return out


@contextlib.contextmanager
def _one_thread():
    """Torch on one intra-op thread while the engine runs: its per-step products are small, and a second
    thread waiting for a busy core makes each of them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_batch(net: QNetwork, counts, record_states: bool = False) -> dict:
    """counts [B, T, C] (or Inputs) -> {'spikes': [per hidden layer int8 [B, T, n]], 'readout': int64 [B, T, K],
    'states': per hidden layer {name: int64 [B, T, n]} when record_states}: run_network's result, and
    'inputs': the Inputs."""
    inputs = counts if isinstance(counts, Inputs) else Inputs.from_dense(counts)
    if inputs.C != net.layers[0].n_in:
        raise ValueError(f"the samples have {inputs.C} channels, the network takes {net.layers[0].n_in}")
    x, peak = inputs, inputs.peak_sum
    spikes, states = [], []
    with torch.no_grad(), _one_thread():
        for layer in net.hidden:
            tr = {} if record_states else None
            x = run_hidden(layer, x, peak, tr)
            peak = float(x.shape[-1])
            spikes.append(x)
            states.append(tr)
        o = run_readout(net.readout, x)
    bt = lambda a, dt: np.ascontiguousarray(a.transpose(1, 0, 2)).astype(dt)
    out = {"spikes": [bt(s, np.int8) for s in spikes], "readout": bt(o, np.int64), "inputs": inputs}
    if record_states:
        out["states"] = [{k: bt(a, np.int64) for k, a in tr.items()} for tr in states]
    return out
