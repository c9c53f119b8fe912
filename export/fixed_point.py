"""The fixed-point spec in code: Loihi 2 integer arithmetic of the study's neurons.

This module is the specification of fixed-point behaviour (see docs/fixed_point.md). The
same arithmetic exists, on purpose, in three more forms, each saying so at its top: the PyTorch
QAT forward (export/qat.py, straight-through gradients), the fast engine (sim/integer_net.py,
batched for speed) and the Lava `fixed_pt` ProcessModels (lava_procs/models.py, which call these
functions). Every form is tested equal to this one and against the literal sequences of
tests/test_fixed_point_forms.py, which fail in every form when this spec changes.

Every function is plain numpy on integer arrays whose last axis is the neuron axis,
so the same code runs one Lava process (shape [n]) or a whole batch ([B, n]).

Units: the threshold is THETA = VTH_MANT << 6 = 2**16 state units and stands for
vth = 1; a float state x is the integer x * THETA. A weight w is a mantissa
w_mant in [-128, 127] and a per-connection exponent e with w ~ w_mant * 2**e /
VTH_MANT; the dendrite accumulates sum(w_mant * s), shifts it by e (left for e > 0,
arithmetic right, i.e. floor, for e < 0, as Lava's Dense does) and saturates it to
16 bits; the neuron adds it << 6.
"""
from __future__ import annotations

import numpy as np

WEIGHT_BITS = 8
W_MIN, W_MAX = -(1 << (WEIGHT_BITS - 1)), (1 << (WEIGHT_BITS - 1)) - 1  # -128, 127
EXP_MIN, EXP_MAX = -8, 7  # per-connection weight exponent
ACC_BITS = 16
ACC_MIN, ACC_MAX = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
ACT_SHIFT = 6  # synaptic input MSB alignment (Lava: act_shift)
VTH_SHIFT = 6  # threshold MSB alignment (Lava: vth_shift)
VTH_MANT = 1 << 10
THETA = VTH_MANT << VTH_SHIFT  # 65536: the integer value of vth = 1
STATE_BITS = 24
STATE_MAX = (1 << (STATE_BITS - 1)) - 1  # states saturate to [-STATE_MAX, STATE_MAX]
DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS  # 4096
DECAY_MAX = DECAY_UNITY - 1  # a 12-bit decay d is in [0, 4095]
BIAS_MANT_BITS = 13  # bias = bias_mant << bias_exp, bias_mant in [-4096, 4095] (Lava LIF)
BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
BIAS_EXP_MAX = 7
PAYLOAD_BITS = 8  # graded input spikes: a spike count in [0, 255]
PAYLOAD_MAX = (1 << PAYLOAD_BITS) - 1
# SpikGRU gate: sigmoid by a 256-entry table over [-8, 8) thresholds, 1/16 threshold per entry
SIGMOID_ENTRIES = 256
SIGMOID_SHIFT = 12  # THETA >> 12 = 16 entries per threshold
SIGMOID_RANGE = SIGMOID_ENTRIES * (1 << SIGMOID_SHIFT) // THETA // 2  # 8 thresholds each side
_SIGMOID_IDX = np.arange(SIGMOID_ENTRIES) - SIGMOID_ENTRIES // 2
SIGMOID_TABLE = np.clip(np.rint(DECAY_UNITY / (1 + np.exp(-(_SIGMOID_IDX + 0.5) * (1 << SIGMOID_SHIFT) / THETA))),
                        0, DECAY_MAX).astype(np.int64)


def saturate(x: np.ndarray, bound: int = STATE_MAX) -> np.ndarray:
    return np.clip(x, -bound, bound)


def check_bounds(lo: int, hi: int) -> tuple[int, int]:
    """A layer's state clamp [lo, hi] (state units): integers with -STATE_MAX <= lo < hi <= STATE_MAX."""
    lo_i, hi_i = int(lo), int(hi)
    if lo_i != lo or hi_i != hi:
        raise ValueError(f"state bounds must be integers, got ({lo}, {hi})")
    if not -STATE_MAX <= lo_i < hi_i <= STATE_MAX:
        raise ValueError(f"state bounds ({lo_i}, {hi_i}) must satisfy {-STATE_MAX} <= lo < hi <= {STATE_MAX}")
    return lo_i, hi_i


