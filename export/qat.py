"""A PyTorch forward that computes the fixed-point network exactly, with straight-through gradients (for QAT).

`run_fixed_point(model, counts)` runs a float spiking model (train.models.RecurrentNet: lif,
cuba-lif, spikgru, and cuba-lif with lava_cuba) the way its exported QNetwork runs
(docs/fixed_point.md): every parameter is quantized on the fly exactly as export/quantize.py
does it (the same export.fixed_point functions pick exponents and mantissas), and every step
is the integer arithmetic of export.fixed_point's step functions in torch, on float64 tensors
that hold integers (every value stays far below 2**53, so all of it is exact; the input
dendrite runs in float32 when its sums stay below 2**24, also exact). Spikes and readout equal
export.qnet.run_network on quantize_model(model) bit for bit (tests/test_qat.py).

Gradients (the forward values are untouched):
- rounding, flooring, shifts, the truncating 12-bit multiply: straight-through (identity);
- saturation (weight and bias mantissas, decays, 16-bit dendrites, the state clamp of i and v
  [state_lo, state_hi], i.e. the training clip in state units or the 24-bit range): identity inside
  the range (bounds included, as torch.clamp), zero outside; Lava CUBA's 24-bit current wrap: identity;
- the spike v > THETA: the layer's triangle surrogate (train.neurons.triangle, its scale and
  width) in threshold units; Lava CUBA's hard reset passes gradient through the spike;
- the SpikGRU sigmoid table: the derivative of the true sigmoid at the gate input.
The chain rule then keeps the float model's gradient scale (a weight w acts as w * THETA
state units), and the gradients point where the float model's do (tested).

Layers run one after the other over the whole sequence (the same result as run_network's
step-major order: no layer feeds a lower one); a layer's input dendrite is one matmul over all
steps. The recurrence of a hidden layer is a fused autograd.Function (`_FusedHidden`: forward
without a graph, backpropagation through time written out, states kept as float32, exact below
2**24), tested equal in value and gradient to `_hidden_reference`, the same equations as a
plain autograd loop (`run_fixed_point(..., fused=False)`).

`FixedPointNet(model)` wraps a model so that train.trainer trains and evaluates it with the
fixed-point forward; its state_dict is the float model's, so checkpoints stay ordinary
training checkpoints. export/finetune.py is the QAT recipe on top (`cli.py finetune`); the integer
operations and straight-through quantizers are in export/qat_ops.py.

One of four forms of the fixed-point arithmetic (with export/fixed_point.py, the spec, and the fast
engine, sim/engine.py): export/fixed_point.py is the specification; this form is tested bit-equal to it
(tests/test_qat.py) and to the conformance sequences every form must reproduce (tests/test_fixed_point_forms.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from export import fixed_point as fx
from export.qat_ops import (HALF_TABLE, SAT, TABLE, THETA, UNITY, SpikeST, block_clamp, decay, dendrite, gate,
                            layer_kind, mul12, q_bias, q_decay, q_weight, saturate, wrap24_st)
from export.quantize import block_vth
from train.neurons import VTH, triangle


# ---------------------------------------------------------------- one hidden layer
def _layer_params(kind: str, block) -> dict:
    """A block's parameters as the integers its QLayer holds (float64, straight-through gradients); 'theta' the
    layer's threshold (export.quantize.block_vth: below THETA for weights beyond 8 bits at the standard one)."""
    vth = block_vth(kind, block.export_params())
    theta = fx.theta_of(vth)
    p = {"W": q_weight(block.W, vth), "bias": q_bias(block.b, theta), "theta": theta}
    if getattr(block, "recurrent", True):
        p["U"] = q_weight(block.U, vth)
    if kind == "spikgru":
        p.update(Wz=q_weight(block.Wz), Uz=q_weight(block.Uz), bias_z=q_bias(block.bz))
    if kind in ("cuba-lif", "spikgru"):
        p["di"] = q_decay(block.alpha)
    if kind == "lava-cuba":
        p["di"] = q_decay(block.alpha, lava=True)
    if kind in ("lif", "cuba-lif", "lava-cuba"):
        p["dv"] = q_decay(block.beta)
    return p


