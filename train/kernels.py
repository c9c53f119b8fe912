"""Fused full-sequence layer kernels with hand-written backpropagation through time.

Why: a per-timestep autograd loop spends most of its time creating and walking a
graph of tiny ops. Here the input projection of all timesteps is one operation
(ordinary autograd, outside the loop: train.projection, x [B, T, C] @ W^T, or its
event-driven form for an EventBatch) and the recurrence runs
inside one autograd.Function whose forward and backward loops are TorchScript:
no Python and no graph per step, one or two small matmuls and a few in-place
element-wise ops on reused buffers; with more than one intra-op thread, the batch is cut
into one chunk per thread, run side by side. Forward saves the pre-clip states (their
clamp gives the states, their clip masks and the surrogates again); backward
walks time in reverse and accumulates every parameter gradient as it goes.
Tensors stay batch-first [B, T, n] throughout, so nothing is transposed or copied
at the boundaries.

The GRU kernel follows torch's nn.GRU equations and parameters (gate order r, z, n),
tested equal to nn.GRU.

Each kind but the GRU also has a `*_reference` function: the same equations as a plain
Python loop of the `neurons.py` step functions with ordinary autograd. It is the
ground truth of the tests and the "plain loop" of the benchmark.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .neurons import (VTH, CubaLIFParams, CubaLIFState, LIFParams, LIFState, ReadoutParams,
                      ReadoutState, RNNParams, RNNState, SpikeOpts, SpikGRUParams, cuba_lif_step,
                      lava_cuba_step, lif_step, readout_step, rnn_step, spikgru_step, triangle,
                      zero_state)
from .projection import dense_input, project


# ---------------------------------------------------------------- plain loop
def loop_steps(step, x: Tensor, state, *args) -> Tensor:
    """The plain loop: one step-function call per timestep, ordinary autograd."""
    outputs = []
    for t in range(x.shape[1]):
        y, state = step(x[:, t], state, *args)
        outputs.append(y)
    return torch.stack(outputs, 1)


def _zeros(state_cls, x: Tensor, n: int):
    return zero_state(state_cls, x.shape[0], n, x)


def lif_reference(x: Tensor, p: LIFParams, opts: SpikeOpts) -> Tensor:
    x = dense_input(x, p.W)
    return loop_steps(lif_step, x, _zeros(LIFState, x, p.W.shape[0]), p, opts)


def cuba_lif_reference(x: Tensor, p: CubaLIFParams, opts: SpikeOpts, lava: bool = False) -> Tensor:
    step = lava_cuba_step if lava else cuba_lif_step
    x = dense_input(x, p.W)
    return loop_steps(step, x, _zeros(CubaLIFState, x, p.W.shape[0]), p, opts)


def spikgru_reference(x: Tensor, p: SpikGRUParams, opts: SpikeOpts) -> Tensor:
    x = dense_input(x, p.W)
    return loop_steps(spikgru_step, x, _zeros(CubaLIFState, x, p.W.shape[0]), p, opts)


def rnn_reference(x: Tensor, p: RNNParams) -> Tensor:
    x = dense_input(x, p.W)
    return loop_steps(rnn_step, x, _zeros(RNNState, x, p.W.shape[0]), p)


def readout_reference(x: Tensor, p: ReadoutParams) -> Tensor:
    x = dense_input(x, p.W)
    return loop_steps(readout_step, x, _zeros(ReadoutState, x, p.W.shape[0]), p)


# ---------------------------------------------------------------- helpers
MIN_CHUNK = 16  # samples: below this a thread's share of the batch is not worth its start
_pool: tuple = (0, 0, None)  # (pid, workers, the pool)


def _batch_parallel(fn, batched: Tuple[Tensor, ...], shared: tuple) -> List[tuple]:
    """fn(*chunk of each batched tensor, *shared) over the batch cut into one chunk per intra-op thread, side by
    side (the scripted loops release the GIL; their per-step ops are too small for torch to share between
    threads). Samples are independent, so the chunks' outputs are the whole batch's; one chunk on one thread."""
    global _pool
    k = max(1, min(torch.get_num_threads(), batched[0].shape[0] // MIN_CHUNK))
    if k == 1:
        return [fn(*batched, *shared)]
    if _pool[:2] != (os.getpid(), k):  # a new thread count, or a forked child (the parent's threads are gone)
        _pool = (os.getpid(), k, ThreadPoolExecutor(k, thread_name_prefix="fused-kernel"))

    def run(part):
        with torch.no_grad():  # grad mode is per thread: the pool's threads would record graphs
            return fn(*part, *shared)

    return list(_pool[2].map(run, zip(*(x.chunk(k) for x in batched))))


def _cat(outs: List[tuple]) -> tuple:
    """The batch's outputs from its chunks' (batch-first tensors)."""
    return tuple(torch.cat(z) if len(z) > 1 else z[0] for z in zip(*outs))


def _grads(outs: List[tuple]) -> tuple:
    """Backward over chunks: the first output (d input) is per sample, the parameter gradients add up."""
    first = [o[0] for o in outs]
    rest = [sum(z[1:], z[0]) for z in zip(*(o[1:] for o in outs))]
    return (torch.cat(first) if len(first) > 1 else first[0], *rest)


def _bounds(opts: SpikeOpts) -> Tuple[float, float, bool]:
    """(low, high, clipping on?) for the scripted loops."""
    if opts.clip is None:
        return -math.inf, math.inf, False
    return float(opts.clip[0]), float(opts.clip[1]), True


@torch.jit.script
def _unclipped(g: Tensor, pre: Tensor, post: Tensor, mask: Tensor, clip: bool) -> Tensor:
    """Zero g where the clamp cut pre (torch's clamp gradient: lo <= pre <= hi, that is
    pre == clamp(pre)). The mask is a float buffer: bool masks are several times slower."""
    if clip:
        g.mul_(torch.eq(pre, post, out=mask))
    return g


@torch.jit.script
def _previous_states(ip_all: Tensor, vp_all: Tensor, s_all: Tensor, t: int, lo: float, hi: float,
                     i_prev: Tensor, v_prev: Tensor, zero: Tensor) -> Tensor:
    """Fill i_prev, v_prev with the clipped states of step t - 1 and return s_{t-1}; all
    are 0 before the first step."""
    if t == 0:
        i_prev.zero_()
        v_prev.zero_()
        return zero
    torch.clamp(ip_all[:, t - 1], lo, hi, out=i_prev)
    torch.clamp(vp_all[:, t - 1], lo, hi, out=v_prev)
    return s_all[:, t - 1]


# ---------------------------------------------------------------- LIF
@torch.jit.script
def _lif_fwd(a: Tensor, UT: Tensor, beta: Tensor, lo: float, hi: float,
             vth: float) -> Tuple[Tensor, Tensor]:
    s_all, vp_all = torch.empty_like(a), torch.empty_like(a)
    s = a.new_zeros(a.shape[0], a.shape[2])
    v = torch.zeros_like(s)
    for t in range(a.shape[1]):
        vp = torch.addmm(a[:, t], s, UT, out=vp_all[:, t]).addcmul_(beta, v).sub_(s, alpha=vth)
        torch.clamp(vp, lo, hi, out=v)
        s = torch.gt(v, vth, out=s_all[:, t])
    return s_all, vp_all


@torch.jit.script
def _lif_bwd(gs: Tensor, s_all: Tensor, vp_all: Tensor, U: Tensor, beta: Tensor, lo: float,
             hi: float, clip: bool, vth: float, scale: float,
             width: float) -> Tuple[Tensor, Tensor, Tensor]:
    B, T, N = vp_all.shape
    dvp_all = torch.empty_like(vp_all)
    dvp, dbeta, dU = vp_all.new_zeros(B, N), vp_all.new_zeros(B, N), vp_all.new_zeros(N, N)
    ds, sg, mask = torch.empty_like(dvp), torch.empty_like(dvp), torch.empty_like(dvp)
    v, v_prev = vp_all[:, T - 1].clamp(lo, hi), torch.zeros_like(dvp)
    for t in range(T - 1, -1, -1):
        torch.addmm(gs[:, t], dvp, U, out=ds).sub_(dvp, alpha=vth)  # dvp holds step t + 1
        dvp = torch.mul(beta, dvp, out=dvp_all[:, t])
        dvp.addcmul_(ds, triangle(v, vth, scale, width, sg))
        _unclipped(dvp, vp_all[:, t], v, mask, clip)
        if t > 0:
            torch.clamp(vp_all[:, t - 1], lo, hi, out=v_prev)
            dbeta.addcmul_(dvp, v_prev)
            dU.addmm_(dvp.t(), s_all[:, t - 1])
        v, v_prev = v_prev, v
    return dvp_all, dU, dbeta.sum(0)


def _spiking_function(fwd, bwd):
    """An autograd.Function over a fused forward `fwd(a, U^T, decay, lo, hi, vth) -> (s, *states)` and its
    hand-written BPTT `bwd(gs, s, *states, U, decay, lo, hi, vth, scale, width) -> (da, dU, ddecay)`."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, U, decay, opts: SpikeOpts):
            lo, hi, _ = _bounds(opts)
            out = _cat(_batch_parallel(fwd, (a,), (U.t().contiguous(), decay, lo, hi, VTH)))
            ctx.save_for_backward(*out, U, decay)
            ctx.opts = opts
            return out[0]

        @staticmethod
        @once_differentiable
        def backward(ctx, gs):
            o = ctx.opts
            *states, U, decay = ctx.saved_tensors
            outs = _batch_parallel(bwd, (gs, *states), (U, decay, *_bounds(o), VTH, o.scale, o.width))
            return _grads(outs) + (None,)

    return Fn


