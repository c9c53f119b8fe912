"""Lava Processes of the study's neurons, a counting connection and a sample source.

Following Lava's split (``lava.proc.lif.process`` / ``lava.proc.lif.models``), this
module only declares Vars and Ports and checks parameters; ``lava_procs/models.py``
holds one ProcessModel per precision: ``fixed_pt`` (bit-accurate to
docs/fixed_point.md, calling ``export.fixed_point``'s step functions) and
``floating_pt`` (the float equations of DESIGN.md, same integer parameters read as
the float values they stand for).

Parameters are the integers of ``export.qnet`` (QLayer / Synapse): 12-bit decays d
(factor (4096 - d) / 4096), 13-bit bias mantissas with one 3-bit exponent per layer,
8-bit weight mantissas with one exponent per connection. Anything of the wrong shape
or outside its bit range raises ``ValueError`` naming the parameter, here, when the
Process is built.

Time and per-sample resets
--------------------------
Lava step tau counts from 0 (``tau = time_step - 1`` inside a ProcessModel). Every
process sends on a step what it computed on that step, except a connection
(``CountingDense``), which receives on step tau and delivers on step tau + 1 (Lava's
one step of delay per connection). Samples stream back to back, each followed by
``gap`` silent steps (period P = T + gap): with the source sending model step m of
the whole stream on Lava step m (sample j, step t is m = j * P + t, t < T; steps
t >= T of a period are the silent gap):

* ``SampleSource`` sends model step m on tau = m                (offset 0);
* hidden layer k (k = 1..L, k connections from the source) computes model step m
  on tau = m + k                                                  (offset k);
* the readout, behind L + 1 connections, computes model step m on tau = m + L + 1
                                                                  (offset L + 1);
* a connection is given the offset of the process that FEEDS it: a feed-forward
  connection out of layer k - 1 has offset k - 1 (the source's: 0), the recurrent
  connection of layer k has offset k. It receives model step m on tau = m + offset.

A layer's own spikes come back through its recurrent connection one Lava step later,
which is exactly the model's s_{t-1}. Every process takes ``reset_interval`` (P, the
steps per sample and its gap; 0 = never reset), ``reset_offset`` (its offset above),
``gap`` (the silent steps at the end of each period) and ``n_samples`` (N; None = no
end). A neuron "resets" on the steps tau with (tau - reset_offset) % P == 0, before
its update: it zeroes i, v and its previous spikes s (the readout: o, and it starts a
new running maximum). Connections never reset, as neither Lava's Dense nor a Loihi 2
synapse does: on a layer's first step its recurrent connection delivers the layer's
spikes of the step before, the previous period's last (gap) step. The samples are
independent when no hidden layer spikes there (sim.stream works out the gap that
ensures it and checks a run); the feed-forward connections need nothing (what they
deliver on a layer's first step is already the new sample's first step).

Resets repeat every P steps for as long as the run goes (also on flush steps past
the N samples); steps before a process's first reset (tau < reset_offset) run from
the zero state on whatever arrives (the pipeline's warm-up) and are not counted.

To stream N samples through a network with L hidden layers, run N * P + L + 1 Lava
steps; layer k's step t of sample j is on tau = k + j * P + t, and the readout's
sample_max[j] is complete after tau = L + 1 + j * P + T - 1 (netx's convention
"layer k resets at reset_offset + 1 + k", k from 0, is the same with reset_offset =
0). Example, L = 2, T = 100, gap 3: source offset 0; layer-1 ff connection offset 0,
layer 1 offset 1, its recurrent connection offset 1; layer-2 ff connection offset 1,
layer 2 and its recurrent connection offset 2; readout ff connection offset 2,
readout offset 3; every process reset_interval 103, gap 3; run N * 103 + 3 steps.

Counters (cumulative Vars, int64; Lava's Var.get() returns them as float64)
----------------------------------------------------------------------------
Counters only count on the steps that carry samples: tau >= reset_offset, before
reset_offset + N * P (no upper end when N is None or P == 0), and outside the gaps
((tau - reset_offset) % P < P - gap), so the pipeline's warm-up and flush steps and
the silent gaps (bias-driven activity before a layer's first sample, after the last
one or between samples) are left out: a run's counts are its samples' counts.

* ``CountingDense.syn_events`` [1]: synaptic events. Each incoming event adds the
  fan-out n_out; a graded payload c counts as c events (the study's a_in counts
  events): syn_events += n_out * sum(payloads received on the step).
* ``spikes`` [n] of every spiking neuron: spikes per neuron (sum it for the layer).
* ``neuron_ops`` [2] = [MAC, AC]: the neuron terms of the study's Table 2 (see
  NEURON_OPS), accumulated per step; the synaptic AC terms (m n a_in, n^2 a_out,
  ...) are the connections' ``syn_events``. Summed over a layer's neuron and
  connections, MAC and AC equal Table 2 times the number of steps counted.

  ========  =========================  ==============================================
  kind      MAC per step               AC per step
  ========  =========================  ==============================================
  LIF       n   (beta v)               n (bias) + spikes (soft reset, Table's n a_out)
  Cuba-LIF  3n  (alpha i, beta v,      n (bias) + spikes (soft reset)
                (1 - beta) i)
  SpikGRU   3n  (alpha i, z v,         2n (biases of i and z) + spikes (soft reset)
                (1 - z) i)
  readout   n   (beta_o o)             n (bias)
  LavaCuba  2n  (decays of u and v)    n (bias); not in Table 2, hard reset is free
  ========  =========================  ==============================================

  The soft-reset subtraction is counted on the step the spike is emitted (it is
  applied one step later), so that it equals Table 2's n * a_out exactly.
"""
from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var