def _hidden_reference(kind: str, p: dict, x: Tensor, scale: float, width: float,
                      lo: float = -SAT, hi: float = SAT, reset: str = "late") -> Tensor:
    """One spiking layer by plain autograd, one step at a time: x [B, T, n_in] -> spikes [B, T, n].

    The readable definition (fixed_point.py's step functions with straight-through gradients); the
    fused kernel below must equal it in value and gradient (tests/test_qat.py). It alone runs the
    same-step resets and layers without recurrence (no "U" in p)."""
    (W, eW), bias = p["W"], p["bias"]
    U, eU = p.get("U", (None, 0))
    a_ff = dendrite(W, eW, x).unbind(1)  # per-step views: one backward node, not one per step
    if kind == "spikgru":
        (Wz, eWz), (Uz, eUz), bias_z = p["Wz"], p["Uz"], p["bias_z"]
        az_ff = dendrite(Wz, eWz, x).unbind(1)
    di, dv = p.get("di"), p.get("dv")
    act = float(1 << fx.ACT_SHIFT)
    zero = x.new_zeros(x.shape[0], W.shape[0])
    s, i, v = zero, zero, zero
    late = 1.0 if reset == "late" else 0.0
    theta = float(p.get("theta", THETA))
    out = []
    for t in range(x.shape[1]):
        a = a_ff[t] if U is None else a_ff[t] + dendrite(U, eU, s)
        if kind == "lif":
            v = (decay(v, dv) + a * act + bias - late * theta * s).clamp(lo, hi)
        elif kind == "cuba-lif":
            i = (decay(i, di) + a * act + bias).clamp(lo, hi)
            v = (decay(v, dv) + mul12(i, dv) - late * theta * s).clamp(lo, hi)
        elif kind == "spikgru":
            i = (decay(i, di) + a * act + bias).clamp(lo, hi)
            z = gate(az_ff[t] + dendrite(Uz, eUz, s), bias_z)
            v = (mul12(v, z) + mul12(i, UNITY - z) - THETA * s).clamp(lo, hi)
        elif kind == "lava-cuba":
            i = wrap24_st(decay(i, di) + a * act)
            v = saturate(decay(v, dv) + i + bias)
        else:
            raise ValueError(f"no fixed-point forward for a {kind} layer")
        s = SpikeST.apply(v, scale, width, theta)
        if kind == "lava-cuba" or reset == "zero":
            v = v * (1.0 - s)  # hard reset to 0 (exactly fixed_point's where(s, 0, v)), gradient through s
        elif reset == "subtract":
            v = v - theta * s
        out.append(s)
    return torch.stack(out, 1)


# ---------------------------------------------------------------- the fused kernel
def _imul12(x: Tensor, f) -> Tensor:
    return (x * f).div_(UNITY).trunc_()


def _inside(x: Tensor, lo: float, hi: float) -> Tensor:
    """Where clamp(x, lo, hi) passes gradient (torch's rule: lo <= x <= hi)."""
    return (x >= lo) & (x <= hi)


def _irec(s: Tensor, UT: Tensor, exp: int) -> tuple[Tensor, Tensor]:
    """The recurrent dendrite without autograd: (16-bit value, inside-the-range mask)."""
    acc = (s @ UT).mul_(2.0 ** exp)
    if exp < 0:
        acc.floor_()
    inside = _inside(acc, float(fx.ACC_MIN), float(fx.ACC_MAX))
    return acc.clamp_(float(fx.ACC_MIN), float(fx.ACC_MAX)), inside