_LIF = _spiking_function(_lif_fwd, _lif_bwd)


def lif(x: Tensor, p: LIFParams, opts: SpikeOpts) -> Tensor:
    return _LIF.apply(project(x, p.W, p.b), p.U, p.beta, opts)


# ---------------------------------------------------------------- Cuba-LIF
@torch.jit.script
def _cuba_fwd(a: Tensor, UT: Tensor, alpha: Tensor, beta: Tensor, bv: Tensor, lo: float,
              hi: float, vth: float, lava: bool) -> Tuple[Tensor, Tensor, Tensor]:
    s_all, ip_all, vp_all = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
    s = a.new_zeros(a.shape[0], a.shape[2])
    i, v = torch.zeros_like(s), torch.zeros_like(s)
    c = 1 - beta
    for t in range(a.shape[1]):
        ip = torch.addmm(a[:, t], s, UT, out=ip_all[:, t]).addcmul_(alpha, i)
        torch.clamp(ip, lo, hi, out=i)
        if lava:
            vp = torch.mul(beta, v, out=vp_all[:, t]).mul_(1 - s).add_(i).add_(bv)
            torch.clamp(vp, lo, hi, out=v)
            s = torch.ge(v, vth, out=s_all[:, t])
        else:
            vp = torch.mul(beta, v, out=vp_all[:, t]).addcmul_(c, i).sub_(s, alpha=vth)
            torch.clamp(vp, lo, hi, out=v)
            s = torch.gt(v, vth, out=s_all[:, t])
    return s_all, ip_all, vp_all


