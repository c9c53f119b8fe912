"""ProcessModels of lava_procs.process: one ``fixed_pt`` and one ``floating_pt`` model per Process.

fixed_pt models are bit-accurate to docs/fixed_point.md by construction: every
neuron update is a call to ``export.fixed_point`` (lif_step, cuba_lif_step,
spikgru_step, readout_step, lava_cuba_step, dendrite); nothing here repeats their
arithmetic. floating_pt models run the float equations of DESIGN.md (vth = 1, soft
reset one step late, the (1 - beta) factor, a sigmoid gate) on the float values the
integer parameters stand for: decay factor (4096 - d) / 4096, bias
(bias_mant << bias_exp) / THETA, weight w_mant * 2^exp / 1024; states are in
threshold units and are not clipped.

Lava finds these models by scanning this folder (absolute imports only) and picks
one by tag: ``Loihi2SimCfg(select_tag="fixed_pt")`` or ``"floating_pt"``.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from export import fixed_point as fx
from lava_procs.process import (NEURON_OPS, READOUT_UNSET, RESETS, CountingDense, CubaLIF, LavaCubaLIF, LIF,
                                Readout, SampleSource, SpikGRU)

FIXED = ("bit_accurate_loihi", "fixed_pt")
FLOAT = ("floating_pt",)


def _model(proc, tags: tuple[str, ...]):
    """Lava's three decorators of a CPU ProcessModel: implements `proc` (Loihi protocol), tagged `tags`."""
    def decorate(cls):
        return implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag(*tags)(cls)))
    return decorate
INT = LavaPyType(np.ndarray, np.int64)


def _int(precision: int | None = None) -> LavaPyType:
    return LavaPyType(np.ndarray, np.int32, precision=precision)


_FLT = LavaPyType(np.ndarray, float)


# ------------------------------------------------------------------- float step functions
def _f_decay(d: np.ndarray) -> np.ndarray:
    return (fx.DECAY_UNITY - np.asarray(d, dtype=np.float64)) / fx.DECAY_UNITY


def _f_bias(mant: np.ndarray, exp, theta: int = fx.THETA) -> np.ndarray:
    return fx.bias_value(mant, int(np.ravel(exp)[0])) / float(theta)


def _f_bounds(lo, hi, theta: int = fx.THETA) -> tuple[float, float]:
    """The state clamp in thresholds: [state_lo, state_hi] / theta (the training clip)."""
    return int(np.ravel(lo)[0]) / float(theta), int(np.ravel(hi)[0]) / float(theta)


def _theta(model) -> int:
    """The threshold in state units of a model whose process may carry vth_mant (LIF, Cuba-LIF, readout)."""
    vth = getattr(model, "vth_mant", None)
    return fx.THETA if vth is None else fx.theta_of(int(np.ravel(vth)[0]))


def _float_fire(v, reset: str):
    """(s, the v kept): s = v > 1, then the same-step reset (fixed_point.fire in thresholds)."""
    s = (v > 1.0).astype(np.float64)
    if reset == "subtract":
        return s, v - s
    if reset == "zero":
        return s, v * (1.0 - s)
    return s, v


def float_lif_step(a, v, s, beta, b, lo=-np.inf, hi=np.inf, reset="late"):
    """v = clip(beta v + a + b - s_prev, lo, hi); s = v > 1 (same-step resets: no - s_prev, reset after).
    Returns (s, v)."""
    late = s if reset == "late" else 0.0
    return _float_fire(np.clip(beta * v + a + b - late, lo, hi), reset)


def float_cuba_lif_step(a, i, v, s, alpha, beta, b, lo=-np.inf, hi=np.inf, reset="late"):
    """i = clip(alpha i + a + b); v = clip(beta v + (1 - beta) i - s_prev); s = v > 1 (resets as float_lif_step).
    Returns (s, i, v)."""
    i = np.clip(alpha * i + a + b, lo, hi)
    late = s if reset == "late" else 0.0
    s, v = _float_fire(np.clip(beta * v + (1.0 - beta) * i - late, lo, hi), reset)
    return s, i, v


def float_spikgru_step(a, az, i, v, s, alpha, b, bz, lo=-np.inf, hi=np.inf):
    """i as Cuba-LIF; z = sigmoid(az + bz); v = clip(z v + (1 - z) i - s_prev); s = v > 1. Returns (s, i, v)."""
    i = np.clip(alpha * i + a + b, lo, hi)
    z = 1.0 / (1.0 + np.exp(-(az + bz)))
    v = np.clip(z * v + (1.0 - z) * i - s, lo, hi)
    return (v > 1.0).astype(np.float64), i, v


def float_readout_step(a, o, beta, b):
    """o = beta o + a + b."""
    return beta * o + a + b


