"""Fused full-sequence layer kernels with hand-written backpropagation through time.

Why: a per-timestep autograd loop spends most of its time creating and walking a
graph of tiny ops. Here the input projection of all timesteps is one matmul
(ordinary autograd, outside the loop) and the recurrence runs inside one
autograd.Function whose forward and backward loops are TorchScript: no Python
and no graph per step, one small matmul and a few element-wise ops per step.
Forward saves the pre-clip states; backward derives spikes' surrogates and clip
masks from them vectorised over time and sums every parameter gradient over time
after the loop.

Each kind also has a `*_reference` function: the same equations as a plain
Python loop of the `neurons.py` step functions with ordinary autograd. It is the
ground truth of the tests and the "plain loop" of the benchmark.

Public functions take x [B, T, n_in] and return [B, T, n]; inside the kernels
tensors are time-major [T, B, n] so that one timestep is one contiguous block.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .neurons import (VTH, CubaLIFParams, CubaLIFState, LIFParams, LIFState, ReadoutParams,
                      ReadoutState, RNNParams, RNNState, SpikeOpts, SpikGRUParams, cuba_lif_step,
                      lava_cuba_step, lif_step, readout_step, rnn_step, spikgru_step, triangle,
                      zero_state)


# ---------------------------------------------------------------- plain loop
def run_steps(step, x: Tensor, state, *args) -> Tensor:
    """The plain loop: one step-function call per timestep, ordinary autograd."""
    outputs = []
    for t in range(x.shape[1]):
        y, state = step(x[:, t], state, *args)
        outputs.append(y)
    return torch.stack(outputs, 1)


def _zeros(state_cls, x: Tensor, n: int):
    return zero_state(state_cls, x.shape[0], n, x)


def lif_reference(x: Tensor, p: LIFParams, opts: SpikeOpts) -> Tensor:
    return run_steps(lif_step, x, _zeros(LIFState, x, p.W.shape[0]), p, opts)


def cuba_lif_reference(x: Tensor, p: CubaLIFParams, opts: SpikeOpts, lava: bool = False) -> Tensor:
    step = lava_cuba_step if lava else cuba_lif_step
    return run_steps(step, x, _zeros(CubaLIFState, x, p.W.shape[0]), p, opts)


def spikgru_reference(x: Tensor, p: SpikGRUParams, opts: SpikeOpts) -> Tensor:
    return run_steps(spikgru_step, x, _zeros(CubaLIFState, x, p.W.shape[0]), p, opts)


def rnn_reference(x: Tensor, p: RNNParams) -> Tensor:
    return run_steps(rnn_step, x, _zeros(RNNState, x, p.W.shape[0]), p)


def readout_reference(x: Tensor, p: ReadoutParams) -> Tensor:
    return run_steps(readout_step, x, _zeros(ReadoutState, x, p.W.shape[0]), p)


# ---------------------------------------------------------------- helpers
def _bounds(opts: SpikeOpts) -> Tuple[float, float]:
    return opts.clip if opts.clip is not None else (-math.inf, math.inf)


def _time_major(a: Tensor) -> Tensor:
    return a.transpose(0, 1).contiguous()


def _prev(x: Tensor) -> Tensor:
    """x_{t-1} for every t (time-major), zero at t = 0."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]])


def _inside(x: Tensor, lo: float, hi: float) -> Tensor:
    """Where clamp(x, lo, hi) passes gradient (torch's rule: lo <= x <= hi)."""
    return ((x >= lo) & (x <= hi)).to(x.dtype)


def _outer_sum(g: Tensor, x: Tensor) -> Tensor:
    """sum over t and batch of g_t^T x_t: the gradient of a matrix applied to x."""
    return g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1])


def _sum_bt(x: Tensor) -> Tensor:
    return x.sum((0, 1))


# ---------------------------------------------------------------- LIF
@torch.jit.script
def _lif_fwd(a: Tensor, UT: Tensor, beta: Tensor, lo: float, hi: float,
             vth: float) -> Tuple[Tensor, Tensor]:
    s_all, vp_all = torch.empty_like(a), torch.empty_like(a)
    s, v = torch.zeros_like(a[0]), torch.zeros_like(a[0])
    for t in range(a.shape[0]):
        vp = torch.addmm(a[t], s, UT) + beta * v - vth * s
        v = vp.clamp(lo, hi)
        s = (v > vth).to(a.dtype)
        vp_all[t], s_all[t] = vp, s
    return s_all, vp_all