class _FusedHidden(torch.autograd.Function):
    """One spiking layer over the whole sequence: the recurrence runs without autograd and
    backpropagation through time is written out, with exactly _hidden_reference's gradients.

    Inputs are time-major: a_ff, az_ff [T, B, n] (the feed-forward dendrites); U, Uz mantissas;
    bias, bias_z in state units; di (lava-cuba: fixed_point.lava_d(du)), dv 12-bit decays; lo, hi the state clamp
    (lava-cuba: the 24-bit range). Returns spikes [T, B, n]."""

    @staticmethod
    def forward(ctx, kind, eU, eUz, scale, width, lo, hi, a_ff, U, bias, di, dv, az_ff, Uz, bias_z):
        T, B, n = a_ff.shape
        act = float(1 << fx.ACT_SHIFT)
        zero = a_ff.new_zeros(B, n)
        s, i, v = zero, zero, zero
        S = torch.empty_like(a_ff)
        # saved states are integers below 2**24: float32 holds them exactly at half the memory
        I, V = (torch.empty(T, B, n, dtype=torch.float32, device=a_ff.device) for _ in range(2))
        MR, MI, MV = (torch.empty(T, B, n, dtype=torch.bool, device=a_ff.device) for _ in range(3))
        UT = U.t().contiguous()
        ki = None if di is None else UNITY - di
        kv = None if dv is None else UNITY - dv
        if kind == "spikgru":
            UzT, MRZ = Uz.t().contiguous(), torch.empty_like(MR)
            G, Z = torch.empty_like(I), torch.empty_like(I)
            table = TABLE.to(a_ff.device)
        if kind == "lava-cuba":
            VS = torch.empty_like(I)
        for t in range(T):
            rec, MR[t] = _irec(s, UT, eU)
            a = rec.add_(a_ff[t]).mul_(act)
            if kind == "lif":
                vp = _imul12(v, kv).add_(a).add_(bias).sub_(THETA * s)
            elif kind in ("cuba-lif", "spikgru"):
                ip = _imul12(i, ki).add_(a).add_(bias)
                MI[t] = _inside(ip, lo, hi)
                i = ip.clamp_(lo, hi)
                if kind == "cuba-lif":
                    vp = _imul12(v, kv).add_(_imul12(i, dv)).sub_(THETA * s)
                else:
                    recz, MRZ[t] = _irec(s, UzT, eUz)
                    g = recz.add_(az_ff[t]).mul_(act).add_(bias_z)
                    idx = torch.floor(g / float(1 << fx.SIGMOID_SHIFT)).clamp_(-HALF_TABLE, HALF_TABLE - 1)
                    z = table[idx.long() + HALF_TABLE]
                    G[t], Z[t] = g, z
                    vp = _imul12(v, z).add_(_imul12(i, UNITY - z)).sub_(THETA * s)
            elif kind == "lava-cuba":
                u = _imul12(i, ki).add_(a)
                span = float(1 << fx.STATE_BITS)  # fixed_point.lava_cuba_step's 24-bit wrap
                i = u - span * (u > fx.STATE_MAX + 1) + span * (u <= -(fx.STATE_MAX + 1))
                vp = _imul12(v, kv).add_(i).add_(bias)
            else:
                raise ValueError(f"no fixed-point forward for a {kind} layer")
            MV[t] = _inside(vp, lo, hi)
            v = vp.clamp_(lo, hi)
            s = (v > THETA).to(a_ff.dtype)
            if kind == "lava-cuba":
                VS[t] = v
                v = v * (1.0 - s)
            S[t], I[t], V[t] = s, i, v
        saved = [S, I, V, MR, MI, MV, U, di, dv]
        if kind == "spikgru":
            saved += [G, Z, MRZ, Uz]
        if kind == "lava-cuba":
            saved += [VS]
        ctx.save_for_backward(*saved)
        ctx.args = (kind, eU, eUz, scale, width)
        return S

    @staticmethod
    def backward(ctx, gS):
        # Per step: d1 = dL/d(current before saturation) (LIF: the voltage's), d2 = dL/d(voltage before
        # saturation), dacc = dL/d(recurrent accumulation); *_n are the next step's. Everything is computed
        # step by step on [B, n] tensors (no [T, B, n] temporaries but the input gradients).
        kind, eU, eUz, scale, width = ctx.args
        S, I, V, MR, MI, MV, U, di, dv, *extra = ctx.saved_tensors
        gS = gS.contiguous()
        dt = gS.dtype
        act = float(1 << fx.ACT_SHIFT)
        rec_gain = act * 2.0 ** eU  # d(recurrent accumulation) per d(dendritic input << 6 ...), inside the range
        kv = None if dv is None else (UNITY - dv) / UNITY
        ki = None if di is None else (UNITY - di) / UNITY
        if kind == "spikgru":
            G, Z, MRZ, Uz = extra
            recz_gain = act * 2.0 ** eUz
            gAz, gUz, gbz = torch.empty_like(gS), torch.zeros_like(Uz), gS.new_zeros(gS.shape[-1])
            daccz_n, z_n = torch.zeros_like(gS[0]), torch.zeros_like(gS[0])
        if kind == "lava-cuba":
            (VS,) = extra
        T = gS.shape[0]
        gA, gU = torch.empty_like(gS), torch.zeros_like(U)
        n = gS.shape[-1]
        gb, gdi, gdv = gS.new_zeros(n), gS.new_zeros(n), gS.new_zeros(n)
        zero = torch.zeros_like(gS[0])
        d1_n, d2_n, dacc_n = zero, zero, zero
        for t in range(T - 1, -1, -1):
            s_prev = S[t - 1].to(dt) if t else zero
            v_prev = V[t - 1].to(dt) if t else zero
            i_prev = I[t - 1].to(dt) if t else zero
            v_spk = (VS if kind == "lava-cuba" else V)[t].to(dt)
            sg = triangle(v_spk / THETA, VTH, scale, width).div_(THETA)
            mv = MV[t].to(dt)
            ds = torch.addmm(gS[t], dacc_n, U)
            if kind == "lif":
                ds -= THETA * d2_n
                d2 = (ds * sg + kv * d2_n).mul_(mv)
                d1 = d2
                gdv -= (d2 * v_prev).sum(0)
            elif kind == "cuba-lif":
                ds -= THETA * d2_n
                d2 = (ds * sg + kv * d2_n).mul_(mv)
                d1 = (d2 * (dv / UNITY) + ki * d1_n).mul_(MI[t].to(dt))
                gdv += (d2 * (I[t].to(dt) - v_prev)).sum(0)
            elif kind == "spikgru":
                ds.addmm_(daccz_n, Uz).sub_(THETA * d2_n)
                z = Z[t].to(dt)
                d2 = (ds * sg + z_n / UNITY * d2_n).mul_(mv)
                d1 = (d2 * ((UNITY - z) / UNITY) + ki * d1_n).mul_(MI[t].to(dt))
                sig = torch.sigmoid(G[t].to(dt) / THETA)
                dg = d2 * (v_prev - I[t].to(dt)) * (sig * (1.0 - sig) / THETA)  # 4096 * sigmoid' / THETA / 4096
                daccz = dg * MRZ[t].to(dt) * recz_gain
                gAz[t] = dg * act
                gbz += dg.sum(0)
                gUz.addmm_(daccz.t(), s_prev)
                daccz_n, z_n = daccz, z
            else:  # lava-cuba: d1 = dL/du (before the wrap), the bias and dv act on v
                dvr = kv * d2_n
                ds -= dvr * v_spk
                d2 = (dvr * (1.0 - S[t].to(dt)) + ds * sg).mul_(mv)
                d1 = d2 + ki * d1_n
                gdv -= (d2 * v_prev).sum(0)
            dacc = d1 * MR[t].to(dt) * rec_gain
            gA[t] = d1 * act
            gb += (d2 if kind == "lava-cuba" else d1).sum(0)
            if kind != "lif":
                gdi -= (d1 * i_prev).sum(0)
            gU.addmm_(dacc.t(), s_prev)
            d1_n, d2_n, dacc_n = d1, d2, dacc
        shaped = lambda g, like: None if like is None else (g.sum().reshape(like.shape) / UNITY if like.numel() == 1
                                                             else g / UNITY)
        out = [None] * 7 + [gA, gU, gb, shaped(gdi, di), shaped(gdv, dv)]
        out += [gAz, gUz, gbz] if kind == "spikgru" else [None] * 3
        return tuple(out)


