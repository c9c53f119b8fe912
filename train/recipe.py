"""Training recipes: the study's, and additions that help a model on voices it never heard.

Each addition is one field; its "off" value leaves training exactly as the study's recipe (same
random draws, same optimiser), so the study's weights are reproduced bit for bit with every
addition off (tested). A named recipe is a set of values; options given on the command line
override single fields.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from common.errors import InputError, settings_from_dict


@dataclass(frozen=True)
class Recipe:
    name: str = "study"
    dropout: float = 0.0  # probability of dropping a hidden spike (output) between layers and before the readout
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0: Adam
    lr_schedule: str = "constant"  # constant | cosine (per epoch, to 0 at the last epoch)
    label_smoothing: float = 0.0
    channel_shift: int = 0  # a whole sample's channels move by a uniform integer in [-k, k]
    channel_shift_share: float = 0.0  # the same, k = round(share x the channel count): one value for any layout
    time_stretch: float = 0.0  # a whole sample's time axis is scaled by a uniform factor in [1 - s, 1 + s]
    event_drop: float = 0.0  # each input event is dropped with this probability
    spectral_tilt: float = 0.0  # a random spectral slope per sample: up to this share of one end's events dropped
    rate_reg: float = 0.0  # loss += rate_reg * mean over hidden layers of (spikes per neuron per step)
    rate_target: float = 0.0  # with rate_reg: the penalty is each neuron's (rate - target)^2 instead (0: the rate)
    blend: float = 0.0  # share of training samples mixed with another sample of their class (audio.binning)
    loss: str = "max"  # max (the study's: max over time, then cross-entropy) | softmax-mean | ce-mean (train.loss)
    quiet_tail: int = 0  # silent steps appended to every training sample, where hidden spikes and the recurrent drive
    # that keeps them firing cost quiet_reg (train.trainer.quiet_penalty):
    quiet_reg: float = 0.0  # a network that falls silent after its input can run samples back to back (docs/loihi2.md)
    decay_min: float = 0.0  # hidden layers' decays (alpha, beta) are clipped to [decay_min, decay_max]
    decay_max: float = 1.0
    keep: str = "best"  # the epoch a run keeps (best.pt): best validation accuracy (the study's) | last
    average: float = 0.0  # the last share of the epochs whose weights are averaged after every step (SWA, trainer)
    distill: float = 0.0  # weight of the teacher's answers in the loss (train.checkpoint; the labels' is 1 - distill)
    distill_temperature: float = 2.0  # the softmax temperature of both answers in that term

    def validate(self) -> None:
        for name in ("dropout", "event_drop", "label_smoothing", "spectral_tilt", "blend", "channel_shift_share",
                     "distill"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
        for name in ("weight_decay", "rate_reg", "time_stretch", "rate_target", "quiet_reg"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.distill_temperature > 0:
            raise InputError(f"--distill-temperature must be positive, got {self.distill_temperature}")
        if self.time_stretch >= 1.0:
            raise InputError(f"--time-stretch must be below 1, got {self.time_stretch}")
        if self.channel_shift < 0:
            raise InputError(f"--channel-shift must be >= 0, got {self.channel_shift}")
        if self.channel_shift and self.channel_shift_share:
            raise InputError("--channel-shift and --channel-shift-share both set: give the shift one way")
        if self.quiet_tail < 0 or (self.quiet_reg > 0) != (self.quiet_tail > 0):
            raise InputError(f"--quiet-tail {self.quiet_tail} and --quiet-reg {self.quiet_reg}: give both (steps > 0 "
                             "and a weight > 0) or neither")
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss!r}: choose {', '.join(LOSSES)}")
        if not 0.0 <= self.decay_min < self.decay_max <= 1.0:
            raise InputError(f"--decay-range {self.decay_min} {self.decay_max}: need 0 <= low < high <= 1")
        if not 0.0 <= self.average <= 1.0:
            raise InputError(f"--average must be in [0, 1], got {self.average}")
        if self.keep not in KEEPS:
            raise InputError(f"--keep {self.keep!r}: choose {', '.join(KEEPS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"--lr-schedule {self.lr_schedule!r}: choose {', '.join(LR_SCHEDULES)}")

    def first_averaged_epoch(self, epochs: int) -> float:
        """The first epoch whose steps are averaged (at least the last one when averaging; inf: none)."""
        return epochs - max(1, round(self.average * epochs)) + 1 if self.average else float("inf")

    def shift_channels(self, n_channels: int) -> int:
        """The channel shift's reach on a layout of `n_channels` channels."""
        return int(round(self.channel_shift_share * n_channels)) if self.channel_shift_share else self.channel_shift

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        on = [f"{f.name}={getattr(self, f.name):.4g}" if isinstance(getattr(self, f.name), float) else
              f"{f.name}={getattr(self, f.name)}" for f in fields(self)
              if f.name != "name" and getattr(self, f.name) != f.default]
        return ", ".join(on) if on else "the study's, no additions"