from export import fixed_point as fx

# neuron_ops per step per neuron: (MAC, AC without the soft reset, soft reset counted per spike)
NEURON_OPS = {
    "lif": (1, 1, True),
    "cuba-lif": (3, 1, True),
    "spikgru": (3, 2, True),
    "readout": (1, 1, False),
    "current-readout": (3, 1, False),  # a readout with a current stage (i_decay given)
    "lava-cuba": (2, 1, False),
}
RESETS = ("late", "subtract", "zero")  # train.neurons.RESETS; the Var reset_mode holds the index
MAX_MESSAGE_BITS = 24  # Loihi 2 graded spikes
READOUT_UNSET = -(1 << (fx.STATE_BITS - 1))  # running max before a sample's first step, below any saturated o
BIAS_MANT_MIN = -fx.BIAS_MANT_MAX - 1


# ----------------------------------------------------------------------------------- checks
def _label(owner: str, name: str) -> str:
    return f"{owner}: parameter '{name}'"


def _integers(owner: str, name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{_label(owner, name)} is not an array ({exc})") from None
    if arr.dtype == bool or arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{_label(owner, name)} must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{_label(owner, name)} must be integers, got complex values")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{_label(owner, name)} must be finite integers, got NaN or inf")
        if not np.all(arr == np.rint(arr)):
            raise ValueError(f"{_label(owner, name)} must be integers, got fractional values")
    return arr.astype(np.int64)


def _in_range(owner: str, name: str, arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{_label(owner, name)} out of range [{lo}, {hi}]: "
                         f"got values in [{arr.min()}, {arr.max()}]")
    return arr


def per_neuron(owner: str, name: str, value, n: int, lo: int, hi: int) -> np.ndarray:
    """A per-neuron integer parameter: a scalar (broadcast) or shape [n]; in [lo, hi]."""
    arr = _integers(owner, name, value)
    if arr.shape not in ((), (1,), (n,)):
        raise ValueError(f"{_label(owner, name)} has shape {arr.shape}; expected a scalar or ({n},)")
    return _in_range(owner, name, np.broadcast_to(arr.reshape(-1) if arr.ndim else arr, (n,)).copy(), lo, hi)


def scalar(owner: str, name: str, value, lo: int, hi: ty.Optional[int]) -> int:
    """One integer parameter in [lo, hi] (hi None: no upper bound)."""
    arr = _integers(owner, name, value)
    if arr.shape not in ((), (1,)):
        raise ValueError(f"{_label(owner, name)} must be a single integer, got shape {arr.shape}")
    v = int(arr.reshape(-1)[0])
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{_label(owner, name)} out of range [{lo}, {hi if hi is not None else 'inf'}]: got {v}")
    return v


def layer_size(owner: str, shape) -> int:
    """Neuron count from Lava's ``shape`` (an int or a 1-tuple)."""
    dims = (shape,) if np.isscalar(shape) else tuple(shape) if isinstance(shape, (tuple, list)) else None
    if dims is None or len(dims) != 1:
        raise ValueError(f"{_label(owner, 'shape')} must be (n,) with one dimension, got {shape!r}")
    return scalar(owner, "shape", dims[0], 1, None)