def _hidden_fused(kind: str, p: dict, x: Tensor, scale: float, width: float,
                  lo: float = -SAT, hi: float = SAT) -> Tensor:
    (W, eW), (U, eU), bias = p["W"], p["U"], p["bias"]
    tm = lambda a: a.transpose(0, 1).contiguous()
    a_ff = tm(dendrite(W, eW, x))
    az_ff = Uz = bias_z = None
    eUz = 0
    if kind == "spikgru":
        (Wz, eWz), (Uz, eUz), bias_z = p["Wz"], p["Uz"], p["bias_z"]
        az_ff = tm(dendrite(Wz, eWz, x))
    s = _FusedHidden.apply(kind, eU, eUz, scale, width, lo, hi, a_ff, U, bias, p.get("di"), p.get("dv"), az_ff, Uz, bias_z)
    return s.transpose(0, 1)


def _hidden_layer(kind: str, block, x: Tensor, fused: bool = True) -> Tensor:
    """One spiking layer: x [B, T, n_in] (float64 integers) -> spikes [B, T, n]."""
    p, reset = _layer_params(kind, block), block.opts.reset
    bounds = block_clamp(kind, block, p["theta"])
    if fused and reset == "late" and "U" in p and p["theta"] == fx.THETA:
        return _hidden_fused(kind, p, x, block.opts.scale, block.opts.width, *bounds)
    return _hidden_reference(kind, p, x, block.opts.scale, block.opts.width, *bounds, reset)


