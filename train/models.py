"""Whole models: a stack of recurrent blocks and a readout, built from a plain config.

The config (kind, sizes, layer options) is what a checkpoint stores, so any stage
can rebuild the exact network from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from common.errors import InputError
from train.layers import CubaLIFRecurrent, GRUStack, LeakyReadout, LIFRecurrent, RNNRecurrent, SpikGRURecurrent
from train.neurons import RESETS

RECURRENT = {"lif": LIFRecurrent, "cuba-lif": CubaLIFRecurrent, "spikgru": SpikGRURecurrent, "rnn": RNNRecurrent}
MODEL_KINDS = ("lif", "cuba-lif", "spikgru", "rnn", "gru")
SPIKING = ("lif", "cuba-lif", "spikgru")
# layer options each kind accepts (the rest of a block's keywords are fixed by the recipe)
OPTIONS = {
    "lif": {"clip", "surrogate_scale", "surrogate_width", "reset", "readout_current", "spike_count_readout"},
    "cuba-lif": {"clip", "surrogate_scale", "surrogate_width", "lava_cuba", "shared_readout_decay", "reset",
                 "readout_current", "spike_count_readout"},
    "spikgru": {"clip", "surrogate_scale", "surrogate_width"},
    "rnn": set(),
    "gru": set(),
}


# The readout of a spike-count model: o_t = the last layer's spikes so far / COUNT_SCALE, so that the largest
# maximum over time of o is the largest spike count (the class rule of a NIR graph whose output layer spikes);
# 1/64 keeps 8191 spikes within the fixed-point readout's 24 bits, and is exact in fixed point.
COUNT_SCALE = 64.0


@dataclass
class ModelConfig:
    """kind, sizes and options; widths / recurrent (one entry per layer) when the layers differ (an imported
    NIR graph): widths the neurons of each layer (default `hidden` each), recurrent whether it has U."""
    kind: str
    n_in: int
    n_classes: int
    layers: int = 2
    hidden: int = 128
    options: dict = field(default_factory=dict)
    widths: list | None = None
    recurrent: list | None = None

    def validate(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise InputError(f"--model {self.kind!r}: unknown, choose one of {', '.join(MODEL_KINDS)}")
        for name in ("n_in", "n_classes", "layers", "hidden"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"model {name} must be at least 1, got {getattr(self, name)}")
        unknown = set(self.options) - OPTIONS[self.kind]
        if unknown:
            raise InputError(f"option(s) {', '.join(sorted(unknown))} do not apply to a {self.kind} model")
        clip = self.options.get("clip", ())
        if clip is not None and "clip" in self.options and not (len(clip) == 2 and clip[0] < clip[1]):
            raise InputError(f"--clip {' '.join(map(str, clip))}: give LOW HIGH with LOW < HIGH")
        for name in ("surrogate_scale", "surrogate_width"):
            if name in self.options and not self.options[name] > 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {self.options[name]}")
        reset = self.options.get("reset", "late")
        if reset not in RESETS:
            raise InputError(f"--reset {reset!r}: choose one of {', '.join(RESETS)}")
        if reset != "late" and self.options.get("lava_cuba"):
            raise InputError("--reset does not apply with --lava-cuba (Lava's CUBA resets to zero itself)")
        for name in ("widths", "recurrent"):
            value = getattr(self, name)
            if value is not None and len(value) != int(self.layers):
                raise InputError(f"model {name}: {len(value)} entries for {self.layers} layers")
        if self.widths is not None and min(int(w) for w in self.widths) < 1:
            raise InputError(f"model widths must be at least 1, got {self.widths}")
        if self.recurrent is not None and not all(self.recurrent) and self.kind not in ("lif", "cuba-lif"):
            raise InputError(f"a {self.kind} model has recurrence in every layer")
        if self.options.get("spike_count_readout") and self.sizes[-1] != self.n_classes:
            raise InputError(f"a spike-count readout needs one output neuron per class: {self.sizes[-1]} neurons, "
                             f"{self.n_classes} classes")

    @property
    def sizes(self) -> list[int]:
        widths = [self.hidden] * int(self.layers) if self.widths is None else [int(w) for w in self.widths]
        return [self.n_in] + widths

    def is_recurrent(self, layer: int) -> bool:
        return True if self.recurrent is None else bool(self.recurrent[layer])


class HiddenDropout(nn.Module):
    """Training-time dropout of hidden outputs (spikes) between layers and before the readout.

    p = 0 (the study's recipe) draws nothing; with p > 0 the trainer reseeds torch's generator every
    epoch from (seed, epoch), so a resumed run draws the same masks as an uninterrupted one."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1.0 - self.p)


class RecurrentNet(nn.Module):
    """L recurrent blocks of one kind, then the leaky-integrator readout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        block = RECURRENT[cfg.kind]
        sizes = cfg.sizes
        options = dict(cfg.options)
        shared = bool(options.pop("shared_readout_decay", False))
        current = bool(options.pop("readout_current", False))
        self.spike_count = bool(options.pop("spike_count_readout", False))
        if not all(cfg.is_recurrent(l) for l in range(cfg.layers)):
            per_layer = [dict(options, recurrent=cfg.is_recurrent(l)) for l in range(cfg.layers)]
        else:
            per_layer = [options] * cfg.layers
        self.hidden_layers = nn.ModuleList(block(sizes[l], sizes[l + 1], **per_layer[l]) for l in range(cfg.layers))
        self.readout = LeakyReadout(sizes[-1], cfg.n_classes, shared_decay=shared, current=current)
        if self.spike_count:
            self._count_spikes()
        self.dropout = HiddenDropout()

    def _count_spikes(self) -> None:
        """Fix the readout to count the last layer's spikes (COUNT_SCALE), frozen: nothing to train."""
        r = self.readout
        with torch.no_grad():
            r.W.copy_(torch.eye(r.n_out, r.n_in) / COUNT_SCALE)
            r.b.zero_()
            r.beta.fill_(1.0)
        for p in r.parameters():
            p.requires_grad_(False)

    @property
    def takes_events(self) -> bool:
        """Whether forward takes an audio.binning.EventBatch without densifying it (train.projection)."""
        return self.hidden_layers[0].uses_fused

    def forward(self, x: Tensor, return_hidden: bool = False):
        """x [B, T, n_in] (or an EventBatch) -> readout [B, T, K] (and each hidden layer's output, before
        dropout)."""
        hidden = []
        for layer in self.hidden_layers:
            x = layer(x)
            hidden.append(x)
            x = self.dropout(x)
        out = self.readout(x)
        return (out, hidden) if return_hidden else out

    def clamp_(self, low: float = 0.0, high: float = 1.0) -> None:
        """The hidden layers' decays to [low, high] (a recipe's decay range), the readout's to [0, 1]."""
        for block in self.hidden_layers:
            block.clamp_(low, high)
        self.readout.clamp_()

    def set_dropout(self, p: float) -> None:
        self.dropout.p = float(p)


class GRUNet(nn.Module):
    """The GRU baseline: torch GRU layers and a per-step linear readout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = GRUStack(cfg.n_in, cfg.n_classes, hidden=cfg.hidden, num_layers=cfg.layers)
        self.dropout = HiddenDropout()

    takes_events = True  # through the fused GRU kernel, on any device

    def forward(self, x: Tensor, return_hidden: bool = False):
        h = self.net.recurrence(x)
        out = self.net.readout(self.dropout(h))
        return (out, []) if return_hidden else out

    def set_dropout(self, p: float) -> None:
        """Between the GRU layers (torch's own) and before the readout."""
        self.dropout.p = float(p)
        self.net.gru.dropout = float(p) if self.net.gru.num_layers > 1 else 0.0

    def clamp_(self, low: float = 0.0, high: float = 1.0) -> None:
        """Nothing to clip: the GRU has no decays."""


def build_model(cfg: ModelConfig) -> nn.Module:
    cfg.validate()
    if cfg.kind == "gru":
        return GRUNet(cfg)
    opts = dict(cfg.options)
    if "clip" in opts and opts["clip"] is not None:
        opts["clip"] = tuple(opts["clip"])
    return RecurrentNet(ModelConfig(cfg.kind, cfg.n_in, cfg.n_classes, cfg.layers, cfg.hidden, opts,
                                    cfg.widths, cfg.recurrent))


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuilds a model and loads its weights; a mismatching state dict is an InputError."""
    cfg = ModelConfig(**ckpt["model"])
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise InputError(f"{ckpt.get('path', 'checkpoint')}: weights do not fit a {cfg.kind} model ({first})") from None
    model.eval()
    return model
