"""The integer operations of export/fixed_point.py in torch, with straight-through gradients, and the parameter
quantizers of export/quantize.py in torch: the pieces of the QAT forward (export/qat.py)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from export import fixed_point as fx
from train.models import SPIKING, RecurrentNet
from train.neurons import VTH, triangle

THETA = float(fx.THETA)
SAT = float(fx.STATE_MAX)
UNITY = float(fx.DECAY_UNITY)
TABLE = torch.from_numpy(fx.SIGMOID_TABLE.astype(np.float64))
HALF_TABLE = fx.SIGMOID_ENTRIES // 2


def straight_through(value: Tensor, path: Tensor) -> Tensor:
    """`value` forward, the gradient of `path` backward. path - path.detach() is exactly 0, so the
    forward is `value` bit for bit (the parentheses matter)."""
    return value.detach() + (path - path.detach())


def floor_st(x: Tensor) -> Tensor:
    return straight_through(torch.floor(x.detach()), x)


def trunc_st(x: Tensor) -> Tensor:
    return straight_through(torch.trunc(x.detach()), x)


def wrap24_st(u: Tensor) -> Tensor:
    """Lava CUBA's current wrap (fixed_point.lava_cuba_step), identity gradient."""
    top = float(fx.STATE_MAX + 1)
    span = float(1 << fx.STATE_BITS)
    shift = torch.where(u.detach() > top, -span, 0.0) + torch.where(u.detach() <= -top, span, 0.0)
    return u + shift


class SpikeST(torch.autograd.Function):
    """s = v > theta; backward the triangle surrogate of v / theta (threshold units), per state unit."""

    @staticmethod
    def forward(ctx, v, scale: float, width: float, theta: float = THETA):
        ctx.save_for_backward(v)
        ctx.shape_args = (scale, width)
        ctx.theta = theta
        return (v > theta).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad * triangle(v / ctx.theta, VTH, *ctx.shape_args) / ctx.theta, None, None, None


# ---------------------------------------------------------------- integer operations (fixed_point.py in torch)
def mul12(x: Tensor, f: Tensor) -> Tensor:
    """fixed_point.mul12: x * f / 4096 rounded toward zero (x * f < 2**36: exact)."""
    return trunc_st(x * f / UNITY)


def decay(x: Tensor, d: Tensor) -> Tensor:
    return mul12(x, UNITY - d)


def saturate(x: Tensor) -> Tensor:
    return x.clamp(-SAT, SAT)


def block_clamp(kind: str, block, theta: int = fx.THETA) -> tuple[float, float]:
    """The clamp of i and v in state units, as export/quantize.py sets QLayer.state_lo/hi: the block's
    training clip times theta (fixed_point.clip_bounds); lava-cuba keeps Lava's arithmetic (24-bit range)."""
    lo, hi = (-fx.STATE_MAX, fx.STATE_MAX) if kind == "lava-cuba" else fx.clip_bounds(block.opts.clip, theta)
    return float(lo), float(hi)


def dendrite(w_mant: Tensor, exp: int, s: Tensor) -> Tensor:
    """fixed_point.dendrite: sum(w_mant * s), shifted by exp (floor for exp < 0), saturated to 16 bits.

    s is float64, or float32 where every partial sum stays below 2**24 (exact; see _exact_input)."""
    acc = (s @ w_mant.t().to(s.dtype)).double()
    acc = acc * 2.0 ** exp if exp >= 0 else floor_st(acc * 2.0 ** exp)
    return acc.clamp(float(fx.ACC_MIN), float(fx.ACC_MAX))


def gate(az: Tensor, bias_z: Tensor) -> Tensor:
    """fixed_point.gate: sigmoid table at (az << 6 + bias_z) >> 12; gradient of 4096 * sigmoid(g / THETA)."""
    g = az * float(1 << fx.ACT_SHIFT) + bias_z
    idx = torch.floor(g.detach() / float(1 << fx.SIGMOID_SHIFT)).clamp(-HALF_TABLE, HALF_TABLE - 1)
    z = TABLE.to(g.device)[idx.long() + HALF_TABLE]
    return straight_through(z, UNITY * torch.sigmoid(g / THETA))


# ---------------------------------------------------------------- parameters -> integers (quantize.py in torch)
def q_weight(W: Tensor, vth_mant: int = fx.VTH_MANT) -> tuple[Tensor, int]:
    """(8-bit mantissa as float64, exponent) exactly as quantize.py's; straight-through inside the range."""
    w = W.detach().cpu().numpy()
    exp = fx.weight_exponent(w, vth_mant)
    mant, _ = fx.quantize_weight(w, exp, vth_mant)
    scaled = (W.double() * (vth_mant / 2.0 ** exp)).clamp(fx.W_MIN - 0.5, fx.W_MAX + 0.5)
    return straight_through(torch.from_numpy(mant).to(W.device, torch.float64), scaled), exp


def q_bias(b: Tensor, theta: int = fx.THETA) -> Tensor:
    """The bias in state units (bias_mant << bias_exp) as quantize.py's; straight-through inside the range."""
    mant, exp, _ = fx.quantize_bias(b.detach().cpu().numpy(), theta)
    lo, hi = (-fx.BIAS_MANT_MAX - 1.5) * 2.0 ** exp, (fx.BIAS_MANT_MAX + 0.5) * 2.0 ** exp
    value = torch.from_numpy(fx.bias_value(mant, exp)).to(b.device, torch.float64)
    return straight_through(value, (b.double() * float(theta)).clamp(lo, hi))


def q_decay(decay_factor: Tensor, lava: bool = False) -> Tensor:
    """12-bit d = round((1 - decay) * 4096) in [0, 4095] (fixed_point.decay_to_int); lava: the decay Lava's CUBA
    applies for the du it is given (fixed_point.lava_d(lava_du(d)), at least 1); straight-through in the range."""
    d = fx.decay_to_int(decay_factor.detach().cpu().numpy())
    if lava:
        d = fx.lava_d(fx.lava_du(d))
    path = ((1.0 - decay_factor.double()) * UNITY).clamp(float(lava) - 0.5, fx.DECAY_MAX + 0.5)
    return straight_through(torch.from_numpy(np.asarray(d)).to(decay_factor.device, torch.float64), path)


def layer_kind(model) -> str:
    """The exported neuron kind of a spiking RecurrentNet's hidden layers (quantize.quantize_model's rule)."""
    if not isinstance(model, RecurrentNet) or model.hidden_layers[0].kind not in SPIKING:
        raise TypeError(f"the fixed-point forward takes a lif, cuba-lif or spikgru RecurrentNet, "
                        f"not {type(model).__name__}")
    block = model.hidden_layers[0]
    return "lava-cuba" if getattr(block, "lava_cuba", False) else block.kind