def float_current_readout_step(a, i, o, alpha, beta, b):
    """i = alpha i + a + b; o = beta o + (1 - beta) i. Returns (i, o)."""
    i = alpha * i + a + b
    return i, beta * o + (1.0 - beta) * i


def float_lava_cuba_step(a, u, v, s, alpha, beta, b):
    """lava-dl's float CUBA: u = alpha u + a; v = beta v (1 - s_prev) + u + b; s = v >= 1. Returns (s, u, v)."""
    u = alpha * u + a
    v = beta * v * (1.0 - s) + u + b
    return (v >= 1.0).astype(np.float64), u, v


# ---------------------------------------------------------------------------- shared parts
class _StreamedModel(PyLoihiProcessModel):
    """Per-sample reset and counting window (lava_procs.process module docstring)."""

    reset_interval: np.ndarray = INT
    reset_offset: np.ndarray = INT
    n_samples: np.ndarray = INT
    gap: np.ndarray = INT

    @property
    def tau(self) -> int:
        """Lava step counted from 0."""
        return self.time_step - 1

    def resets_now(self) -> bool:
        interval = int(self.reset_interval[0])
        return interval > 0 and (self.tau - int(self.reset_offset[0])) % interval == 0

    def sample_index(self) -> int | None:
        """Index of the sample this step belongs to, None outside the counted steps (warm-up, gaps, flush)."""
        rel = self.tau - int(self.reset_offset[0])
        if rel < 0:
            return None
        interval, count = int(self.reset_interval[0]), int(self.n_samples[0])
        if interval == 0:
            return 0
        j, t = divmod(rel, interval)
        return None if (count and j >= count) or t >= interval - int(self.gap[0]) else j


class _NeuronModel(_StreamedModel):
    """Skeleton of every spiking neuron: receive, reset, update (the step function), count, send."""

    kind = ""
    states: tuple[str, ...] = ()
    neuron_ops: np.ndarray = INT
    spikes: np.ndarray = INT
    bias_mant: np.ndarray = _int(13)
    bias_exp: np.ndarray = _int(3)

    def inputs(self) -> tuple:
        return (self.a_in.recv(),)

    def update(self, *inputs) -> np.ndarray:
        """Advances the states one step and returns the spikes."""
        raise NotImplementedError

    def run_spk(self) -> None:
        inputs = self.inputs()
        if self.resets_now():
            for name in self.states:
                getattr(self, name)[:] = 0
        s = self.update(*inputs)
        self.s[:] = s
        if self.sample_index() is not None:
            mac, ac, soft_reset = NEURON_OPS[self.kind]
            n = s.shape[0]
            self.spikes += s.astype(np.int64)
            self.neuron_ops[0] += mac * n
            self.neuron_ops[1] += ac * n + (int(np.sum(s)) if soft_reset else 0)
        self.s_out.send(s)