def theta_of(vth_mant: int) -> int:
    """The integer value of vth = 1 for a layer whose threshold mantissa is vth_mant (THETA for VTH_MANT)."""
    return int(vth_mant) << VTH_SHIFT


def clip_bounds(clip, theta: int = THETA) -> tuple[int, int]:
    """A training clip (lo, hi) in thresholds (None: no clip) -> the state clamp in state units:
    (round(lo * theta), round(hi * theta)) limited to the 24-bit range; None -> (-STATE_MAX, STATE_MAX)."""
    if clip is None:
        return -STATE_MAX, STATE_MAX
    lo, hi = (int(np.clip(np.rint(float(c) * theta), -STATE_MAX, STATE_MAX)) for c in clip)
    return check_bounds(lo, hi)


def decay(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """x * (4096 - d) >> 12, rounding toward zero (Lava's PyLifModelBitAcc)."""
    return mul12(x, DECAY_UNITY - d)


def mul12(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """x * f / 4096 rounded toward zero: the one multiplier of the neuron programs."""
    p = np.asarray(x, dtype=np.int64) * f
    return np.sign(p) * (np.abs(p) >> DECAY_BITS)


def dendrite(w_mant: np.ndarray, exp: int, s: np.ndarray) -> np.ndarray:
    """Dendritic accumulation of one connection: sum(w_mant * s) shifted by exp, saturated to 16 bits.

    w_mant [n_out, n_in]; s [..., n_in] spikes (0/1) or graded payloads. Exact in float64 (|sum| < 2**53).
    """
    acc = np.rint(np.asarray(s, dtype=np.float64) @ w_mant.T.astype(np.float64)).astype(np.int64)
    acc = acc << exp if exp >= 0 else acc >> -exp
    return np.clip(acc, ACC_MIN, ACC_MAX)


def synaptic(a: np.ndarray) -> np.ndarray:
    """A dendritic input in state units (MSB alignment)."""
    return np.asarray(a, dtype=np.int64) << ACT_SHIFT


def spikes_of(v: np.ndarray, theta: int = THETA) -> np.ndarray:
    """Spike when v > theta (Lava's PyLifModelBitAcc: v > vth << 6)."""
    return (v > theta).astype(np.int64)


def late_reset(s: np.ndarray, reset: str, theta: int = THETA) -> np.ndarray:
    """The term the study's 'late' reset subtracts in this step: theta * s_prev; 0 for the same-step resets."""
    return theta * s if reset == "late" else 0


def fire(v: np.ndarray, reset: str, theta: int = THETA) -> tuple[np.ndarray, np.ndarray]:
    """(s, the v kept): s = v > theta; reset 'subtract' keeps v - theta*s, 'zero' keeps 0 where s, 'late' v."""
    s = spikes_of(v, theta)
    if reset == "subtract":
        return s, v - theta * s
    if reset == "zero":
        return s, np.where(s > 0, 0, v)
    return s, v


def lif_step(a: np.ndarray, v: np.ndarray, s: np.ndarray, v_decay: np.ndarray, bias: np.ndarray,
             lo: int = -STATE_MAX, hi: int = STATE_MAX, reset: str = "late", theta: int = THETA):
    """LIF: v = clamp(decay(v, dv) + a<<6 + bias - THETA*s_prev, lo, hi); s = v > THETA. Returns (s, v).

    [lo, hi] is the layer's state clamp (the training clip in state units; default the 24-bit range).
    reset 'subtract' / 'zero': no THETA*s_prev term; v - THETA (or 0) is kept after a spike instead.
    theta: the layer's threshold (theta_of(vth_mant); THETA unless the layer needed headroom)."""
    v = np.clip(decay(v, v_decay) + synaptic(a) + bias - late_reset(s, reset, theta), lo, hi)
    return fire(v, reset, theta)


def cuba_lif_step(a: np.ndarray, i: np.ndarray, v: np.ndarray, s: np.ndarray,
                  i_decay: np.ndarray, v_decay: np.ndarray, bias: np.ndarray,
                  lo: int = -STATE_MAX, hi: int = STATE_MAX, reset: str = "late", theta: int = THETA):
    """Cuba-LIF: i = clamp(decay(i, di) + a<<6 + bias); v = clamp(decay(v, dv) + (i*dv >> 12) - THETA*s_prev).

    dv = round((1 - beta) * 4096) serves both as v's decay and as the (1 - beta) factor; both clamps are
    to the layer's [lo, hi] (the clamped i feeds v, as in training); reset and theta as lif_step. Returns (s, i, v).
    """
    i = np.clip(decay(i, i_decay) + synaptic(a) + bias, lo, hi)
    v = np.clip(decay(v, v_decay) + mul12(i, v_decay) - late_reset(s, reset, theta), lo, hi)
    s, v = fire(v, reset, theta)
    return s, i, v


def gate(az: np.ndarray, bias_z: np.ndarray) -> np.ndarray:
    """SpikGRU gate z as a 12-bit factor: sigmoid table at (az<<6 + bias_z) >> 12, clamped to the table."""
    g = synaptic(az) + bias_z
    idx = np.clip(g >> SIGMOID_SHIFT, -(SIGMOID_ENTRIES // 2), SIGMOID_ENTRIES // 2 - 1)
    return SIGMOID_TABLE[idx + SIGMOID_ENTRIES // 2]


def spikgru_step(a: np.ndarray, az: np.ndarray, i: np.ndarray, v: np.ndarray, s: np.ndarray,
                 i_decay: np.ndarray, bias: np.ndarray, bias_z: np.ndarray,
                 lo: int = -STATE_MAX, hi: int = STATE_MAX):
    """SpikGRU: i as Cuba-LIF; z = gate(az); v = clamp((v*z >> 12) + (i*(4096 - z) >> 12) - THETA*s_prev)."""
    i = np.clip(decay(i, i_decay) + synaptic(a) + bias, lo, hi)
    z = gate(az, bias_z)
    v = np.clip(mul12(v, z) + mul12(i, DECAY_UNITY - z) - THETA * s, lo, hi)
    return spikes_of(v), i, v


def readout_step(a: np.ndarray, o: np.ndarray, v_decay: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Leaky readout: o = decay(o, dv) + a<<6 + bias; no spike, no reset."""
    return saturate(decay(o, v_decay) + synaptic(a) + bias)


def current_readout_step(a: np.ndarray, i: np.ndarray, o: np.ndarray, i_decay: np.ndarray,
                         v_decay: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Readout with a current stage: i = sat(decay(i, di) + a<<6 + bias); o = sat(decay(o, dv) + (i*dv >> 12)).
    Returns (i, o)."""
    i = saturate(decay(i, i_decay) + synaptic(a) + bias)
    return i, saturate(decay(o, v_decay) + mul12(i, v_decay))


def lava_du(d):
    """Lava's CUBA parameter du for a current decay d (factor (4096 - d)/4096): Lava adds ds_offset = 1 to du, so
    du = d - 1 (a decay of 0 is out of its reach: d = 1 at least). The one home of this rule; `lava_d` inverts it
    (netx's iDecay is d)."""
    return np.maximum(np.asarray(d) - 1, 0)


def lava_d(du):
    """The current decay d that Lava's CUBA applies for its parameter du: d = du + 1 (see lava_du)."""
    return np.asarray(du) + 1


def lava_cuba_step(a: np.ndarray, u: np.ndarray, v: np.ndarray, du: int, dv: int, bias: np.ndarray):
    """Lava's own CUBA (PyLifModelBitAcc) for --netx-compatible files: the current's decay is du + 1
    (Lava's ds_offset), u wraps at 24 bits, v saturates, spike when v > THETA, hard reset to 0.
    Returns (s, u, v) with v already reset."""
    u = decay(u, lava_d(du)) + synaptic(a)
    u = np.where(u > STATE_MAX + 1, u - (1 << STATE_BITS), u)
    u = np.where(u <= -(STATE_MAX + 1), u + (1 << STATE_BITS), u)
    v = np.clip(decay(v, dv) + u + bias, -STATE_MAX, STATE_MAX)
    s = spikes_of(v)
    return s, u, np.where(s > 0, 0, v)


def decay_to_int(decay_factor: np.ndarray) -> np.ndarray:
    """Float decay in [0, 1] (alpha, beta) -> 12-bit d with (4096 - d)/4096 ~ decay."""
    return np.clip(np.rint((1.0 - np.asarray(decay_factor, dtype=np.float64)) * DECAY_UNITY), 0, DECAY_MAX).astype(np.int64)


def weight_exponent(w: np.ndarray, vth_mant: int = VTH_MANT) -> int:
    """Smallest exponent whose 8-bit mantissa holds max|w| (w in float threshold units of a layer whose
    threshold mantissa is vth_mant)."""
    peak = float(np.max(np.abs(w))) * vth_mant if np.size(w) else 0.0
    if peak == 0.0:
        return EXP_MIN
    e = int(np.ceil(np.log2(peak / W_MAX)))
    return int(np.clip(e, EXP_MIN, EXP_MAX))


def quantize_weight(w: np.ndarray, exp: int, vth_mant: int = VTH_MANT) -> tuple[np.ndarray, int]:
    """(mantissa, number of saturated entries) of a float weight matrix at exponent `exp`."""
    m = np.rint(np.asarray(w, dtype=np.float64) * vth_mant / 2.0 ** exp)
    saturated = int(np.sum((m < W_MIN) | (m > W_MAX)))
    return np.clip(m, W_MIN, W_MAX).astype(np.int64), saturated


def dequantize_weight(w_mant: np.ndarray, exp: int, vth_mant: int = VTH_MANT) -> np.ndarray:
    return np.asarray(w_mant, dtype=np.float64) * 2.0 ** exp / vth_mant


VTH_MIN = 1 << 6  # the lowest threshold mantissa vth_for picks: theta 4096 keeps 12 bits below threshold


def vth_for(weight_peak: float, bias_peak: float) -> int:
    """The largest power-of-two threshold mantissa in [VTH_MIN, VTH_MANT] at which the largest weight and bias
    (in thresholds) fit: 127 << EXP_MAX and 4095 << BIAS_EXP_MAX. A trained study model keeps VTH_MANT; an
    imported NIR graph with weights of tens of thresholds gets a lower one: headroom for weights, bias, dendrite
    and state at the same relative weight resolution."""
    vth = VTH_MANT
    while vth > VTH_MIN and (weight_peak * vth > W_MAX * 2.0 ** EXP_MAX
                             or bias_peak * theta_of(vth) > BIAS_MANT_MAX * 2.0 ** BIAS_EXP_MAX):
        vth //= 2
    return vth


def quantize_bias(b: np.ndarray, theta: int = THETA) -> tuple[np.ndarray, int, int]:
    """(bias_mant, bias_exp, saturated): b * theta ~ bias_mant << bias_exp, 13-bit mantissa."""
    target = np.asarray(b, dtype=np.float64) * theta
    peak = float(np.max(np.abs(target))) if target.size else 0.0
    exp = 0 if peak <= BIAS_MANT_MAX else int(np.ceil(np.log2(peak / BIAS_MANT_MAX)))
    exp = min(exp, BIAS_EXP_MAX)
    m = np.rint(target / 2.0 ** exp)
    saturated = int(np.sum(np.abs(m) > BIAS_MANT_MAX))
    return np.clip(m, -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int64), exp, saturated


def bias_value(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """The bias in state units (Lava: bias_mant << bias_exp)."""
    return np.asarray(bias_mant, dtype=np.int64) << bias_exp