class _Streamed(AbstractProcess):
    """Common part of every process here: the per-sample reset and counting window."""

    def __init__(self, *, reset_interval: int, reset_offset: int, n_samples: ty.Optional[int],
                 name: ty.Optional[str], log_config: ty.Optional[LogConfig], gap: int = 0) -> None:
        super().__init__(name=name, log_config=log_config)
        owner = f"{type(self).__name__} {self.name!r}"
        self._owner = owner
        self.proc_params.overwrite("proc_name", self.name)
        interval = scalar(owner, "reset_interval", reset_interval, 0, None)
        offset = scalar(owner, "reset_offset", reset_offset, 0, None)
        count = 0 if n_samples is None else scalar(owner, "n_samples", n_samples, 1, None)
        self.reset_interval = Var(shape=(1,), init=interval)
        self.reset_offset = Var(shape=(1,), init=offset)
        self.n_samples = Var(shape=(1,), init=count)  # 0: no end
        self.gap = Var(shape=(1,), init=scalar(owner, "gap", gap, 0, max(interval - 1, 0)))


class _Neuron(_Streamed):
    """A layer of n neurons with a bias (mantissa per neuron, one exponent), counters and s_out."""

    kind = ""

    def __init__(self, *, shape, bias_mant=0, bias_exp=0, reset_interval: int = 0, reset_offset: int = 0,
                 n_samples: ty.Optional[int] = None, gap: int = 0, name: ty.Optional[str] = None,
                 log_config: ty.Optional[LogConfig] = None) -> None:
        super().__init__(reset_interval=reset_interval, reset_offset=reset_offset, n_samples=n_samples,
                         name=name, log_config=log_config, gap=gap)
        n = layer_size(self._owner, shape)
        self.shape = (n,)
        self.a_in = InPort(shape=(n,))
        self.bias_mant = Var(shape=(n,), init=per_neuron(self._owner, "bias_mant", bias_mant, n,
                                                         BIAS_MANT_MIN, fx.BIAS_MANT_MAX))
        self.bias_exp = Var(shape=(1,), init=scalar(self._owner, "bias_exp", bias_exp, 0, fx.BIAS_EXP_MAX))
        self.neuron_ops = Var(shape=(2,), init=0)

    def _decay(self, name: str, value) -> Var:
        return Var(shape=self.shape, init=per_neuron(self._owner, name, value, self.shape[0], 0, fx.DECAY_MAX))

    def _state_bounds(self, state_lo, state_hi) -> None:
        """The clamp of i and v in state units (the training clip times THETA; default the 24-bit range):
        integers with -STATE_MAX <= state_lo < state_hi <= STATE_MAX."""
        lo = scalar(self._owner, "state_lo", state_lo, -fx.STATE_MAX, fx.STATE_MAX)
        hi = scalar(self._owner, "state_hi", state_hi, -fx.STATE_MAX, fx.STATE_MAX)
        if lo >= hi:
            raise ValueError(f"{self._owner}: parameters 'state_lo' ({lo}) and 'state_hi' ({hi}) must satisfy "
                             "state_lo < state_hi")
        self.state_lo = Var(shape=(1,), init=lo)
        self.state_hi = Var(shape=(1,), init=hi)

    def _spiking(self) -> None:
        n = self.shape
        self.s_out = OutPort(shape=n)
        self.s = Var(shape=n, init=0)  # the previous step's spikes (soft reset, recurrence)
        self.spikes = Var(shape=n, init=0)

    def _reset_mode(self, reset: str, vth_mant: int) -> None:
        """The reset ('late', 'subtract' or 'zero') and the threshold mantissa (vth = 1 is vth_mant << 6)."""
        if reset not in RESETS:
            raise ValueError(f"{self._owner}: parameter 'reset' is {reset!r}, choose one of {', '.join(RESETS)}")
        self.reset_mode = Var(shape=(1,), init=RESETS.index(reset))
        self.vth_mant = Var(shape=(1,), init=scalar(self._owner, "vth_mant", vth_mant, 1, fx.VTH_MANT))


