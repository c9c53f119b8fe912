"""Per-timestep neuron step functions: DESIGN's equations written once, readably.

Norse style: a step takes the input at one timestep, the previous state and the
layer's parameters, and returns (output, new state); nothing is stored between
calls. A plain Python loop over these steps (`kernels.loop_steps`) is the ground
truth the fused kernels in `kernels.py` are tested against.

Shapes: x [B, n_in], states [B, n], W [n, n_in], U [n, n], b / alpha / beta [n].
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

VTH = 1.0  # firing threshold of every spiking neuron (DESIGN: vth = 1)
DEFAULT_CLIP = (-4.0, 4.0)  # training-time range of i and v, see SpikeOpts
# How LIF and Cuba-LIF reset after a spike. 'late' is the study's: the next step subtracts vth (DESIGN).
# 'subtract' and 'zero' reset in the step of the spike (NIR's and most frameworks' reading): the state v
# kept for the next step is v - vth, or 0.
RESETS = ("late", "subtract", "zero")


class SpikeOpts(NamedTuple):
    """Training-time options of the spiking neurons.

    clip: (low, high) range that i and v are clamped to after every update, or
    None for no clipping. The default [-4, 4] leaves room for four thresholds of
    drive while keeping states from drifting far below rest.
    scale, width: height and half-width of the triangle surrogate gradient
    (DESIGN: height 1, half-width vth).
    reset: one of RESETS (LIF and Cuba-LIF; SpikGRU always resets 'late').
    """
    clip: Optional[Tuple[float, float]] = DEFAULT_CLIP
    scale: float = 1.0
    width: float = VTH
    reset: str = "late"


def triangle(v: Tensor, vth: float, scale: float, width: float,
             out: Optional[Tensor] = None) -> Tensor:
    """Surrogate dH/dv: scale * max(0, 1 - |v - vth| / width), into `out` if given
    (the kernels' loops reuse one buffer)."""
    if out is None:
        out = torch.empty_like(v)
    return torch.sub(v, vth, out=out).abs_().mul_(-scale / width).add_(scale).relu_()


class TriangleSpike(torch.autograd.Function):
    """Heaviside step forward (spike when v > vth, or v >= vth when `inclusive`),
    triangle surrogate backward."""

    @staticmethod
    def forward(ctx, v, vth: float, scale: float, width: float, inclusive: bool):
        ctx.save_for_backward(v)
        ctx.shape_args = (vth, scale, width)
        return (v >= vth if inclusive else v > vth).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * triangle(v, *ctx.shape_args), None, None, None, None


def spike(v: Tensor, opts: SpikeOpts = SpikeOpts(), inclusive: bool = False) -> Tensor:
    return TriangleSpike.apply(v, VTH, opts.scale, opts.width, inclusive)


def clip(x: Tensor, opts: SpikeOpts) -> Tensor:
    return x if opts.clip is None else torch.clamp(x, *opts.clip)


class LIFState(NamedTuple):
    s: Tensor
    v: Tensor


class CubaLIFState(NamedTuple):
    """State of Cuba-LIF, Lava CUBA and SpikGRU neurons."""
    s: Tensor
    i: Tensor
    v: Tensor


class RNNState(NamedTuple):
    h: Tensor


class ReadoutState(NamedTuple):
    i: Tensor  # the current of a readout with a synaptic stage (unused without one)
    o: Tensor


def zero_state(state_cls, batch: int, n: int, like: Tensor):
    """All-zero initial state (DESIGN: all states 0 at t = 0)."""
    return state_cls(*(like.new_zeros(batch, n) for _ in state_cls._fields))


class LIFParams(NamedTuple):
    W: Tensor
    U: Tensor
    b: Tensor
    beta: Tensor


class CubaLIFParams(NamedTuple):
    """Cuba-LIF parameters; in Lava CUBA mode alpha and beta are shape [1] and
    b is added to v, as Lava's bias is."""
    W: Tensor
    U: Tensor
    b: Tensor
    alpha: Tensor
    beta: Tensor


class SpikGRUParams(NamedTuple):
    W: Tensor
    U: Tensor
    b: Tensor
    Wz: Tensor
    Uz: Tensor
    bz: Tensor
    alpha: Tensor  # the gate z takes beta's place, so SpikGRU has no beta


class RNNParams(NamedTuple):
    W: Tensor
    U: Tensor
    b: Tensor


class ReadoutParams(NamedTuple):
    """alpha None: the study's one-stage readout; a tensor: a current stage before o (NIR's CubaLI)."""
    W: Tensor
    b: Tensor
    beta: Tensor
    alpha: Optional[Tensor] = None


def late_reset(s_prev: Tensor, opts: SpikeOpts):
    """The study's reset term of this step's update: - vth s_{t-1} ('late'), none for the same-step resets."""
    return VTH * s_prev if opts.reset == "late" else 0.0


def fire(v: Tensor, opts: SpikeOpts) -> Tuple[Tensor, Tensor]:
    """(s_t, the v kept for the next step): H(v - vth), then the same-step reset if opts.reset asks for one."""
    s = spike(v, opts)
    if opts.reset == "subtract":
        return s, v - VTH * s
    if opts.reset == "zero":
        return s, v * (1 - s)
    return s, v


def lif_step(x: Tensor, st: LIFState, p: LIFParams, opts: SpikeOpts):
    """v_t = beta v_{t-1} + W x_t + U s_{t-1} + b - vth s_{t-1}; s_t = H(v_t - vth)
    (reset 'subtract' / 'zero': no - vth s_{t-1}; v_t - vth s_t, or 0 where s_t, is kept instead)."""
    v = p.beta * st.v + F.linear(x, p.W, p.b) + F.linear(st.s, p.U) - late_reset(st.s, opts)
    s, v = fire(clip(v, opts), opts)
    return s, LIFState(s, v)


def cuba_lif_step(x: Tensor, st: CubaLIFState, p: CubaLIFParams, opts: SpikeOpts):
    """i_t = alpha i_{t-1} + W x_t + U s_{t-1} + b;
    v_t = beta v_{t-1} + (1 - beta) i_t - vth s_{t-1}; s_t = H(v_t - vth) (other resets as lif_step)."""
    i = clip(p.alpha * st.i + F.linear(x, p.W, p.b) + F.linear(st.s, p.U), opts)
    v = clip(p.beta * st.v + (1 - p.beta) * i - late_reset(st.s, opts), opts)
    s, v = fire(v, opts)
    return s, CubaLIFState(s, i, v)


def lava_cuba_step(x: Tensor, st: CubaLIFState, p: CubaLIFParams, opts: SpikeOpts):
    """Lava's CUBA neuron: i_t = alpha i_{t-1} + W x_t + U s_{t-1};
    v_t = beta v_{t-1} (1 - s_{t-1}) + i_t + b (hard reset to 0, bias on v);
    s_t = H(v_t >= vth)."""
    i = clip(p.alpha * st.i + F.linear(x, p.W) + F.linear(st.s, p.U), opts)
    v = clip(p.beta * st.v * (1 - st.s) + i + p.b, opts)
    s = spike(v, opts, inclusive=True)
    return s, CubaLIFState(s, i, v)


def spikgru_step(x: Tensor, st: CubaLIFState, p: SpikGRUParams, opts: SpikeOpts):
    """i_t as Cuba-LIF; z_t = sigmoid(Wz x_t + Uz s_{t-1} + bz);
    v_t = z_t v_{t-1} + (1 - z_t) i_t - vth s_{t-1}; s_t = H(v_t - vth)."""
    i = clip(p.alpha * st.i + F.linear(x, p.W, p.b) + F.linear(st.s, p.U), opts)
    z = torch.sigmoid(F.linear(x, p.Wz, p.bz) + F.linear(st.s, p.Uz))
    v = clip(z * st.v + (1 - z) * i - VTH * st.s, opts)
    s = spike(v, opts)
    return s, CubaLIFState(s, i, v)


def rnn_step(x: Tensor, st: RNNState, p: RNNParams):
    """h_t = ReLU(W x_t + U h_{t-1} + b)."""
    h = torch.relu(F.linear(x, p.W, p.b) + F.linear(st.h, p.U))
    return h, RNNState(h)


def readout_step(x: Tensor, st: ReadoutState, p: ReadoutParams):
    """Leaky integrator without spike or reset: o_t = beta o_{t-1} + W s_t + b; with a current stage
    i_t = alpha i_{t-1} + W s_t + b, o_t = beta o_{t-1} + (1 - beta) i_t."""
    if p.alpha is None:
        o = p.beta * st.o + F.linear(x, p.W, p.b)
        return o, ReadoutState(st.i, o)
    i = p.alpha * st.i + F.linear(x, p.W, p.b)
    o = p.beta * st.o + (1 - p.beta) * i
    return o, ReadoutState(i, o)
