"""The first layer's input projection a = W x + b over all steps, dense or from the batch's events, and which of the
two a run uses.

Dense: one matmul, work in channels x steps x neurons. Events (audio.binning.EventBatch, built by the loader without
the dense batch): the forward sums, per (sample, step), W's columns of its events weighted by their counts
(`embedding_bag`); the weight gradient is the same gather the other way round (per channel, the output-gradient rows
of its events), so both cost events x neurons. embedding_bag's own backward scatters one event at a time and takes
longer than the dense matmul's; `_EventProjection` writes the transposed gather instead (benchmarks/train_speed.py).
Both give the same values up to float rounding (tests/test_layers.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from audio.binning import EventBatch

PROJECTIONS = ("auto", "dense", "sparse")
# auto: events when at most this share of the inputs are events (the real data has about 2 %; on one CPU thread the
# two paths cost about the same near 5 %: benchmarks/train_speed.py --density)
SPARSE_MAX_DENSITY = 0.04


class _EventProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, W: Tensor, b: Tensor | None, events: EventBatch) -> Tensor:
        count = events.count.to(W.dtype)
        a = F.embedding_bag(events.channel, W.t().contiguous(), events.offsets, mode="sum", per_sample_weights=count)
        if b is not None:
            a.add_(b)
        ctx.save_for_backward(count)
        ctx.events = events
        return a.view(*events.shape[:2], W.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, ga: Tensor):
        (count,), events = ctx.saved_tensors, ctx.events
        ga = ga.reshape(-1, ga.shape[-1])
        dW = db = None
        if ctx.needs_input_grad[0]:
            C = events.shape[2]
            small = torch.int16 if C <= torch.iinfo(torch.int16).max else torch.int32  # a faster sort
            order = torch.argsort(events.channel.to(small), stable=True)  # the events channel by channel
            per_channel = torch.bincount(events.channel, minlength=C)
            starts = torch.cumsum(per_channel, 0) - per_channel
            dW = F.embedding_bag(events.rows().index_select(0, order), ga, starts, mode="sum",
                                 per_sample_weights=count.index_select(0, order)).t().contiguous()
        if ctx.needs_input_grad[1]:
            db = ga.sum(0)
        return dW, db, None


def project(x: Tensor | EventBatch, W: Tensor, b: Tensor | None = None) -> Tensor:
    """W x + b for x [B, T, n_in] dense or an EventBatch: [B, T, n_out]."""
    if isinstance(x, EventBatch):
        return _EventProjection.apply(W, b, x)
    return F.linear(x, W, b)


def dense_input(x: Tensor | EventBatch, like: Tensor) -> Tensor:
    """x as a dense tensor of `like`'s dtype (the plain loops index it step by step)."""
    return x.dense(like.dtype) if isinstance(x, EventBatch) else x


def choose(asked: str, device: torch.device, takes_events: bool, density: float) -> tuple[bool, str]:
    """(feed the model events?, the line that says so) for `--input-projection asked`. auto: events on the CPU
    for sparse inputs; the dense matmul on a GPU, which runs it faster than the gathers."""
    if asked not in PROJECTIONS:
        raise ValueError(f"input projection {asked!r}: choose one of {', '.join(PROJECTIONS)}")
    share = f"{100 * density:.1f} % of the inputs are events"
    if not takes_events:
        return False, "dense (this model takes dense inputs only)"
    if asked != "auto":
        return asked == "sparse", f"{asked} (--input-projection; {share})"
    if device.type != "cpu":
        return False, f"dense (auto: on {device.type}; {share})"
    if density > SPARSE_MAX_DENSITY:
        return False, f"dense (auto: {share}, above {100 * SPARSE_MAX_DENSITY:g} %)"
    return True, f"sparse (auto: {share}, on the CPU)"