LR_SCHEDULES = ("constant", "cosine")
LOSSES = ("max", "softmax-mean", "ce-mean")
KEEPS = ("best", "last")
# 24 of 700 channels, as the first "unseen" recipe shifted the SHD layout: 2 of N-TIDIGITS18's 64
UNSEEN_SHIFT = 24 / 700
# regularised against the spiking models' seed spread: dropout, weight decay, bounded decays, a rate target
REGULAR = Recipe(name="regular", dropout=0.2, weight_decay=1e-2, lr_schedule="cosine", decay_min=0.5, decay_max=0.98,
                 rate_reg=10.0, rate_target=0.05)
RECIPES = {
    "study": Recipe(),
    "unseen": Recipe(name="unseen", dropout=0.2, weight_decay=1e-2, lr_schedule="cosine",
                     channel_shift_share=UNSEEN_SHIFT, time_stretch=0.15, event_drop=0.1),
    # Nowotny et al. 2025 (Eventprop on SHD): same-class blend and a channel shift of up to +-40 of 700
    "blend": Recipe(name="blend", blend=0.5, channel_shift_share=40 / 700),
    # the readout loss on every step: the mean over time of the per-step softmax (train.loss)
    "softmax": Recipe(name="softmax", loss="softmax-mean"),
    "regular": REGULAR,
    # regular, keeping its last epoch: the cosine schedule has annealed to it, while the validation share (samples
    # of the training voices) is saturated at about 96 %, so choosing an epoch by it adds a draw, not information
    "regular-last": replace(REGULAR, name="regular-last", keep="last"),
    # regular, averaging the weights over the second half of the steps and keeping the average
    "regular-avg": replace(REGULAR, name="regular-avg", average=0.5, keep="last"),
    # regular, and the answers of a GRU trained on the same voices (train.checkpoint; nested: its `study` run of the same
    # held-out speakers and seed)
    "taught": replace(REGULAR, name="taught", distill=0.5),
    # everything that moves a sample towards another voice, together, at the ranges of adult voices: vocal tract
    # length moves formants by up to about +-20 % (about +-50 of 700 ERB-spaced channels at 1-2 kHz: a share of
    # 0.08), speaking rate by a quarter either way
    "voices": Recipe(name="voices", dropout=0.2, weight_decay=1e-2, lr_schedule="cosine", blend=0.5,
                     channel_shift_share=0.08, time_stretch=0.25, event_drop=0.1, loss="softmax-mean"),
}
# each model's default: the recipe the nested speaker-held-out studies chose for it with all five speakers, on both
# layouts (docs/RESULTS.md, "Voices never heard"); a model not in those studies trains with the study's
DEFAULT_RECIPES = {"cuba-lif": "regular", "spikgru": "regular-last"}


def default_recipe(model: str | None = None) -> str:
    return DEFAULT_RECIPES.get(model, "study")


def make_recipe(name: str | None = None, model: str | None = None, **overrides) -> Recipe:
    """The named recipe (default: `model`'s, default_recipe) with the given fields replaced (None: keep)."""
    name = name or default_recipe(model)
    if name not in RECIPES:
        raise InputError(f"--recipe {name!r}: choose one of {', '.join(RECIPES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in fields(Recipe)}
    if unknown:
        raise InputError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
    r = replace(RECIPES[name], **changes)
    r.validate()
    return r


def recipe_from_dict(d: dict | None) -> Recipe:
    """A recipe as config.json stores it (absent in runs made before recipes: the study's)."""
    if not d:
        return Recipe()
    return settings_from_dict(Recipe, d, "unreadable recipe in the run config")


def lr_at(recipe: Recipe, lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (1-based) of `epochs`: a pure function of the epoch, so resume needs no state."""
    if recipe.lr_schedule == "cosine":
        import math
        return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(1, epochs)))
    return lr


def help_text() -> str:
    from train.models import MODEL_KINDS
    defaults = ", ".join(f"{kind} {default_recipe(kind)}" for kind in MODEL_KINDS)
    return f"Default per model: {defaults}. " + "; ".join(f"{r.name}: {r.describe()}" for r in RECIPES.values())