def _readout(block, x: Tensor) -> Tensor:
    vth = block_vth("readout", block.export_params())
    W, eW = q_weight(block.W, vth)
    bias = q_bias(block.b, fx.theta_of(vth))
    dv = q_decay(block.beta)
    di = None if block.alpha is None else q_decay(block.alpha)
    a_ff = (dendrite(W, eW, x) * float(1 << fx.ACT_SHIFT) + bias).unbind(1)
    o = i = x.new_zeros(x.shape[0], W.shape[0])
    out = []
    for a in a_ff:
        if di is None:
            o = saturate(decay(o, dv) + a)
        else:
            i = saturate(decay(i, di) + a)
            o = saturate(decay(o, dv) + mul12(i, dv))
        out.append(o)
    return torch.stack(out, 1)


def _exact_input(counts: Tensor) -> Tensor:
    """Payloads clipped to 8 bits; float32 when a float32 matmul of them is exact (every partial sum of
    w_mant * count, |w_mant| <= 128, stays below 2**24: half the memory and time of float64), else float64."""
    if counts.dtype == torch.float32:
        x = counts.clamp(0, fx.PAYLOAD_MAX)
        if x.numel() == 0 or float(x.sum(-1).max()) * (-fx.W_MIN) < 2 ** 24:
            return x
    return counts.to(torch.float64).clamp(0, fx.PAYLOAD_MAX)


def run_fixed_point(model, counts: Tensor, fused: bool = True) -> dict:
    """The fixed-point network of a float spiking model on spike counts [B, T, C] (clipped to 8 bits).

    Returns {'spikes': [per hidden layer [B, T, n] float64 0/1], 'readout': [B, T, K] float64 integer
    state units}, equal to export.qnet.run_network(quantize_model(model)) and differentiable.
    fused=False runs the plain autograd loop (the readable reference; slower, more memory).
    """
    kind = layer_kind(model)
    x = _exact_input(torch.as_tensor(counts))
    spikes = []
    for block in model.hidden_layers:
        x = _hidden_layer(kind, block, x, fused)
        spikes.append(x)
    return {"spikes": spikes, "readout": _readout(model.readout, x)}


class FixedPointNet(nn.Module):
    """A float spiking model run by its fixed-point forward, readout in threshold units (o / THETA).

    Drop-in for the trainer: same call signature as RecurrentNet, clamp_() clips the decays,
    state_dict()/load_state_dict() are the wrapped float model's (no prefix).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        layer_kind(model)
        self.net = model

    def forward(self, x: Tensor, return_hidden: bool = False):
        r = run_fixed_point(self.net, x)
        out = r["readout"] / fx.theta_of(block_vth("readout", self.net.readout.export_params()))
        return (out, r["spikes"]) if return_hidden else out

    def clamp_(self, low: float = 0.0, high: float = 1.0) -> None:
        self.net.clamp_(low, high)

    def state_dict(self, *args, **kwargs):
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        return self.net.load_state_dict(state_dict, strict=strict, **kwargs)