# --------------------------------------------------------------------------------- neurons
class LIF(_Neuron):
    """The study's LIF layer: v = beta v + a + b - vth s_prev, spike when v > vth (soft reset one step late).

    fixed_pt: ``export.fixed_point.lif_step`` (v clamped to [state_lo, state_hi]).
    floating_pt: the same in float, v clipped to [state_lo, state_hi] / THETA.

    Parameters: shape (n,); v_decay 12-bit d in [0, 4095] (scalar or [n]); bias_mant in
    [-4096, 4095] (scalar or [n]); bias_exp in [0, 7]; state_lo < state_hi, the clamp of the
    states in state units (the training clip times THETA; default the 24-bit range
    [-(2^23 - 1), 2^23 - 1]); reset 'late' (the study's, above), 'subtract' or 'zero' (in the step
    of the spike: v - vth, or 0, is kept); vth_mant the threshold mantissa (default 1024; vth = vth_mant << 6,
    lower for an imported NIR graph's large weights); reset_interval, reset_offset, n_samples as in the module
    docstring.
    Ports: a_in [n] (dendritic input, ff + recurrent summed), s_out [n] (binary spikes).
    Vars: v, s (previous spikes), v_decay, bias_mant, bias_exp, state_lo, state_hi, reset_mode (index into
    RESETS), vth_mant, spikes [n], neuron_ops [2] (MAC n + AC n + one per spike), reset_interval, reset_offset, n_samples.
    """

    kind = "lif"

    def __init__(self, *, v_decay, state_lo: int = -fx.STATE_MAX, state_hi: int = fx.STATE_MAX,
                 reset: str = "late", vth_mant: int = fx.VTH_MANT, **common) -> None:
        super().__init__(**common)
        self.v_decay = self._decay("v_decay", v_decay)
        self._state_bounds(state_lo, state_hi)
        self._reset_mode(reset, vth_mant)
        self.v = Var(shape=self.shape, init=0)
        self._spiking()


class CubaLIF(_Neuron):
    """The study's Cuba-LIF layer: i = alpha i + a + b; v = beta v + (1 - beta) i - vth s_prev; s = v > vth.

    fixed_pt: ``export.fixed_point.cuba_lif_step`` (i and v clamped to [state_lo, state_hi]; v_decay
    serves as v's decay and as the (1 - beta) gain).

    Parameters: as LIF plus i_decay (12-bit, scalar or [n]).
    Ports: a_in [n], s_out [n]. Vars: i, v, s, i_decay, v_decay, bias_mant, bias_exp, state_lo, state_hi,
    reset_mode, spikes [n], neuron_ops [2] (MAC 3n, AC n + one per spike), reset config.
    """

    kind = "cuba-lif"

    def __init__(self, *, i_decay, v_decay, state_lo: int = -fx.STATE_MAX, state_hi: int = fx.STATE_MAX,
                 reset: str = "late", vth_mant: int = fx.VTH_MANT, **common) -> None:
        super().__init__(**common)
        self.i_decay = self._decay("i_decay", i_decay)
        self.v_decay = self._decay("v_decay", v_decay)
        self._state_bounds(state_lo, state_hi)
        self._reset_mode(reset, vth_mant)
        self.i = Var(shape=self.shape, init=0)
        self.v = Var(shape=self.shape, init=0)
        self._spiking()


class SpikGRU(_Neuron):
    """The study's SpikGRU layer, gate computed inside the neuron from its own dendritic input.

    i = alpha i + a + b; z = sigmoid(a_gate + b_z); v = z v + (1 - z) i - vth s_prev; s = v > vth.
    fixed_pt: ``export.fixed_point.spikgru_step`` (256-entry sigmoid table, i and v clamped to
    [state_lo, state_hi]).

    Parameters: shape, i_decay, bias_mant, bias_exp (of i), bias_z_mant, bias_z_exp (of the
    gate), state_lo, state_hi (as LIF), reset config. Ports: a_in [n] (W x + U s_prev), a_gate [n] (Wz x + Uz s_prev),
    s_out [n]. Vars: i, v, s, i_decay, bias_mant, bias_exp, bias_z_mant, bias_z_exp,
    spikes [n], neuron_ops [2] (MAC 3n, AC 2n + one per spike), reset config.
    """

    kind = "spikgru"

    def __init__(self, *, i_decay, bias_z_mant=0, bias_z_exp=0, state_lo: int = -fx.STATE_MAX,
                 state_hi: int = fx.STATE_MAX, **common) -> None:
        super().__init__(**common)
        n = self.shape[0]
        self.a_gate = InPort(shape=self.shape)
        self.i_decay = self._decay("i_decay", i_decay)
        self.bias_z_mant = Var(shape=self.shape, init=per_neuron(self._owner, "bias_z_mant", bias_z_mant, n,
                                                                  BIAS_MANT_MIN, fx.BIAS_MANT_MAX))
        self.bias_z_exp = Var(shape=(1,), init=scalar(self._owner, "bias_z_exp", bias_z_exp, 0, fx.BIAS_EXP_MAX))
        self._state_bounds(state_lo, state_hi)
        self.i = Var(shape=self.shape, init=0)
        self.v = Var(shape=self.shape, init=0)
        self._spiking()