@torch.jit.script
def _cuba_bwd(gs: Tensor, s_all: Tensor, ip_all: Tensor, vp_all: Tensor, U: Tensor,
              alpha: Tensor, beta: Tensor, lo: float, hi: float, clip: bool, vth: float,
              scale: float, width: float,
              lava: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients w.r.t. a (= d ip), U, alpha, beta and (Lava mode) the bias on v."""
    B, T, N = ip_all.shape
    dip_all = torch.empty_like(ip_all)
    dip, dvp = ip_all.new_zeros(B, N), ip_all.new_zeros(B, N)
    dalpha, dbeta, dbv = torch.zeros_like(dip), torch.zeros_like(dip), torch.zeros_like(dip)
    dU = ip_all.new_zeros(N, N)
    ds, sg, mask, tmp = (torch.empty_like(dip), torch.empty_like(dip), torch.empty_like(dip),
                         torch.empty_like(dip))
    c = torch.ones_like(beta) if lava else 1 - beta  # d vp_t / d i_t
    i, v = ip_all[:, T - 1].clamp(lo, hi), vp_all[:, T - 1].clamp(lo, hi)
    i_prev, v_prev, zero = torch.zeros_like(dip), torch.zeros_like(dip), torch.zeros_like(dip)
    for t in range(T - 1, -1, -1):
        # dip, dvp hold step t + 1: d/ds_t, then back through v_t and i_t
        torch.addmm(gs[:, t], dip, U, out=ds)
        if lava:  # vp_{t+1} = beta v_t (1 - s_t) + i_{t+1} + bv
            ds.addcmul_(torch.mul(beta, v, out=tmp), dvp, value=-1.0)
            dvp.mul_(beta).mul_(1 - s_all[:, t])
        else:  # vp_{t+1} = beta v_t + (1 - beta) i_{t+1} - vth s_t
            ds.sub_(dvp, alpha=vth)
            dvp.mul_(beta)
        dvp.addcmul_(ds, triangle(v, vth, scale, width, sg))
        _unclipped(dvp, vp_all[:, t], v, mask, clip)
        dip = torch.mul(alpha, dip, out=dip_all[:, t]).addcmul_(c, dvp)
        _unclipped(dip, ip_all[:, t], i, mask, clip)
        s_prev = _previous_states(ip_all, vp_all, s_all, t, lo, hi, i_prev, v_prev, zero)
        dalpha.addcmul_(dip, i_prev)
        if lava:
            dbeta.addcmul_(dvp, v_prev * (1 - s_prev))
            dbv.add_(dvp)
        else:
            dbeta.addcmul_(dvp, torch.sub(v_prev, i, out=tmp))
        dU.addmm_(dip.t(), s_prev)
        i, i_prev, v, v_prev = i_prev, i, v_prev, v
    return dip_all, dU, dalpha.sum(0), dbeta.sum(0), dbv.sum(0)


class _CubaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U, alpha, beta, bv, opts: SpikeOpts, lava: bool):
        lo, hi, _ = _bounds(opts)
        s, ip, vp = _cat(_batch_parallel(_cuba_fwd, (a,), (U.t().contiguous(), alpha, beta, bv, lo, hi, VTH, lava)))
        ctx.save_for_backward(s, ip, vp, U, alpha, beta)
        ctx.opts, ctx.lava = opts, lava
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, gs):
        o, lava = ctx.opts, ctx.lava
        s, ip, vp, U, alpha, beta = ctx.saved_tensors
        da, dU, dalpha, dbeta, dbv = _grads(_batch_parallel(
            _cuba_bwd, (gs, s, ip, vp), (U, alpha, beta, *_bounds(o), VTH, o.scale, o.width, lava)))
        return da, dU, dalpha, dbeta, dbv if lava else None, None, None


def cuba_lif(x: Tensor, p: CubaLIFParams, opts: SpikeOpts, lava: bool = False) -> Tensor:
    """lava=True: Lava's CUBA (see neurons.lava_cuba_step); alpha, beta shape [1], b on v."""
    n = p.W.shape[0]
    if lava:
        a, alpha, beta, bv = project(x, p.W), p.alpha.expand(n), p.beta.expand(n), p.b
    else:
        a, alpha, beta, bv = project(x, p.W, p.b), p.alpha, p.beta, p.b.new_zeros(n)
    return _CubaLIF.apply(a, p.U, alpha, beta, bv, opts, lava)


# ---------------------------------------------------------------- SpikGRU
@torch.jit.script
def _spikgru_fwd(a: Tensor, UT: Tensor, alpha: Tensor, lo: float, hi: float,
                 vth: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """a and UT hold the current's and the gate's inputs side by side: [..., :N | N:]."""
    B, T, N = a.shape[0], a.shape[1], UT.shape[0]
    s_all = a.new_empty(B, T, N)
    ip_all, z_all = torch.empty_like(s_all), torch.empty_like(s_all)
    vp_all = torch.empty_like(s_all)
    s = a.new_zeros(B, N)
    i, v, r = torch.zeros_like(s), torch.zeros_like(s), a.new_empty(B, 2 * N)
    for t in range(T):
        torch.addmm(a[:, t], s, UT, out=r)
        ip = torch.addcmul(r[:, :N], alpha, i, out=ip_all[:, t])
        torch.clamp(ip, lo, hi, out=i)
        z = torch.sigmoid(r[:, N:], out=z_all[:, t])
        vp = torch.sub(v, i, out=vp_all[:, t]).mul_(z).add_(i).sub_(s, alpha=vth)
        torch.clamp(vp, lo, hi, out=v)
        s = torch.gt(v, vth, out=s_all[:, t])
    return s_all, ip_all, z_all, vp_all


@torch.jit.script
def _spikgru_bwd(gs: Tensor, s_all: Tensor, ip_all: Tensor, z_all: Tensor, vp_all: Tensor,
                 U: Tensor, alpha: Tensor, lo: float, hi: float, clip: bool, vth: float,
                 scale: float, width: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. a (current | gate pre-activation, [B, T, 2N]), U ([2N, N]), alpha."""
    B, T, N = ip_all.shape
    g_all = ip_all.new_empty(B, T, 2 * N)
    g = ip_all.new_zeros(B, 2 * N)
    dvp, z_next, dalpha = ip_all.new_zeros(B, N), ip_all.new_zeros(B, N), ip_all.new_zeros(B, N)
    dU = ip_all.new_zeros(2 * N, N)
    ds, sg, mask = torch.empty_like(dvp), torch.empty_like(dvp), torch.empty_like(dvp)
    i, v = ip_all[:, T - 1].clamp(lo, hi), vp_all[:, T - 1].clamp(lo, hi)
    i_prev, v_prev, zero = torch.zeros_like(dvp), torch.zeros_like(dvp), torch.zeros_like(dvp)
    for t in range(T - 1, -1, -1):
        # g, dvp hold step t + 1: d/ds_t, then back through v_t, i_t and z_t
        torch.addmm(gs[:, t], g, U, out=ds).sub_(dvp, alpha=vth)
        _unclipped(dvp.mul_(z_next).addcmul_(ds, triangle(v, vth, scale, width, sg)),
                   vp_all[:, t], v, mask, clip)
        z, gt = z_all[:, t], g_all[:, t]
        dip = torch.mul(alpha, g[:, :N], out=gt[:, :N]).add_(dvp).addcmul_(z, dvp, value=-1.0)
        _unclipped(dip, ip_all[:, t], i, mask, clip)
        s_prev = _previous_states(ip_all, vp_all, s_all, t, lo, hi, i_prev, v_prev, zero)
        # vp_t = i_t + z_t (v_{t-1} - i_t): d/dzp_t = dvp (v_{t-1} - i_t) z (1 - z)
        dzp = torch.sub(v_prev, i, out=gt[:, N:]).mul_(dvp).mul_(z)
        dzp.addcmul_(dzp, z, value=-1.0)
        dalpha.addcmul_(dip, i_prev)
        dU.addmm_(gt.t(), s_prev)
        i, i_prev, v, v_prev = i_prev, i, v_prev, v
        g, z_next = gt, z
    return g_all, dU, dalpha.sum(0)


_SpikGRU = _spiking_function(_spikgru_fwd, _spikgru_bwd)


def spikgru(x: Tensor, p: SpikGRUParams, opts: SpikeOpts) -> Tensor:
    a = project(x, torch.cat([p.W, p.Wz]), torch.cat([p.b, p.bz]))  # one pass over the stacked table
    return _SpikGRU.apply(a, torch.cat([p.U, p.Uz]), p.alpha, opts)


# ---------------------------------------------------------------- RNN (ReLU)
@torch.jit.script
def _rnn_fwd(a: Tensor, UT: Tensor) -> Tensor:
    h_all = torch.empty_like(a)
    h = a.new_zeros(a.shape[0], a.shape[2])
    for t in range(a.shape[1]):
        h = torch.addmm(a[:, t], h, UT, out=h_all[:, t]).relu_()
    return h_all


@torch.jit.script
def _rnn_bwd(gh: Tensor, h_all: Tensor, U: Tensor) -> Tuple[Tensor, Tensor]:
    B, T, N = h_all.shape
    dhp_all = torch.empty_like(h_all)
    dhp, dU = h_all.new_zeros(B, N), h_all.new_zeros(N, N)
    for t in range(T - 1, -1, -1):
        dhp = torch.addmm(gh[:, t], dhp, U, out=dhp_all[:, t]).mul_(h_all[:, t] > 0)
        if t > 0:
            dU.addmm_(dhp.t(), h_all[:, t - 1])
    return dhp_all, dU


class _RNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U):
        h, = _cat(_batch_parallel(lambda x, UT: (_rnn_fwd(x, UT),), (a,), (U.t().contiguous(),)))
        ctx.save_for_backward(h, U)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, gh):
        h, U = ctx.saved_tensors
        return _grads(_batch_parallel(_rnn_bwd, (gh, h), (U,)))


def rnn(x: Tensor, p: RNNParams) -> Tensor:
    return _RNN.apply(project(x, p.W, p.b), p.U)


# ---------------------------------------------------------------- GRU (torch's equations)
@torch.jit.script
def _gru_fwd(gi: Tensor, WT: Tensor, bh: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """gi = W_ih x + b_ih [B, T, 3H] (r | z | n); WT = W_hh^T, bh = b_hh. r, z = sigmoid(gi + W_hh h + b_hh),
    n = tanh(gi_n + r (W_hn h + b_hn)), h' = (1 - z) n + z h. Saves rz, n and W_hn h + b_hn for backward."""
    B, T, H = gi.shape[0], gi.shape[1], WT.shape[0]
    h_all, n_all, hn_all = gi.new_empty(B, T, H), gi.new_empty(B, T, H), gi.new_empty(B, T, H)
    rz_all = gi.new_empty(B, T, 2 * H)
    h, gh = gi.new_zeros(B, H), gi.new_empty(B, 3 * H)
    for t in range(T):
        torch.addmm(bh, h, WT, out=gh)
        g, hn = gi[:, t], hn_all[:, t]
        rz = torch.add(g[:, :2 * H], gh[:, :2 * H], out=rz_all[:, t]).sigmoid_()
        hn.copy_(gh[:, 2 * H:])
        n = torch.addcmul(g[:, 2 * H:], rz[:, :H], hn, out=n_all[:, t]).tanh_()
        h = torch.sub(h, n, out=h_all[:, t]).mul_(rz[:, H:]).add_(n)
    return h_all, rz_all, n_all, hn_all


@torch.jit.script
def _gru_bwd(gh_out: Tensor, h_all: Tensor, rz_all: Tensor, n_all: Tensor, hn_all: Tensor,
             W: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. gi [B, T, 3H], W_hh and b_hh."""
    B, T, H = h_all.shape
    dgi_all = h_all.new_empty(B, T, 3 * H)
    dW, db = h_all.new_zeros(3 * H, H), h_all.new_zeros(B, 3 * H)
    dgh, dh, tmp, zero = h_all.new_empty(B, 3 * H), h_all.new_zeros(B, H), h_all.new_empty(B, H), h_all.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        dh.add_(gh_out[:, t])  # dh held d/dh_t through step t + 1
        h_prev = h_all[:, t - 1] if t > 0 else zero
        r, z, n, dgi = rz_all[:, t, :H], rz_all[:, t, H:], n_all[:, t], dgi_all[:, t]
        dnp = torch.mul(dh, z, out=dgi[:, 2 * H:]).neg_().add_(dh).mul_(torch.mul(n, n, out=tmp).neg_().add_(1))
        dzp = torch.sub(h_prev, n, out=dgi[:, H:2 * H]).mul_(dh).mul_(z)
        dzp.addcmul_(dzp, z, value=-1.0)
        drp = torch.mul(dnp, hn_all[:, t], out=dgi[:, :H]).mul_(r)
        drp.addcmul_(drp, r, value=-1.0)
        dgh[:, :2 * H].copy_(dgi[:, :2 * H])
        torch.mul(dnp, r, out=dgh[:, 2 * H:])
        db.add_(dgh)
        if t > 0:
            dW.addmm_(dgh.t(), h_prev)
        dh.mul_(z).addmm_(dgh, W)
    return dgi_all, dW, db.sum(0)


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, W, b):
        h, *saved = _cat(_batch_parallel(_gru_fwd, (gi,), (W.t().contiguous(), b)))
        ctx.save_for_backward(h, *saved, W)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, gh):
        *states, W = ctx.saved_tensors
        return _grads(_batch_parallel(_gru_bwd, (gh.contiguous(), *states), (W,)))


def gru(x: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU layer, initial state 0: x [B, T, n_in] (or an EventBatch) -> h [B, T, H]."""
    return _GRU.apply(project(x, W_ih, b_ih), W_hh, b_hh)


# ---------------------------------------------------------------- leaky readout
@torch.jit.script
def _leaky_scan(a: Tensor, beta: Tensor, reverse: bool) -> Tensor:
    """y_t = beta y_{t-1} + a_t (reverse: y_t = beta y_{t+1} + a_t)."""
    y_all = torch.empty_like(a)
    y = a.new_zeros(a.shape[0], a.shape[2])
    steps: List[int] = list(range(a.shape[1]))
    if reverse:
        steps.reverse()
    for t in steps:
        y = torch.addcmul(a[:, t], beta, y, out=y_all[:, t])
    return y_all


class _Leaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, beta):
        o = _leaky_scan(a, beta, False)
        ctx.save_for_backward(o, beta)
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        o, beta = ctx.saved_tensors
        do = _leaky_scan(go, beta, True)
        dbeta = (do[:, 1:] * o[:, :-1]).sum((0, 1))
        return do, dbeta.sum().reshape(beta.shape) if beta.numel() == 1 else dbeta


def readout(x: Tensor, p: ReadoutParams) -> Tensor:
    """The current stage, when there is one, is the same scan with alpha, feeding o through (1 - beta)."""
    a = project(x, p.W, p.b)
    if p.alpha is not None:
        a = (1 - p.beta) * _Leaky.apply(a, p.alpha)
    return _Leaky.apply(a, p.beta)