@torch.jit.script
def _lif_bwd(gs: Tensor, sg: Tensor, mv: Tensor, U: Tensor, beta: Tensor, vth: float) -> Tensor:
    dvp_all = torch.empty_like(gs)
    dvp = torch.zeros_like(gs[0])
    for t in range(gs.shape[0] - 1, -1, -1):
        ds = torch.addmm(gs[t] - vth * dvp, dvp, U)
        dvp = (beta * dvp + ds * sg[t]) * mv[t]
        dvp_all[t] = dvp
    return dvp_all


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U, beta, opts: SpikeOpts):
        lo, hi = _bounds(opts)
        s, vp = _lif_fwd(a, U.t().contiguous(), beta, lo, hi, VTH)
        ctx.save_for_backward(s, vp, U, beta)
        ctx.opts = opts
        return s

    @staticmethod
    def backward(ctx, gs):
        s, vp, U, beta = ctx.saved_tensors
        opts = ctx.opts
        lo, hi = _bounds(opts)
        v = vp.clamp(lo, hi)
        dvp = _lif_bwd(gs.contiguous(), triangle(v, VTH, opts.scale, opts.width),
                       _inside(vp, lo, hi), U, beta, VTH)
        return dvp, _outer_sum(dvp, _prev(s)), _sum_bt(dvp * _prev(v)), None


def lif(x: Tensor, p: LIFParams, opts: SpikeOpts) -> Tensor:
    a = _time_major(F.linear(x, p.W, p.b))
    return _LIF.apply(a, p.U, p.beta, opts).transpose(0, 1)


# ---------------------------------------------------------------- Cuba-LIF
@torch.jit.script
def _cuba_fwd(a: Tensor, UT: Tensor, alpha: Tensor, beta: Tensor, bv: Tensor, lo: float,
              hi: float, vth: float, lava: bool) -> Tuple[Tensor, Tensor, Tensor]:
    s_all, ip_all, vp_all = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
    s, i, v = torch.zeros_like(a[0]), torch.zeros_like(a[0]), torch.zeros_like(a[0])
    for t in range(a.shape[0]):
        ip = torch.addmm(a[t], s, UT) + alpha * i
        i = ip.clamp(lo, hi)
        if lava:
            vp = beta * v * (1 - s) + i + bv
            v = vp.clamp(lo, hi)
            s = (v >= vth).to(a.dtype)
        else:
            vp = beta * v + (1 - beta) * i - vth * s
            v = vp.clamp(lo, hi)
            s = (v > vth).to(a.dtype)
        s_all[t], ip_all[t], vp_all[t] = s, ip, vp
    return s_all, ip_all, vp_all