class LavaCubaLIF(_Neuron):
    """Lava's own CUBA neuron (``--netx-compatible`` networks) with resets and counters.

    fixed_pt: ``export.fixed_point.lava_cuba_step`` = Lava's PyLifModelBitAcc (u decays by
    du + 1 and wraps at 24 bits, v saturates, spike when v > vth, hard reset to 0).
    floating_pt: lava-dl's float CUBA as trained (train.neurons.lava_cuba_step: spike when
    v >= vth).

    Parameters: shape, du and dv (one 12-bit value each for the layer), bias_mant,
    bias_exp, reset config. Ports: a_in, s_out. Vars: u, v, s, du, dv, bias_mant,
    bias_exp, spikes [n], neuron_ops [2] (MAC 2n, AC n), reset config.
    """

    kind = "lava-cuba"

    def __init__(self, *, du, dv, **common) -> None:
        super().__init__(**common)
        self.du = Var(shape=(1,), init=scalar(self._owner, "du", du, 0, fx.DECAY_MAX))
        self.dv = Var(shape=(1,), init=scalar(self._owner, "dv", dv, 0, fx.DECAY_MAX))
        self.u = Var(shape=self.shape, init=0)
        self.v = Var(shape=self.shape, init=0)
        self._spiking()


class Readout(_Neuron):
    """Leaky-integrator readout: o = beta_o o + a + b, no spike, no reset; keeps each class's running max.

    fixed_pt: ``export.fixed_point.readout_step`` (o saturates at 24 bits); with i_decay given, a current
    stage first (``export.fixed_point.current_readout_step``: i = alpha i + a + b, o = beta o + (1 - beta) i).

    Parameters: shape (n_classes,), v_decay, i_decay (None: no current stage), bias_mant, bias_exp,
    reset config; n_samples also sizes ``sample_max``.
    Ports: a_in [n], o_out [n] (o of every step, for probing; may stay unconnected).
    Vars: o; running_max [n] (max of o since the current sample's first step);
    sample_max [n_samples, n]: row j holds sample j's running max, written on every
    counted step of sample j, so it is complete after the sample's last step; rows of
    samples not reached hold READOUT_UNSET = -2^23. With n_samples None it has one row,
    the current sample's (read it once per sample); with reset_interval 0 the whole run
    is sample 0. The class of sample j is sample_max[j].argmax().
    neuron_ops [2] (MAC n, AC n; with the current stage MAC 3n); v_decay, i_decay, i, current (1: the
    current stage is on), bias_mant, bias_exp, reset config.
    """

    kind = "readout"

    def __init__(self, *, v_decay, i_decay=None, vth_mant: int = fx.VTH_MANT, **common) -> None:
        super().__init__(**common)
        rows = max(1, int(self.n_samples.init))  # 0 (no end): one row
        self.vth_mant = Var(shape=(1,), init=scalar(self._owner, "vth_mant", vth_mant, 1, fx.VTH_MANT))
        self.v_decay = self._decay("v_decay", v_decay)
        self.current = Var(shape=(1,), init=int(i_decay is not None))
        self.i_decay = self._decay("i_decay", 0 if i_decay is None else i_decay)
        self.i = Var(shape=self.shape, init=0)
        self.o = Var(shape=self.shape, init=0)
        self.o_out = OutPort(shape=self.shape)
        self.running_max = Var(shape=self.shape, init=READOUT_UNSET)
        self.sample_max = Var(shape=(rows,) + self.shape, init=READOUT_UNSET)


