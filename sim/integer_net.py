"""The fast engine's arithmetic: the integer network over a whole batch at once.

Same arithmetic as ``export.qnet.run_network`` (docs/fixed_point.md), organised for speed:

* layer-major: a layer's feed-forward dendrites (W x, and Wz x for SpikGRU) depend only on the
  layer below, so they are computed for all samples and steps first, event by event (an input
  event or a spike costs its column of W; the graded input straight from the split's event
  indices), compiled, in int64;
* only the recurrent part (U s_{t-1}, Uz s_{t-1}: a spike costs its column) and the neuron update run
  step by step, compiled, in int64 (sim/integer_scan.py).

tests/test_sim.py checks it spike for spike (and state for state) against run_network, the
PyTorch fixed-point forward (export.qat.run_fixed_point) and the Lava run.

One of four forms of the fixed-point arithmetic: export/fixed_point.py is the specification; this form is
tested equal to it (tests/test_sim.py) and reproduces the conformance sequences every form must
(tests/test_fixed_point_forms.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from audio.spike_files import ranges
from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse
from sim import integer_scan as scan


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
        """Samples `index` of a binned split (audio.binning.BinnedSet), straight from its event indices."""
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

    def padded(self, steps: int) -> "Inputs":
        """The same samples followed by `steps` silent steps (rows are step-major: empty rows appended)."""
        if steps == 0:
            return self
        indptr = np.concatenate([self.csr.indptr, np.full(steps * self.B, self.csr.indptr[-1])])
        csr = sp.csr_matrix((self.csr.data, self.csr.indices, indptr), shape=((self.T + steps) * self.B, self.C))
        return Inputs(csr, self.B, self.T + steps, self.C)


# ------------------------------------------------------------------------------------------ kernels
@dataclass
class Spikes:
    """A hidden layer's spikes over a batch: S [T, B, n] bool, and the same listed per row r = t * B + b
    (idx[ptr[r]:ptr[r + 1]], what the next layer reads)."""

    S: np.ndarray
    ptr: np.ndarray
    idx: np.ndarray


def ff_dendrite(syn: Synapse, x) -> np.ndarray:
    """fx.dendrite << 6 of a feed-forward connection over a whole batch, int64 [T, B, n], event by event (compiled):
    x is Inputs (graded counts) or the Spikes of the layer below. A split weight: both its connections, each
    saturated, summed."""
    T, B = (x.T, x.B) if isinstance(x, Inputs) else x.S.shape[:2]
    out = np.zeros((T * B, syn.weight.shape[0]), dtype=np.int64)
    for part in syn.parts():
        WT = np.ascontiguousarray(np.asarray(part.weight, dtype=np.int64).T)
        if isinstance(x, Inputs):
            csr = x.csr
            scan.ff_counts(csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data.astype(np.int64), WT,
                           int(part.exp), out)
        else:
            scan.ff_events(x.ptr, x.idx, WT, int(part.exp), out)
    return out.reshape(T, B, -1)


def _rec_t(syn: Synapse | None, n: int) -> tuple[np.ndarray, int]:
    """A recurrent connection as the compiled scans take it: weights transposed [n_in, n_out] int64, exponent."""
    if syn is None:
        return np.zeros((n, n), dtype=np.int64), 0
    return np.ascontiguousarray(np.asarray(syn.weight, dtype=np.int64).T), int(syn.exp)


def _fine_t(syn: Synapse | None) -> tuple[np.ndarray, int]:
    """A split recurrent weight's residual connection for the scans (no rows: none)."""
    if syn is None or syn.fine is None:
        return scan.NO_ROWS, 0
    return _rec_t(syn.fine, 0)


def run_hidden(layer: QLayer, x, trace: dict | None = None, carry: np.ndarray | None = None) -> Spikes:
    """One hidden layer over a whole batch: input x (Inputs, or the Spikes of the layer below) -> its Spikes.

    trace: if a dict, filled with the states [T, B, n] (int64) for checks. carry: spikes [B, n] of the step
    before the first, which reach the first step through the recurrent connections only (a stream's previous
    sample, sim.stream); the states still start at zero. The feed-forward part of the input (64 W x + bias) is
    computed for all steps first; the rest is scan_hidden's."""
    C = ff_dendrite(layer.ff, x)
    if layer.kind != "lava-cuba":
        C += fx.bias_value(layer.bias_mant, layer.bias_exp)
    G = None
    if layer.kind == "spikgru":
        G = ff_dendrite(layer.ff_z, x)
        G += fx.bias_value(layer.bias_z_mant, layer.bias_z_exp)
    if carry is not None and layer.rec is not None:  # the scans give step 0 no recurrent input: it joins C there
        C[0] += fx.synaptic(layer.rec.accumulate(carry))
        if G is not None and layer.rec_z is not None:
            G[0] += fx.synaptic(layer.rec_z.accumulate(carry))
    return _scan(layer, C, trace, G)


