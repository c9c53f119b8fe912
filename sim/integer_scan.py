"""The step-by-step part of the fast engine, compiled (numba): each layer's recurrent dendrite and neuron update
over all steps of a batch, in int64 integer arithmetic exactly as export/fixed_point.py specifies it.

Everything that does not depend on the previous step (the feed-forward dendrites, one matrix product per layer
over all steps) is done before, by sim/integer_net.py, and arrives here as C (and G for SpikGRU's gate): the
input << 6 plus the bias, [T, B, n]. A spike costs its recurrent column only (the recurrence is sparse: a few
percent of the neurons fire per step). `trace` arrays of shape [T, B, n] record the states; pass empty ones
([0, 0, 0]) not to record.

One of the forms of the fixed-point arithmetic (export/fixed_point.py is the spec): tested equal to it in
tests/test_sim.py and against the literal sequences of tests/test_fixed_point_forms.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from export import fixed_point as fx

THETA = fx.THETA
STATE_MAX = fx.STATE_MAX
ACC_MIN, ACC_MAX = fx.ACC_MIN, fx.ACC_MAX
ACT = fx.ACT_SHIFT
UNITY = fx.DECAY_UNITY
BITS = fx.DECAY_BITS
SIG_SHIFT = fx.SIGMOID_SHIFT
HALF = fx.SIGMOID_ENTRIES // 2
SPAN = 1 << fx.STATE_BITS
NO_TRACE = np.zeros((0, 0, 0), dtype=np.int64)
NO_ROWS = np.zeros((0, 0), dtype=np.int64)  # no second (residual) recurrent connection


@njit(inline="always")
def _mul12(x, f):
    """fixed_point.mul12: x * f / 4096 rounded toward zero (branch-free: the floor shift, plus one for a negative
    product with a remainder)."""
    p = x * f
    return (p >> BITS) + ((p < 0) & ((p & (UNITY - 1)) != 0))


@njit(inline="always")
def _clamp(x, lo, hi):
    return min(max(x, lo), hi)


@njit(inline="always")
def _deposit(acc, exp, out):
    """out += (acc shifted by exp, floor for exp < 0, saturated to 16 bits) << 6: one connection's dendrite."""
    for k in range(out.shape[0]):
        a = acc[k] << exp if exp >= 0 else acc[k] >> (-exp)
        out[k] += _clamp(a, ACC_MIN, ACC_MAX) << ACT


@njit(inline="always")
def _sum_rows(WT, idx, lo, hi, acc):
    """acc = the sum of the rows idx[lo:hi] (lo < hi) of WT: the spikes' accumulation (a spike costs its row)."""
    n = acc.shape[0]
    w = WT[idx[lo]]
    for k in range(n):
        acc[k] = w[k]
    for p in range(lo + 1, hi):
        w = WT[idx[p]]
        for k in range(n):
            acc[k] += w[k]


@njit(cache=True, nogil=True)
def ff_counts(indptr, indices, data, WT, exp, out):
    """Feed-forward dendrites of graded input, event by event: for every row r (step t, sample b: r = t * B + b) of a
    CSR matrix of counts, out[r] += dendrite(sum of count * WT[channel]) << 6. WT [C, n] int64, out [R, n] int64."""
    n = out.shape[1]
    acc = np.zeros(n, dtype=np.int64)
    for r in range(out.shape[0]):
        if indptr[r] == indptr[r + 1]:
            continue  # no event, no input: the row stays 0
        acc[:] = 0
        for p in range(indptr[r], indptr[r + 1]):
            c, w = data[p], WT[indices[p]]
            for k in range(n):
                acc[k] += c * w[k]
        _deposit(acc, exp, out[r])


@njit(cache=True, nogil=True)
def ff_events(ptr, idx, WT, exp, out):
    """The same for the binary spikes of the layer below, as the scans list them (row r's spikes idx[ptr[r]:ptr[r+1]])."""
    acc = np.zeros(out.shape[1], dtype=np.int64)
    for r in range(out.shape[0]):
        if ptr[r] < ptr[r + 1]:
            _sum_rows(WT, idx, ptr[r], ptr[r + 1], acc)
            _deposit(acc, exp, out[r])