@torch.jit.script
def _cuba_bwd(gs: Tensor, sg: Tensor, mi: Tensor, mv: Tensor, U: Tensor, alpha: Tensor,
              keep: Tensor, reset: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """keep[t] = d vp_{t+1} / d v_t, reset[t] = -d vp_{t+1} / d s_t, c = d vp_t / d i_t."""
    dip_all, dvp_all = torch.empty_like(gs), torch.empty_like(gs)
    dip, dvp = torch.zeros_like(gs[0]), torch.zeros_like(gs[0])
    for t in range(gs.shape[0] - 1, -1, -1):
        ds = torch.addmm(gs[t] - reset[t] * dvp, dip, U)
        dvp = (keep[t] * dvp + ds * sg[t]) * mv[t]
        dip = (alpha * dip + c * dvp) * mi[t]
        dip_all[t], dvp_all[t] = dip, dvp
    return dip_all, dvp_all


class _CubaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U, alpha, beta, bv, opts: SpikeOpts, lava: bool):
        lo, hi = _bounds(opts)
        s, ip, vp = _cuba_fwd(a, U.t().contiguous(), alpha, beta, bv, lo, hi, VTH, lava)
        ctx.save_for_backward(s, ip, vp, U, alpha, beta)
        ctx.opts, ctx.lava = opts, lava
        return s

    @staticmethod
    def backward(ctx, gs):
        s, ip, vp, U, alpha, beta = ctx.saved_tensors
        opts, lava = ctx.opts, ctx.lava
        lo, hi = _bounds(opts)
        i, v = ip.clamp(lo, hi), vp.clamp(lo, hi)
        if lava:  # vp_t = beta v_{t-1} (1 - s_{t-1}) + i_t + bv
            keep, reset, c = beta * (1 - s), beta * v, torch.ones_like(beta)
        else:  # vp_t = beta v_{t-1} + (1 - beta) i_t - vth s_{t-1}
            keep, reset, c = beta.expand(len(s), 1, -1), torch.full_like(s[:, :1, :1], VTH), 1 - beta
        dip, dvp = _cuba_bwd(gs.contiguous(), triangle(v, VTH, opts.scale, opts.width),
                             _inside(ip, lo, hi), _inside(vp, lo, hi), U, alpha, keep, reset, c)
        v_prev, s_prev = _prev(v), _prev(s)
        if lava:
            dbeta, dbv = _sum_bt(dvp * v_prev * (1 - s_prev)), _sum_bt(dvp)
        else:
            dbeta, dbv = _sum_bt(dvp * (v_prev - i)), None
        return (dip, _outer_sum(dip, s_prev), _sum_bt(dip * _prev(i)), dbeta, dbv, None, None)


def cuba_lif(x: Tensor, p: CubaLIFParams, opts: SpikeOpts, lava: bool = False) -> Tensor:
    """lava=True: Lava's CUBA (see neurons.lava_cuba_step); alpha, beta shape [1], b on v."""
    n = p.W.shape[0]
    if lava:
        a, alpha, beta, bv = F.linear(x, p.W), p.alpha.expand(n), p.beta.expand(n), p.b
    else:
        a, alpha, beta, bv = F.linear(x, p.W, p.b), p.alpha, p.beta, p.b.new_zeros(n)
    return _CubaLIF.apply(_time_major(a), p.U, alpha, beta, bv, opts, lava).transpose(0, 1)


# ---------------------------------------------------------------- SpikGRU
@torch.jit.script
def _spikgru_fwd(a: Tensor, UT: Tensor, alpha: Tensor, lo: float, hi: float,
                 vth: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """a, UT carry the current and the gate side by side: [..., :N] and [..., N:]."""
    n = UT.shape[0]
    s_all = torch.empty_like(a[..., :n])
    ip_all, z_all, vp_all = torch.empty_like(s_all), torch.empty_like(s_all), torch.empty_like(s_all)
    s, i, v = torch.zeros_like(s_all[0]), torch.zeros_like(s_all[0]), torch.zeros_like(s_all[0])
    for t in range(a.shape[0]):
        r = torch.addmm(a[t], s, UT)
        ip = r[:, :n] + alpha * i
        i = ip.clamp(lo, hi)
        z = torch.sigmoid(r[:, n:])
        vp = i + z * (v - i) - vth * s
        v = vp.clamp(lo, hi)
        s = (v > vth).to(a.dtype)
        s_all[t], ip_all[t], z_all[t], vp_all[t] = s, ip, z, vp
    return s_all, ip_all, z_all, vp_all


@torch.jit.script
def _spikgru_bwd(gs: Tensor, sg: Tensor, mi: Tensor, mv: Tensor, z: Tensor, kz: Tensor,
                 U: Tensor, alpha: Tensor, vth: float) -> Tensor:
    """Returns d/d(current, gate pre-activation) side by side, [T, B, 2N]; kz = dvp/dzp."""
    n = U.shape[1]
    g_all = torch.empty(gs.shape[0], gs.shape[1], 2 * n, dtype=gs.dtype, device=gs.device)
    g = torch.zeros_like(g_all[0])
    dvp, z_next = torch.zeros_like(gs[0]), torch.zeros_like(gs[0])
    for t in range(gs.shape[0] - 1, -1, -1):
        ds = torch.addmm(gs[t] - vth * dvp, g, U)
        dvp = (z_next * dvp + ds * sg[t]) * mv[t]
        dip = (alpha * g[:, :n] + (1 - z[t]) * dvp) * mi[t]
        g = g_all[t]
        g[:, :n] = dip
        g[:, n:] = dvp * kz[t]
        z_next = z[t]
    return g_all


class _SpikGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U, alpha, opts: SpikeOpts):
        lo, hi = _bounds(opts)
        s, ip, z, vp = _spikgru_fwd(a, U.t().contiguous(), alpha, lo, hi, VTH)
        ctx.save_for_backward(s, ip, z, vp, U, alpha)
        ctx.opts = opts
        return s

    @staticmethod
    def backward(ctx, gs):
        s, ip, z, vp, U, alpha = ctx.saved_tensors
        opts = ctx.opts
        lo, hi = _bounds(opts)
        i, v = ip.clamp(lo, hi), vp.clamp(lo, hi)
        kz = (_prev(v) - i) * z * (1 - z)
        g = _spikgru_bwd(gs.contiguous(), triangle(v, VTH, opts.scale, opts.width),
                         _inside(ip, lo, hi), _inside(vp, lo, hi), z, kz, U, alpha, VTH)
        n = U.shape[1]
        return g, _outer_sum(g, _prev(s)), _sum_bt(g[..., :n] * _prev(i)), None