# ------------------------------------------------------------------------------ connection
class CountingDense(_Streamed):
    """Dense connection with 8-bit weight mantissas and one exponent that counts synaptic events.

    fixed_pt: ``export.fixed_point.dendrite`` (sum w_mant * payload, shifted by weight_exp,
    saturated to 16 bits), delivered one Lava step later (Lava's Dense). floating_pt: the
    float weights w_mant * 2^weight_exp / 1024 (threshold units), no saturation, same delay.

    Parameters: weights [n_out, n_in] in [-128, 127]; weight_exp in [-8, 7];
    num_message_bits in [0, 24] (0: binary spikes, any payload must be 0 or 1; else graded
    payloads in [0, 2^bits - 1]; a payload out of range stops the run with ValueError);
    reset_interval, reset_offset (the offset of the process feeding this connection), gap,
    n_samples: the counting window only (a connection never resets, see the module docstring).
    Ports: s_in [n_in], a_out [n_out]. Vars: weights, weight_exp, num_message_bits,
    a_buff [n_out] (to be delivered next step), reset config, and three counters of
    the counted steps: syn_events [1] (the study's Table 2: n_out * events received, a graded
    payload c being c events), messages [1] (spike messages received: one per nonzero input,
    whatever its payload, as Loihi 2 sends a graded spike) and syn_ops_nz [1] (what the chip
    executes: each message costs the nonzero weights of its input's column, Loihi storing only
    those).
    """

    def __init__(self, *, weights, weight_exp: int = 0, num_message_bits: int = 0, reset_interval: int = 0,
                 reset_offset: int = 0, n_samples: ty.Optional[int] = None, gap: int = 0,
                 name: ty.Optional[str] = None, log_config: ty.Optional[LogConfig] = None) -> None:
        super().__init__(reset_interval=reset_interval, reset_offset=reset_offset, n_samples=n_samples,
                         name=name, log_config=log_config, gap=gap)
        w = _integers(self._owner, "weights", weights)
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"{_label(self._owner, 'weights')} must be a non-empty [n_out, n_in] matrix, "
                             f"got shape {w.shape}")
        _in_range(self._owner, "weights", w, fx.W_MIN, fx.W_MAX)
        n_out, n_in = w.shape
        self.s_in = InPort(shape=(n_in,))
        self.a_out = OutPort(shape=(n_out,))
        self.weights = Var(shape=w.shape, init=w)
        self.weight_exp = Var(shape=(1,), init=scalar(self._owner, "weight_exp", weight_exp,
                                                      fx.EXP_MIN, fx.EXP_MAX))
        self.num_message_bits = Var(shape=(1,), init=scalar(self._owner, "num_message_bits", num_message_bits,
                                                            0, MAX_MESSAGE_BITS))
        self.a_buff = Var(shape=(n_out,), init=0)
        self.syn_events = Var(shape=(1,), init=0)
        self.messages = Var(shape=(1,), init=0)
        self.syn_ops_nz = Var(shape=(1,), init=0)


# ---------------------------------------------------------------------------------- source
class SampleSource(AbstractProcess):
    """Streams binned samples back to back as graded spikes (payload = the bin's spike count).

    counts [n_samples, T, C] (or [T, C] for one sample): non-negative integers, counts
    above 255 clip to 255 (docs/fixed_point.md); gap: silent steps after each sample (period
    P = T + gap). On Lava step tau it sends counts[tau // P, tau % P] (model step tau of the
    stream), zeros in the gaps and once all samples are sent. Connect it to
    CountingDense(num_message_bits=8).
    Ports: s_out [C]. Vars: counts (uint8), gap.
    """

    num_message_bits = fx.PAYLOAD_BITS

    def __init__(self, *, counts, gap: int = 0, name: ty.Optional[str] = None,
                 log_config: ty.Optional[LogConfig] = None) -> None:
        super().__init__(name=name, log_config=log_config)
        owner = f"{type(self).__name__} {self.name!r}"
        c = _integers(owner, "counts", counts)
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3 or 0 in c.shape:
            raise ValueError(f"{_label(owner, 'counts')} must be [n_samples, T, C] (or [T, C]) and non-empty, "
                             f"got shape {np.shape(counts)}")
        if c.min() < 0:
            raise ValueError(f"{_label(owner, 'counts')} must be non-negative spike counts, got {c.min()}")
        self.counts = Var(shape=c.shape, init=np.minimum(c, fx.PAYLOAD_MAX).astype(np.uint8))
        self.gap = Var(shape=(1,), init=scalar(owner, "gap", gap, 0, None))
        self.s_out = OutPort(shape=(c.shape[2],))
