"""The study's layers as thin nn.Module blocks (lava-dl slayer "block" style).

A block owns its parameters and options and hands them to `kernels.py`: the
fused kernel when `fused` (default) or the plain per-timestep loop otherwise; both
compute the same equations (DESIGN "The models"). Every block maps x [B, T, n_in]
(or an audio.binning.EventBatch, which the fused kernels project event by event:
train.projection) to [B, T, n_out], has a `kind` string, `uses_fused`, `clamp_()` to
call after each optimiser step and `export_params()` for the export stage.

Spiking blocks clip i and v to `clip` (default [-4, 4], `neurons.DEFAULT_CLIP`;
None disables clipping) at every step and use a triangle surrogate of height
`surrogate_scale` and half-width `surrogate_width` (default 1 = vth). LIF and
Cuba-LIF take `reset` (`neurons.RESETS`; the fused kernels implement the study's
'late' reset, the others run the plain loop) and `recurrent` (False: no U, as the
non-recurrent output layer of an imported NIR graph; U stays a zero buffer so the
kernels need no second form).
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio.binning import EventBatch

from . import kernels
from .neurons import (DEFAULT_CLIP, RESETS, VTH, CubaLIFParams, LIFParams, ReadoutParams, RNNParams,
                      SpikeOpts, SpikGRUParams)

Clip = Optional[Tuple[float, float]]


def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    """U(-1/sqrt(k), 1/sqrt(k)) with k the fan-in (DESIGN)."""
    k = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-k, k))


DECAY_INIT = 0.9
LAVA_CUBA_INIT = 1.0 - DECAY_INIT  # Lava-CUBA blocks' weights and biases start at this share of the study's range


def _decay(n: int) -> nn.Parameter:
    """Per-neuron decay, initialised 0.9 (DESIGN)."""
    return nn.Parameter(torch.full((n,), DECAY_INIT))


class _Block(nn.Module):
    kind = ''
    fused = True

    @property
    def uses_fused(self) -> bool:
        """Whether forward runs the fused kernel (which takes an EventBatch without densifying it)."""
        return self.fused

    def clamp_(self, low: float = 0.0, high: float = 1.0) -> None:
        """Clip the decays to [low, high] (the study: [0, 1]); call after every optimiser step."""
        with torch.no_grad():
            for name in ('alpha', 'beta'):
                decay = getattr(self, name, None)
                if decay is not None:
                    decay.clamp_(low, high)

    def export_params(self) -> Dict[str, np.ndarray]:
        """Float parameters by name (W, U, b, alpha, beta, ...)."""
        return {name: p.detach().cpu().numpy().copy() for name, p in self.named_parameters()}


class _Recurrent(_Block):
    """Shared parts of the recurrent blocks: W [n_out, n_in], U [n_out, n_out], b."""

    def __init__(self, n_in: int, n_out: int, fused: bool):
        super().__init__()
        self.n_in, self.n_out, self.fused = n_in, n_out, fused
        self.W = _uniform(n_out, n_in, fan_in=n_in)
        self.U = _uniform(n_out, n_out, fan_in=n_out)
        self.b = _uniform(n_out, fan_in=n_in)

    def extra_repr(self) -> str:
        return f'{self.n_in} -> {self.n_out}, fused={self.fused}'


class _Spiking(_Recurrent):
    def __init__(self, n_in: int, n_out: int, clip: Clip, surrogate_scale: float,
                 surrogate_width: float, fused: bool, reset: str = "late", recurrent: bool = True):
        super().__init__(n_in, n_out, fused)
        if reset not in RESETS:
            raise ValueError(f"reset {reset!r}: choose one of {', '.join(RESETS)}")
        self.opts = SpikeOpts(None if clip is None else tuple(clip), surrogate_scale,
                              surrogate_width, reset)
        self.recurrent = bool(recurrent)
        if not self.recurrent:
            del self.U
            self.register_buffer("U", torch.zeros(n_out, n_out))

    @property
    def uses_fused(self) -> bool:
        return self.fused and self.opts.reset == "late"

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, {self.opts}, recurrent={self.recurrent}'


class LIFRecurrent(_Spiking):
    """LIF: v_t = beta v_{t-1} + W x_t + U s_{t-1} + b - vth s_{t-1}; returns spikes."""
    kind = 'lif'

    def __init__(self, n_in: int, n_out: int, *, clip: Clip = DEFAULT_CLIP, surrogate_scale: float = 1.0,
                 surrogate_width: float = VTH, fused: bool = True, reset: str = "late", recurrent: bool = True):
        super().__init__(n_in, n_out, clip, surrogate_scale, surrogate_width, fused, reset, recurrent)
        self.beta = _decay(n_out)

    def forward(self, x: Tensor) -> Tensor:
        p = LIFParams(self.W, self.U, self.b, self.beta)
        return (kernels.lif if self.uses_fused else kernels.lif_reference)(x, p, self.opts)


class CubaLIFRecurrent(_Spiking):
    """Cuba-LIF: i_t = alpha i_{t-1} + W x_t + U s_{t-1} + b,
    v_t = beta v_{t-1} + (1 - beta) i_t - vth s_{t-1}; returns spikes.

    lava_cuba=True trains Lava's own CUBA neuron instead, for an exact export to
    stock Lava/netx: one shared alpha and beta, v_t = beta v_{t-1} + i_t + b, hard
    reset to 0 after a spike, spike when v >= vth. Its W, U and b start at LAVA_CUBA_INIT
    (1 - the initial beta) of the study's range: CUBA adds the whole current to v where
    the study's neuron adds (1 - beta) of it, so both start at the same drive. At the
    study's range a CUBA network starts with a third of its neurons firing every step
    and learns to compute in sets that excite each other for ever, which never fall
    silent and so cannot run samples back to back (docs/loihi2.md).
    """
    kind = 'cuba-lif'

    def __init__(self, n_in: int, n_out: int, *, clip: Clip = DEFAULT_CLIP, surrogate_scale: float = 1.0,
                 surrogate_width: float = VTH, fused: bool = True, lava_cuba: bool = False, reset: str = "late",
                 recurrent: bool = True):
        if lava_cuba and reset != "late":
            raise ValueError("lava_cuba has Lava's own reset (to zero, next step); do not give reset as well")
        super().__init__(n_in, n_out, clip, surrogate_scale, surrogate_width, fused, reset, recurrent)
        self.lava_cuba = lava_cuba
        n_decay = 1 if lava_cuba else n_out
        self.alpha, self.beta = _decay(n_decay), _decay(n_decay)
        if lava_cuba:
            with torch.no_grad():
                for p in (self.W, self.U, self.b):
                    p.mul_(LAVA_CUBA_INIT)

    def forward(self, x: Tensor) -> Tensor:
        p = CubaLIFParams(self.W, self.U, self.b, self.alpha, self.beta)
        run = kernels.cuba_lif if self.uses_fused else kernels.cuba_lif_reference
        return run(x, p, self.opts, lava=self.lava_cuba)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, lava_cuba={self.lava_cuba}'


class SpikGRURecurrent(_Spiking):
    """SpikGRU: i_t as Cuba-LIF, z_t = sigmoid(Wz x_t + Uz s_{t-1} + bz),
    v_t = z_t v_{t-1} + (1 - z_t) i_t - vth s_{t-1}; returns spikes. The gate
    replaces beta, so the only decay parameter is alpha."""
    kind = 'spikgru'

    def __init__(self, n_in: int, n_out: int, *, clip: Clip = DEFAULT_CLIP,
                 surrogate_scale: float = 1.0, surrogate_width: float = VTH, fused: bool = True):
        super().__init__(n_in, n_out, clip, surrogate_scale, surrogate_width, fused)
        self.alpha = _decay(n_out)
        self.Wz = _uniform(n_out, n_in, fan_in=n_in)
        self.Uz = _uniform(n_out, n_out, fan_in=n_out)
        self.bz = _uniform(n_out, fan_in=n_in)

    def forward(self, x: Tensor) -> Tensor:
        p = SpikGRUParams(self.W, self.U, self.b, self.Wz, self.Uz, self.bz, self.alpha)
        return (kernels.spikgru if self.fused else kernels.spikgru_reference)(x, p, self.opts)


class RNNRecurrent(_Recurrent):
    """RNN baseline: h_t = ReLU(W x_t + U h_{t-1} + b), U initialised 0.5 I; returns h
    (not clipped)."""
    kind = 'rnn'

    def __init__(self, n_in: int, n_out: int, *, fused: bool = True):
        super().__init__(n_in, n_out, fused)
        with torch.no_grad():
            self.U.copy_(0.5 * torch.eye(n_out))

    def forward(self, x: Tensor) -> Tensor:
        p = RNNParams(self.W, self.U, self.b)
        return (kernels.rnn if self.fused else kernels.rnn_reference)(x, p)


class LeakyReadout(_Block):
    """Leaky integrator readout without spike or reset: o_t = beta o_{t-1} + W s_t + b
    (parameters W, b, beta play DESIGN's Wo, bo, beta_o); returns o. shared_decay: one beta for
    all units (Lava's LIF, hence stock netx, has one decay per layer). current: a synaptic current
    stage first, i_t = alpha i_{t-1} + W s_t + b, o_t = beta o_{t-1} + (1 - beta) i_t (NIR's CubaLI)."""
    kind = 'readout'

    def __init__(self, n_in: int, n_out: int, *, fused: bool = True, shared_decay: bool = False,
                 current: bool = False):
        super().__init__()
        self.n_in, self.n_out, self.fused = n_in, n_out, fused
        self.W = _uniform(n_out, n_in, fan_in=n_in)
        self.b = _uniform(n_out, fan_in=n_in)
        self.beta = _decay(1 if shared_decay else n_out)
        self.alpha = _decay(n_out) if current else None

    def forward(self, x: Tensor) -> Tensor:
        p = ReadoutParams(self.W, self.b, self.beta, self.alpha)
        return (kernels.readout if self.fused else kernels.readout_reference)(x, p)

    def extra_repr(self) -> str:
        return f'{self.n_in} -> {self.n_out}, fused={self.fused}, current={self.alpha is not None}'


class GRUStack(_Block):
    """GRU baseline: torch GRU layers (batch_first) and a linear readout applied at
    every step; returns the readout [B, T, n_out]. Parameters export under torch's
    names (gru.weight_ih_l0, ..., readout.weight, readout.bias).

    A dense batch runs torch's nn.GRU (cuDNN on a GPU; on one CPU thread the fused kernel is no faster on dense
    input, benchmarks/train_speed.py), an EventBatch the fused kernel on the same parameters and equations
    (`fused_recurrence`), whose first projection is event-driven."""
    kind = 'gru'

    def __init__(self, n_in: int, n_out: int, *, hidden: int = 128, num_layers: int = 1):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, num_layers, batch_first=True)
        self.readout = nn.Linear(hidden, n_out)

    def recurrence(self, x: Tensor | EventBatch) -> Tensor:
        """The last GRU layer's h [B, T, hidden]."""
        return self.gru(x)[0] if isinstance(x, Tensor) else self.fused_recurrence(x)

    def fused_recurrence(self, x: Tensor | EventBatch) -> Tensor:
        """nn.GRU's h by kernels.gru, layer by layer, with torch's dropout between layers (the same draws)."""
        g = self.gru
        for l in range(g.num_layers):
            if l and g.dropout > 0 and self.training:  # as nn.GRU draws it: on the time-major layer output
                x = F.dropout(x.transpose(0, 1).contiguous(), g.dropout, True).transpose(0, 1)
            x = kernels.gru(x, *(getattr(g, f'{name}_l{l}') for name in ('weight_ih', 'weight_hh', 'bias_ih',
                                                                          'bias_hh')))
        return x

    def forward(self, x: Tensor | EventBatch) -> Tensor:
        return self.readout(self.recurrence(x))