def spikgru(x: Tensor, p: SpikGRUParams, opts: SpikeOpts) -> Tensor:
    a = F.linear(x, torch.cat([p.W, p.Wz]), torch.cat([p.b, p.bz]))
    U = torch.cat([p.U, p.Uz])
    return _SpikGRU.apply(_time_major(a), U, p.alpha, opts).transpose(0, 1)


# ---------------------------------------------------------------- RNN (ReLU)
@torch.jit.script
def _rnn_fwd(a: Tensor, UT: Tensor) -> Tensor:
    h_all = torch.empty_like(a)
    h = torch.zeros_like(a[0])
    for t in range(a.shape[0]):
        h = torch.relu(torch.addmm(a[t], h, UT))
        h_all[t] = h
    return h_all


@torch.jit.script
def _rnn_bwd(gh: Tensor, active: Tensor, U: Tensor) -> Tensor:
    dhp_all = torch.empty_like(gh)
    dhp = torch.zeros_like(gh[0])
    for t in range(gh.shape[0] - 1, -1, -1):
        dhp = torch.addmm(gh[t], dhp, U) * active[t]
        dhp_all[t] = dhp
    return dhp_all


class _RNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, U):
        h = _rnn_fwd(a, U.t().contiguous())
        ctx.save_for_backward(h, U)
        return h

    @staticmethod
    def backward(ctx, gh):
        h, U = ctx.saved_tensors
        dhp = _rnn_bwd(gh.contiguous(), (h > 0).to(h.dtype), U)
        return dhp, _outer_sum(dhp, _prev(h))


def rnn(x: Tensor, p: RNNParams) -> Tensor:
    return _RNN.apply(_time_major(F.linear(x, p.W, p.b)), p.U).transpose(0, 1)


# ---------------------------------------------------------------- leaky readout
@torch.jit.script
def _leaky_scan(a: Tensor, beta: Tensor, reverse: bool) -> Tensor:
    """y_t = beta y_{t-1} + a_t (reverse: y_t = beta y_{t+1} + a_t)."""
    y_all = torch.empty_like(a)
    y = torch.zeros_like(a[0])
    steps: List[int] = list(range(a.shape[0]))
    if reverse:
        steps.reverse()
    for t in steps:
        y = beta * y + a[t]
        y_all[t] = y
    return y_all


class _Leaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, beta):
        o = _leaky_scan(a, beta, False)
        ctx.save_for_backward(o, beta)
        return o

    @staticmethod
    def backward(ctx, go):
        o, beta = ctx.saved_tensors
        do = _leaky_scan(go.contiguous(), beta, True)
        return do, _sum_bt(do * _prev(o))


def readout(x: Tensor, p: ReadoutParams) -> Tensor:
    return _Leaky.apply(_time_major(F.linear(x, p.W, p.b)), p.beta).transpose(0, 1)