def scan_hidden(layer: QLayer, C: np.ndarray, trace: dict | None = None, G: np.ndarray | None = None,
                recurrent: bool = True) -> np.ndarray:
    """The neuron updates of one hidden layer, step by step (sim.integer_scan, compiled): C [T, B, n] the feed-forward
    input << 6 (plus the bias, except for lava-cuba, whose bias joins v), G likewise for SpikGRU's gate; recurrent:
    the layer's own recurrent connections (False: none). Returns spikes [T, B, n] bool (trace: the states)."""
    return _scan(layer, C, trace, G, recurrent).S


def _scan(layer: QLayer, C: np.ndarray, trace: dict | None = None, G: np.ndarray | None = None,
          recurrent: bool = True) -> Spikes:
    T, B, n = C.shape
    kind = layer.kind
    UT, exp = _rec_t(layer.rec if recurrent else None, n)
    S = np.zeros((T, B, n), dtype=np.bool_)
    ptr, idx = np.zeros(T * B + 1, dtype=np.int64), np.zeros(T * B * n, dtype=np.int32)
    events = (S, ptr, idx)
    names = {"lif": ("v",), "lava-cuba": ("i", "v")}.get(kind, ("i", "v"))
    tr = {name: np.zeros((T, B, n), dtype=np.int64) if trace is not None else scan.NO_TRACE for name in names}
    lo, hi = int(layer.state_lo), int(layer.state_hi)
    reset, theta = scan.RESET_CODES[layer.reset], int(layer.theta)
    UT2, exp2 = _fine_t(layer.rec if recurrent else None)
    if kind == "lif":
        scan.scan_lif(C, UT, exp, UT2, exp2, np.asarray(layer.v_decay, np.int64), lo, hi, reset, theta, *events,
                      tr["v"])
    elif kind == "cuba-lif":
        scan.scan_cuba_lif(C, UT, exp, UT2, exp2, np.asarray(layer.i_decay, np.int64),
                           np.asarray(layer.v_decay, np.int64), lo, hi, reset, theta, *events, tr["i"], tr["v"])
    elif kind == "spikgru":
        UZT, exp_z = _rec_t(layer.rec_z if recurrent else None, n)
        scan.scan_spikgru(C, G, UT, exp, UZT, exp_z, np.asarray(layer.i_decay, np.int64), fx.SIGMOID_TABLE, lo, hi,
                          *events, tr["i"], tr["v"])
    elif kind == "lava-cuba":
        bias = np.broadcast_to(fx.bias_value(layer.bias_mant, layer.bias_exp), (n,)).astype(np.int64)
        scan.scan_lava_cuba(C, UT, exp, int(fx.lava_d(layer.du)), int(np.ravel(layer.v_decay)[0]), bias, *events,
                            tr["i"], tr["v"])
    else:
        raise ValueError(f"no fast kernel for neuron kind {kind!r}")
    if trace is not None:
        trace.update(tr)
    return Spikes(S, ptr, idx)


def run_readout(layer: QLayer, x: Spikes) -> np.ndarray:
    """The leaky readout over a whole batch: the last layer's Spikes -> o [T, B, K] (int64)."""
    C = ff_dendrite(layer.ff, x)
    C += fx.bias_value(layer.bias_mant, layer.bias_exp)
    return scan_readout(layer, C)


def scan_readout(layer: QLayer, C: np.ndarray) -> np.ndarray:
    """The readout's leaky integration of C [T, B, K] (its input << 6 plus bias) -> o [T, B, K] (int64)."""
    out = np.empty(C.shape, dtype=np.int64)
    per_unit = lambda d: np.broadcast_to(np.asarray(d, np.int64), (C.shape[2],)).copy()
    if layer.i_decay is None:
        scan.scan_readout(C, per_unit(layer.v_decay), out)
    else:
        scan.scan_current_readout(C, per_unit(layer.i_decay), per_unit(layer.v_decay), out)
    return out


def run_batch(net: QNetwork, counts, record_states: bool = False, carry: list[np.ndarray] | None = None) -> dict:
    """counts [B, T, C] (or Inputs) -> {'spikes': [per hidden layer int8 [B, T, n]], 'readout': int64 [B, T, K],
    'states': per hidden layer {name: int64 [B, T, n]} when record_states}: run_network's result, and
    'inputs': the Inputs. carry: per hidden layer, spikes [B, n] before the first step (run_hidden)."""
    inputs = counts if isinstance(counts, Inputs) else Inputs.from_dense(counts)
    if inputs.C != net.layers[0].n_in:
        raise ValueError(f"the samples have {inputs.C} channels, the network takes {net.layers[0].n_in}")
    x = inputs
    spikes, states = [], []
    for k, layer in enumerate(net.hidden):
        tr = {} if record_states else None
        x = run_hidden(layer, x, tr, None if carry is None else carry[k])
        spikes.append(x.S)
        states.append(tr)
    o = run_readout(net.readout, x)
    bt = lambda a, dt: np.ascontiguousarray(a.transpose(1, 0, 2)).astype(dt)
    out = {"spikes": [bt(s, np.int8) for s in spikes], "readout": bt(o, np.int64), "inputs": inputs}
    if record_states:
        out["states"] = [{k: bt(a, np.int64) for k, a in tr.items()} for tr in states]
    return out