class _FixedNeuron(_NeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    s: np.ndarray = _int(1)
    v: np.ndarray = _int(24)

    def bias(self) -> np.ndarray:
        return fx.bias_value(self.bias_mant, int(self.bias_exp[0]))

    def bounds(self) -> tuple[int, int]:
        """The state clamp (state_lo, state_hi) of lif / cuba-lif / spikgru."""
        return int(self.state_lo[0]), int(self.state_hi[0])


class _FloatNeuron(_NeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    s: np.ndarray = _FLT
    v: np.ndarray = _FLT

    def inputs(self) -> tuple:
        """The connections' float values assume the standard threshold (w_mant 2^exp / 1024): rescaled to this
        layer's (vth_mant)."""
        scale = fx.THETA / _theta(self)
        return tuple(a * scale for a in super().inputs())

    def bias(self) -> np.ndarray:
        return _f_bias(self.bias_mant, self.bias_exp, _theta(self))

    def bounds(self) -> tuple[float, float]:
        """The state clamp in thresholds: (state_lo, state_hi) / theta."""
        return _f_bounds(self.state_lo, self.state_hi, _theta(self))


# --------------------------------------------------------------------------------- neurons
# Each kind declares its Vars once (a mixin); its fixed_pt and floating_pt models add the state dtypes and the update.
class _ClampedVars:
    state_lo: np.ndarray = _int(24)
    state_hi: np.ndarray = _int(24)


class _LIFVars(_ClampedVars):
    kind, states = "lif", ("s", "v")
    v_decay: np.ndarray = _int(12)
    reset_mode: np.ndarray = _int(2)
    vth_mant: np.ndarray = _int(17)

    @property
    def reset(self) -> str:
        return RESETS[int(self.reset_mode[0])]

    @property
    def theta(self) -> int:
        return fx.theta_of(int(self.vth_mant[0]))


class _CubaLIFVars(_LIFVars):
    kind, states = "cuba-lif", ("s", "i", "v")
    i_decay: np.ndarray = _int(12)


class _SpikGRUVars(_ClampedVars):
    kind, states = "spikgru", ("s", "i", "v")
    i_decay: np.ndarray = _int(12)
    bias_z_mant: np.ndarray = _int(13)
    bias_z_exp: np.ndarray = _int(3)

    def inputs(self):
        return self.a_in.recv(), self.a_gate.recv()


class _LavaCubaVars:
    kind, states = "lava-cuba", ("s", "u", "v")
    du: np.ndarray = _int(12)
    dv: np.ndarray = _int(12)


@_model(LIF, FIXED)
class PyLIFModelFixed(_LIFVars, _FixedNeuron):
    def update(self, a):
        s, self.v[:] = fx.lif_step(a, self.v, self.s, self.v_decay, self.bias(), *self.bounds(), self.reset,
                                   self.theta)
        return s


@_model(LIF, FLOAT)
class PyLIFModelFloat(_LIFVars, _FloatNeuron):
    def update(self, a):
        s, self.v[:] = float_lif_step(a, self.v, self.s, _f_decay(self.v_decay), self.bias(), *self.bounds(),
                                      self.reset)
        return s


@_model(CubaLIF, FIXED)
class PyCubaLIFModelFixed(_CubaLIFVars, _FixedNeuron):
    i: np.ndarray = _int(24)

    def update(self, a):
        s, self.i[:], self.v[:] = fx.cuba_lif_step(a, self.i, self.v, self.s, self.i_decay, self.v_decay,
                                                   self.bias(), *self.bounds(), self.reset, self.theta)
        return s


@_model(CubaLIF, FLOAT)
class PyCubaLIFModelFloat(_CubaLIFVars, _FloatNeuron):
    i: np.ndarray = _FLT

    def update(self, a):
        s, self.i[:], self.v[:] = float_cuba_lif_step(a, self.i, self.v, self.s, _f_decay(self.i_decay),
                                                      _f_decay(self.v_decay), self.bias(), *self.bounds(),
                                                      self.reset)
        return s


@_model(SpikGRU, FIXED)
class PySpikGRUModelFixed(_SpikGRUVars, _FixedNeuron):
    a_gate: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    i: np.ndarray = _int(24)

    def update(self, a, az):
        bias_z = fx.bias_value(self.bias_z_mant, int(self.bias_z_exp[0]))
        s, self.i[:], self.v[:] = fx.spikgru_step(a, az, self.i, self.v, self.s, self.i_decay, self.bias(), bias_z,
                                                  *self.bounds())
        return s


@_model(SpikGRU, FLOAT)
class PySpikGRUModelFloat(_SpikGRUVars, _FloatNeuron):
    a_gate: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    i: np.ndarray = _FLT

    def update(self, a, az):
        s, self.i[:], self.v[:] = float_spikgru_step(a, az, self.i, self.v, self.s, _f_decay(self.i_decay),
                                                     self.bias(), _f_bias(self.bias_z_mant, self.bias_z_exp),
                                                     *self.bounds())
        return s


@_model(LavaCubaLIF, FIXED)
class PyLavaCubaLIFModelFixed(_LavaCubaVars, _FixedNeuron):
    u: np.ndarray = _int(24)

    def update(self, a):
        s, self.u[:], self.v[:] = fx.lava_cuba_step(a, self.u, self.v, int(self.du[0]), int(self.dv[0]),
                                                    self.bias())
        return s


@_model(LavaCubaLIF, FLOAT)
class PyLavaCubaLIFModelFloat(_LavaCubaVars, _FloatNeuron):
    u: np.ndarray = _FLT

    def update(self, a):
        s, self.u[:], self.v[:] = float_lava_cuba_step(a, self.u, self.v, self.s, _f_decay(fx.lava_d(self.du[0])),
                                                       _f_decay(self.dv[0]), self.bias())
        return s


# --------------------------------------------------------------------------------- readout
class _ReadoutModel(_StreamedModel):
    neuron_ops: np.ndarray = INT
    bias_mant: np.ndarray = _int(13)
    bias_exp: np.ndarray = _int(3)
    v_decay: np.ndarray = _int(12)
    vth_mant: np.ndarray = _int(17)
    i_decay: np.ndarray = _int(12)
    current: np.ndarray = _int(1)

    def step(self, a) -> np.ndarray:
        """Advances i (with the current stage) and returns the new o."""
        raise NotImplementedError

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self.resets_now():
            self.o[:] = 0
            self.i[:] = 0
            self.running_max[:] = READOUT_UNSET
        self.o[:] = self.step(a)
        self.running_max[:] = np.maximum(self.running_max, self.o)
        j = self.sample_index()
        if j is not None:
            n = self.o.shape[0]
            mac, ac, _ = NEURON_OPS["current-readout" if self.current[0] else "readout"]
            self.neuron_ops[0] += mac * n
            self.neuron_ops[1] += ac * n
            self.sample_max[j if int(self.n_samples[0]) else 0] = self.running_max
        self.o_out.send(self.o)


@_model(Readout, FIXED)
class PyReadoutModelFixed(_ReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    o_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    i: np.ndarray = _int(24)
    o: np.ndarray = _int(24)
    running_max: np.ndarray = _int(24)
    sample_max: np.ndarray = _int(24)

    def step(self, a):
        bias = fx.bias_value(self.bias_mant, int(self.bias_exp[0]))
        if not self.current[0]:
            return fx.readout_step(a, self.o, self.v_decay, bias)
        self.i[:], o = fx.current_readout_step(a, self.i, self.o, self.i_decay, self.v_decay, bias)
        return o


@_model(Readout, FLOAT)
class PyReadoutModelFloat(_ReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    o_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    i: np.ndarray = _FLT
    o: np.ndarray = _FLT
    running_max: np.ndarray = _FLT
    sample_max: np.ndarray = _FLT

    def step(self, a):
        theta = _theta(self)
        a, bias = a * (fx.THETA / theta), _f_bias(self.bias_mant, self.bias_exp, theta)
        if not self.current[0]:
            return float_readout_step(a, self.o, _f_decay(self.v_decay), bias)
        self.i[:], o = float_current_readout_step(a, self.i, self.o, _f_decay(self.i_decay), _f_decay(self.v_decay),
                                                  bias)
        return o


# ------------------------------------------------------------------------------ connection
class _DenseModel(_StreamedModel):
    weights: np.ndarray = _int(8)
    weight_exp: np.ndarray = INT
    num_message_bits: np.ndarray = INT
    syn_events: np.ndarray = INT
    messages: np.ndarray = INT
    syn_ops_nz: np.ndarray = INT

    def accumulate(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def events(self, s: np.ndarray) -> tuple[np.ndarray, int]:
        """(payloads to accumulate, number of events they carry)."""
        raise NotImplementedError

    def run_spk(self) -> None:
        self.a_out.send(self.a_buff)
        s, events = self.events(self.s_in.recv())
        self.a_buff[:] = self.accumulate(s)
        if self.sample_index() is not None:
            self.syn_events[0] += self.weights.shape[0] * events
            active = np.flatnonzero(s)
            self.messages[0] += active.size
            self.syn_ops_nz[0] += np.count_nonzero(self.weights[:, active])


@_model(CountingDense, FIXED)
class PyCountingDenseModelFixed(_DenseModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=16)
    a_buff: np.ndarray = _int(16)

    def events(self, s):
        bits = int(self.num_message_bits[0])
        top = 1 if bits == 0 else (1 << bits) - 1
        s = np.asarray(s, dtype=np.int64)
        if s.size and (s.min() < 0 or s.max() > top):
            bad = s[(s < 0) | (s > top)][0]
            raise ValueError(f"CountingDense {self.proc_params.get('proc_name')!r}: payload {bad} at Lava step "
                             f"{self.tau} is outside [0, {top}] for num_message_bits={bits}")
        return s, int(s.sum())

    def accumulate(self, s):
        return fx.dendrite(self.weights, int(self.weight_exp[0]), s)


@_model(CountingDense, FLOAT)
class PyCountingDenseModelFloat(_DenseModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_buff: np.ndarray = _FLT

    def events(self, s):
        s = np.asarray(s, dtype=np.float64)
        if int(self.num_message_bits[0]) == 0:
            s = (s != 0).astype(np.float64)  # binary spikes, as Lava's Dense
        return s, int(np.rint(s.sum()))

    def accumulate(self, s):
        return fx.dequantize_weight(self.weights, int(self.weight_exp[0])) @ s  # the Vars as they are now


# ---------------------------------------------------------------------------------- source
class _SourceModel(PyLoihiProcessModel):
    counts: np.ndarray = LavaPyType(np.ndarray, np.uint8, precision=8)
    gap: np.ndarray = INT
    dtype = np.int32

    def run_spk(self) -> None:
        n, steps, _ = self.counts.shape
        j, t = divmod(self.time_step - 1, steps + int(self.gap[0]))
        if j < n and t < steps:
            self.s_out.send(self.counts[j, t].astype(self.dtype))
        else:
            self.s_out.send(np.zeros(self.counts.shape[2], dtype=self.dtype))


@_model(SampleSource, FIXED)
class PySampleSourceModelFixed(_SourceModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=8)


@_model(SampleSource, FLOAT)
class PySampleSourceModelFloat(_SourceModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    dtype = np.float64