@njit(inline="always")
def _recurrent(UT, exp, UT2, exp2, ptr, idx, row, acc, r):
    """r = the recurrent input from the spikes of `row` (the same sample's previous step; -1 at t = 0): U, and a
    split weight's residual UT2 when it has rows, each its own saturated dendrite."""
    r[:] = 0
    if row >= 0 and ptr[row] < ptr[row + 1]:
        _sum_rows(UT, idx, ptr[row], ptr[row + 1], acc)
        _deposit(acc, exp, r)
        if UT2.shape[0]:
            _sum_rows(UT2, idx, ptr[row], ptr[row + 1], acc)
            _deposit(acc, exp2, r)


RESET_CODES = {"late": 0, "subtract": 1, "zero": 2}  # fixed_point.fire's modes, as the compiled scans take them


@njit(inline="always")
def _fire(x, reset, theta):
    """fixed_point.fire for one neuron: (spiked, the v kept)."""
    spiked = x > theta
    if spiked and reset == 1:
        return spiked, x - theta
    if spiked and reset == 2:
        return spiked, np.int64(0)
    return spiked, x


@njit(inline="always")
def _record(S, t, b, row, ptr, idx):
    """Lists row's spikes S[t, b] after idx[:ptr[row]] and sets ptr[row + 1]."""
    nnz = ptr[row]
    s = S[t, b]
    for k in range(s.shape[0]):
        if s[k]:
            idx[nnz] = k
            nnz += 1
    ptr[row + 1] = nnz


# Every scan: C [T, B, n] the feed-forward input << 6 (+ bias), steps in order, samples b of one step in turn (row
# r = t * B + b); S [T, B, n] the spikes it writes, ptr [T * B + 1] / idx [T * B * n] the same spikes listed per
# row (what the recurrent input and the next layer read: a spike costs its row of weights, silence costs nothing).
@njit(cache=True, nogil=True)
def scan_lif(C, UT, exp, UT2, exp2, dv, lo, hi, reset, theta, S, ptr, idx, tv):
    """LIF: v = clamp(decay(v, dv) + C + rec - theta s_prev, lo, hi); S[t] = v > theta (reset: RESET_CODES;
    the same-step resets drop the - theta s_prev term; theta: the layer's threshold)."""
    T, B, n = C.shape
    r = np.zeros(n, dtype=np.int64)
    acc = np.zeros(n, dtype=np.int64)
    none = np.zeros(n, dtype=np.bool_)
    fv = UNITY - dv
    late = theta * (reset == 0)
    v = np.zeros((B, n), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            row = t * B + b
            _recurrent(UT, exp, UT2, exp2, ptr, idx, row - B, acc, r)
            prev = S[t - 1, b] if t else none
            vb, c, s = v[b], C[t, b], S[t, b]
            for k in range(n):
                x = _clamp(_mul12(vb[k], fv[k]) + np.int64(c[k]) + r[k] - late * prev[k], lo, hi)
                s[k], vb[k] = _fire(x, reset, theta)
            _record(S, t, b, row, ptr, idx)
        if tv.shape[0]:
            tv[t] = v


@njit(cache=True, nogil=True)
def scan_cuba_lif(C, UT, exp, UT2, exp2, di, dv, lo, hi, reset, theta, S, ptr, idx, ti, tv):
    """Cuba-LIF: i = clamp(decay(i, di) + C + rec); v = clamp(decay(v, dv) + mul12(i, dv) - theta s_prev)
    (reset and theta as scan_lif)."""
    T, B, n = C.shape
    r = np.zeros(n, dtype=np.int64)
    acc = np.zeros(n, dtype=np.int64)
    none = np.zeros(n, dtype=np.bool_)
    fi, fv = UNITY - di, UNITY - dv
    late = theta * (reset == 0)
    i = np.zeros((B, n), dtype=np.int64)
    v = np.zeros((B, n), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            row = t * B + b
            _recurrent(UT, exp, UT2, exp2, ptr, idx, row - B, acc, r)
            prev = S[t - 1, b] if t else none
            ib, vb, c, s = i[b], v[b], C[t, b], S[t, b]
            for k in range(n):
                ib[k] = _clamp(_mul12(ib[k], fi[k]) + np.int64(c[k]) + r[k], lo, hi)
                x = _clamp(_mul12(vb[k], fv[k]) + _mul12(ib[k], dv[k]) - late * prev[k], lo, hi)
                s[k], vb[k] = _fire(x, reset, theta)
            _record(S, t, b, row, ptr, idx)
        if tv.shape[0]:
            ti[t], tv[t] = i, v


@njit(cache=True, nogil=True)
def scan_spikgru(C, G, UT, exp, UZT, exp_z, di, table, lo, hi, S, ptr, idx, ti, tv):
    """SpikGRU: i as Cuba-LIF; z = table[(G + rec_z) >> 12]; v = clamp(mul12(v, z) + mul12(i, 4096 - z) - THETA s)."""
    T, B, n = C.shape
    r = np.zeros(n, dtype=np.int64)
    rz = np.zeros(n, dtype=np.int64)
    acc = np.zeros(n, dtype=np.int64)
    none = np.zeros(n, dtype=np.bool_)
    fi = UNITY - di
    i = np.zeros((B, n), dtype=np.int64)
    v = np.zeros((B, n), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            row = t * B + b
            _recurrent(UT, exp, NO_ROWS, 0, ptr, idx, row - B, acc, r)
            _recurrent(UZT, exp_z, NO_ROWS, 0, ptr, idx, row - B, acc, rz)
            prev = S[t - 1, b] if t else none
            ib, vb, c, g, s = i[b], v[b], C[t, b], G[t, b], S[t, b]
            for k in range(n):
                ib[k] = _clamp(_mul12(ib[k], fi[k]) + np.int64(c[k]) + r[k], lo, hi)
                z = table[_clamp((np.int64(g[k]) + rz[k]) >> SIG_SHIFT, -HALF, HALF - 1) + HALF]
                vb[k] = _clamp(_mul12(vb[k], z) + _mul12(ib[k], UNITY - z) - THETA * prev[k], lo, hi)
                s[k] = vb[k] > THETA
            _record(S, t, b, row, ptr, idx)
        if tv.shape[0]:
            ti[t], tv[t] = i, v


@njit(cache=True, nogil=True)
def scan_lava_cuba(C, UT, exp, d_u, dv, bias, S, ptr, idx, tu, tv):
    """Lava's CUBA: u = decay(u, d_u) + C + rec, wrapped at 24 bits; v = sat(decay(v, dv) + u + bias); S = v > THETA,
    then v = 0 where it spiked (hard reset)."""
    T, B, n = C.shape
    r = np.zeros(n, dtype=np.int64)
    acc = np.zeros(n, dtype=np.int64)
    u = np.zeros((B, n), dtype=np.int64)
    v = np.zeros((B, n), dtype=np.int64)
    for t in range(T):
        for b in range(B):
            row = t * B + b
            _recurrent(UT, exp, NO_ROWS, 0, ptr, idx, row - B, acc, r)
            ub, vb, c, s = u[b], v[b], C[t, b], S[t, b]
            for k in range(n):
                x = _mul12(ub[k], UNITY - d_u) + np.int64(c[k]) + r[k]
                x -= SPAN * (x > STATE_MAX + 1)
                x += SPAN * (x <= -(STATE_MAX + 1))
                ub[k] = x
                y = _clamp(_mul12(vb[k], UNITY - dv) + x + bias[k], -STATE_MAX, STATE_MAX)
                s[k] = y > THETA
                vb[k] = y * (y <= THETA)
            _record(S, t, b, row, ptr, idx)
        if tv.shape[0]:
            tu[t], tv[t] = u, v


@njit(cache=True, nogil=True)
def scan_current_readout(C, di, dv, out):
    """The readout with a current stage: i = sat(decay(i, di) + C); o = sat(decay(o, dv) + mul12(i, dv))."""
    T, B, K = C.shape
    for b in range(B):
        for k in range(K):
            i = np.int64(0)
            o = np.int64(0)
            for t in range(T):
                i = _clamp(_mul12(i, UNITY - di[k]) + np.int64(C[t, b, k]), -STATE_MAX, STATE_MAX)
                o = _clamp(_mul12(o, UNITY - dv[k]) + _mul12(i, dv[k]), -STATE_MAX, STATE_MAX)
                out[t, b, k] = o


@njit(cache=True, nogil=True)
def scan_readout(C, dv, out):
    """The leaky readout: o = sat(decay(o, dv) + C) at every step, into out [T, B, K]."""
    T, B, K = C.shape
    for b in range(B):
        for k in range(K):
            o = np.int64(0)
            for t in range(T):
                o = _clamp(_mul12(o, UNITY - dv[k]) + np.int64(C[t, b, k]), -STATE_MAX, STATE_MAX)
                out[t, b, k] = o
