"""Spike counts per time bin, channel jitter and batching.

A binned split keeps, per event, one flat index `step * n_channels + channel`
(events after the cut are gone); a batch is densified from those indices with one
`index_add_`, so a whole SHD split bins in well under a second and never has to
sit in memory as a dense [samples, steps, channels] tensor. A batch can also stay
events (`EventBatch`: its nonzero counts, for train.projection's event-driven input
projection); both forms come from the same augmented events.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import numpy as np
import torch

from audio.spike_files import SpikeSet, ranges
from common.errors import InputError


@dataclass(frozen=True)
class BinSpec:
    bin_hz: float
    duration: float
    n_channels: int

    @property
    def n_steps(self) -> int:
        return int(round(self.duration * self.bin_hz))


@dataclass(frozen=True)
class Augment:
    """Training-time input augmentation of a batch (train.recipe's fields); every field at 0 draws nothing."""

    jitter_sigma: float = 0.0  # per event: channel += round(Normal(0, sigma))
    channel_shift: int = 0  # per sample: channel += uniform integer in [-k, k]
    time_stretch: float = 0.0  # per sample: step -> floor((step + U[0, 1)) * f), f uniform in [1 - s, 1 + s]
    event_drop: float = 0.0  # per event: dropped with this probability
    spectral_tilt: float = 0.0  # per sample: events dropped with probability |s| x, s uniform in [-t, t], x the
    # channel's position from the low end (s > 0) or the high end (s < 0): a random spectral slope
    blend: float = 0.0  # per sample, with this probability: mixed with another sample of its class (blend_events)

    @property
    def active(self) -> bool:
        return bool(self.jitter_sigma > 0 or self.channel_shift > 0 or self.time_stretch > 0 or self.event_drop > 0
                    or self.spectral_tilt > 0 or self.blend > 0)


@dataclass
class EventBatch:
    """Spike counts [B, T, C] kept as their nonzero entries: row r = sample * T + step holds the channels
    channel[offsets[r]:offsets[r + 1]] (increasing) with those counts. dense() is the tensor BinnedSet.dense
    gives for the same events."""

    channel: torch.Tensor  # int64 [E]
    count: torch.Tensor  # float32 [E]
    offsets: torch.Tensor  # int64 [B * T]
    shape: torch.Size  # (B, T, C)

    @classmethod
    def from_events(cls, flat: np.ndarray, owner: np.ndarray, n_samples: int, spec: BinSpec) -> "EventBatch":
        """From a batch's events (flat step * C + channel, owner = sample in the batch); an event repeated in
        one bin counts twice."""
        T, C = spec.n_steps, spec.n_channels
        key, count = np.unique(owner.astype(np.int64) * (T * C) + flat, return_counts=True)
        row, channel = np.divmod(key, C)
        offsets = np.searchsorted(row, np.arange(n_samples * T))
        return cls(torch.from_numpy(channel), torch.from_numpy(count.astype(np.float32)),
                   torch.from_numpy(offsets.astype(np.int64)), torch.Size((n_samples, T, C)))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def device(self) -> torch.device:
        return self.count.device

    def rows(self) -> torch.Tensor:
        """Each event's row (sample * T + step)."""
        sizes = torch.diff(self.offsets, append=self.offsets.new_tensor([len(self.channel)]))
        return torch.repeat_interleave(torch.arange(len(self.offsets), device=self.device), sizes)

    def __getitem__(self, part: slice) -> "EventBatch":
        """Samples part.start:part.stop (a torchrun rank's share of a batch)."""
        start, stop, step = part.indices(len(self))
        if step != 1:
            raise ValueError("an EventBatch slices contiguous samples only")
        stop = max(start, stop)
        T = self.shape[1]
        bounds = torch.cat([self.offsets, self.offsets.new_tensor([len(self.channel)])])
        first, last = int(bounds[start * T]), int(bounds[stop * T])
        return EventBatch(self.channel[first:last], self.count[first:last],
                          self.offsets[start * T:stop * T] - first, torch.Size((stop - start, *self.shape[1:])))

    def with_silence(self, steps: int) -> "EventBatch":
        """The same samples followed by `steps` silent steps each."""
        B, T, C = self.shape
        bounds = torch.cat([self.offsets, self.offsets.new_tensor([len(self.channel)])])
        ends = bounds[T::T][:, None].expand(B, steps)  # each sample's events end where the next one's start
        offsets = torch.cat([self.offsets.view(B, T), ends], dim=1).reshape(-1)
        return EventBatch(self.channel, self.count, offsets, torch.Size((B, T + steps, C)))

    def to(self, device: torch.device | str) -> "EventBatch":
        return EventBatch(self.channel.to(device), self.count.to(device), self.offsets.to(device), self.shape)

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        B, T, C = self.shape
        out = torch.zeros(B * T, C, dtype=dtype, device=self.device)
        out.index_put_((self.rows(), self.channel), self.count.to(dtype))
        return out.view(B, T, C)


@dataclass
class BinnedSet:
    """Binned events of a split: flat[offsets[i]:offsets[i+1]] are sample i's (step, channel) indices."""

    flat: np.ndarray  # int32 (int64 for huge grids) step * n_channels + channel
    offsets: np.ndarray  # int64, len n+1
    labels: np.ndarray
    spec: BinSpec
    class_names: list[str]
    speakers: np.ndarray | None = None  # each sample's speaker name (object array), None when the file has none

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def by_class(self) -> list[np.ndarray]:
        """Sample indices of each class (blend draws its partners from them)."""
        return [np.flatnonzero(self.labels == k) for k in range(self.n_classes)]

    def subset(self, index: np.ndarray) -> "BinnedSet":
        index = np.asarray(index, dtype=np.int64)
        starts, stops = self.offsets[index], self.offsets[index + 1]
        offsets = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)
        return BinnedSet(self.flat[ranges(starts, stops)], offsets, self.labels[index], self.spec, self.class_names,
                         None if self.speakers is None else self.speakers[index])

    def speaker_set(self) -> list[str]:
        """The speakers of these samples, sorted ([] when unknown)."""
        return [] if self.speakers is None else sorted({str(s) for s in self.speakers})

    @property
    def density(self) -> float:
        """Input events per channel per step (a count of 3 is 3 events): at most the share of nonzero inputs."""
        return len(self.flat) / max(1, len(self) * self.spec.n_steps * self.spec.n_channels)

    def _events(self, index: np.ndarray, jitter_sigma: float, rng: np.random.Generator | None,
                augment: Augment | None) -> tuple[np.ndarray, np.ndarray]:
        """The batch's events (flat, owner = position in index), augmented (`augment` replaces `jitter_sigma`)."""
        starts, stops = self.offsets[index], self.offsets[index + 1]
        flat = self.flat[ranges(starts, stops)]
        owner = np.repeat(np.arange(len(index)), stops - starts)
        aug = augment if augment is not None else Augment(jitter_sigma=jitter_sigma)
        if aug.active:
            if rng is None:
                raise ValueError("jitter and augmentation need a random generator (rng)")
            if aug.blend > 0:
                flat, owner = blend_events(self, index, flat, owner, aug.blend, rng)
            flat, owner = augment_events(flat, owner, len(index), self.spec, aug, rng)
        return flat, owner

    def events(self, index: np.ndarray, jitter_sigma: float = 0.0, rng: np.random.Generator | None = None,
               augment: Augment | None = None) -> EventBatch:
        """The batch `dense` gives (the same arguments, the same draws from rng), as an EventBatch."""
        index = np.asarray(index, dtype=np.int64)
        return EventBatch.from_events(*self._events(index, jitter_sigma, rng, augment), len(index), self.spec)

    def dense(self, index: np.ndarray, jitter_sigma: float = 0.0, rng: np.random.Generator | None = None,
              augment: Augment | None = None) -> torch.Tensor:
        """Spike counts [len(index), n_steps, n_channels] as float32, optionally channel-jittered or augmented
        (`augment` replaces `jitter_sigma`)."""
        index = np.asarray(index, dtype=np.int64)
        flat, owner = self._events(index, jitter_sigma, rng, augment)
        size = self.spec.n_steps * self.spec.n_channels
        out = torch.zeros(len(index) * size, dtype=torch.float32)
        out.index_add_(0, torch.from_numpy(owner * size + flat), torch.ones(len(flat), dtype=torch.float32))
        return out.view(len(index), self.spec.n_steps, self.spec.n_channels)

    def batches(self, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None,
                jitter_sigma: float = 0.0, augment: Augment | None = None,
                events: bool = False) -> Iterator[tuple[torch.Tensor | EventBatch, torch.Tensor]]:
        """(counts [B, T, C], labels [B]) batches, the counts as an EventBatch if `events`; shuffle, jitter and
        augmentation draw from `rng`."""
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        make = self.events if events else self.dense
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield make(idx, jitter_sigma, rng, augment), torch.from_numpy(self.labels[idx])


def jitter(flat: np.ndarray, owner: np.ndarray, n_channels: int, sigma: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Moves each event's channel by round(Normal(0, sigma)); events pushed out of range are dropped."""
    step, channel = np.divmod(flat, n_channels)
    channel = channel + np.rint(rng.normal(0.0, sigma, size=channel.shape)).astype(np.int64)
    keep = (channel >= 0) & (channel < n_channels)
    return step[keep] * n_channels + channel[keep], owner[keep]


def blend_events(split: BinnedSet, index: np.ndarray, flat: np.ndarray, owner: np.ndarray, share: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Same-class blend (after Nowotny et al. 2025, Eventprop on SHD): with probability `share` a sample of the
    batch becomes a mix of itself and another sample of its class from the split: the partner's events are moved
    so that its centre of mass (mean step, mean channel) lands on the sample's, those pushed out of range are
    dropped, and each event of either is kept with probability 1/2 (so the expected count is their mean). The
    label never changes and classes never mix. Events come back grouped by owner."""
    C, T = split.spec.n_channels, split.spec.n_steps
    n = len(index)
    picked = np.flatnonzero(rng.random(n) < share)
    if picked.size == 0:
        return flat, owner
    partners = np.empty(picked.size, dtype=np.int64)
    for k, b in enumerate(picked):  # a partner of the same class, never the sample itself (when it has company)
        members = split.by_class[split.labels[index[b]]]
        others = members[members != index[b]] if members.size > 1 else members
        partners[k] = others[rng.integers(others.size)]
    starts, stops = split.offsets[partners], split.offsets[partners + 1]
    p_flat = split.flat[ranges(starts, stops)].astype(np.int64)
    p_owner = np.repeat(picked, stops - starts)
    step, channel = np.divmod(flat.astype(np.int64), C)
    p_step, p_channel = np.divmod(p_flat, C)
    n_own = np.bincount(owner, minlength=n)[picked]
    n_partner = stops - starts
    with np.errstate(invalid="ignore", divide="ignore"):  # a silent sample has no centre: it is not moved
        d_step = np.bincount(owner, step, n)[picked] / n_own - np.bincount(p_owner, p_step, n)[picked] / n_partner
        d_channel = (np.bincount(owner, channel, n)[picked] / n_own
                     - np.bincount(p_owner, p_channel, n)[picked] / n_partner)
    shift = np.zeros((n, 2), dtype=np.int64)
    shift[picked, 0] = np.rint(np.nan_to_num(d_step, posinf=0.0, neginf=0.0))
    shift[picked, 1] = np.rint(np.nan_to_num(d_channel, posinf=0.0, neginf=0.0))
    p_step, p_channel = p_step + shift[p_owner, 0], p_channel + shift[p_owner, 1]
    inside = (p_step >= 0) & (p_step < T) & (p_channel >= 0) & (p_channel < C)
    blended = np.zeros(n, dtype=bool)
    blended[picked] = True
    keep_own = ~blended[owner] | (rng.random(len(flat)) < 0.5)
    keep_partner = inside & (rng.random(len(p_flat)) < 0.5)
    all_owner = np.concatenate([owner[keep_own], p_owner[keep_partner]])
    all_flat = np.concatenate([flat[keep_own].astype(np.int64), (p_step * C + p_channel)[keep_partner]])
    order = np.argsort(all_owner, kind="stable")
    return all_flat[order], all_owner[order]


def augment_events(flat: np.ndarray, owner: np.ndarray, n_samples: int, spec: BinSpec, aug: Augment,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Applies `aug` to a batch's events (flat step * C + channel indices, owner = sample in the batch), in a fixed
    order (jitter, channel shift, time stretch, event drop, spectral tilt), each drawing from `rng` only when it
    is on."""
    C, T = spec.n_channels, spec.n_steps
    if aug.jitter_sigma > 0:
        flat, owner = jitter(flat, owner, C, aug.jitter_sigma, rng)
    if aug.channel_shift > 0 or aug.time_stretch > 0:
        step, channel = np.divmod(flat, C)
        if aug.channel_shift > 0:
            channel = channel + rng.integers(-aug.channel_shift, aug.channel_shift + 1, size=n_samples)[owner]
        if aug.time_stretch > 0:
            factor = rng.uniform(1.0 - aug.time_stretch, 1.0 + aug.time_stretch, size=n_samples)[owner]
            step = np.floor((step + rng.random(len(step))) * factor).astype(np.int64)
        keep = (channel >= 0) & (channel < C) & (step < T)
        flat, owner = step[keep] * C + channel[keep], owner[keep]
    if aug.event_drop > 0:
        keep = rng.random(len(flat)) >= aug.event_drop
        flat, owner = flat[keep], owner[keep]
    if aug.spectral_tilt > 0:
        slope = rng.uniform(-aug.spectral_tilt, aug.spectral_tilt, size=n_samples)[owner]
        x = (flat % C) / max(1, C - 1)
        keep = rng.random(len(flat)) >= np.abs(slope) * np.where(slope > 0, x, 1.0 - x)
        flat, owner = flat[keep], owner[keep]
    return flat, owner


def bin_spikes(spikes: SpikeSet, spec: BinSpec, chunk: int = 1 << 24) -> BinnedSet:
    """Bins every sample: bin k holds events with k/bin_hz <= t < (k+1)/bin_hz; events at t >= duration are cut.

    The flat indices are int32 (4 bytes per event) whenever steps x channels allows; the events are binned
    `chunk` at a time (float64 arithmetic, bounded temporaries)."""
    if spikes.units.size and spikes.units.max() >= spec.n_channels:
        raise InputError(f"{spikes.source}: channel ids reach {spikes.units.max()} but only {spec.n_channels} channels were asked for")
    dtype = np.int32 if spec.n_steps * spec.n_channels < np.iinfo(np.int32).max else np.int64
    per_sample = np.zeros(len(spikes), dtype=np.int64)
    flats = []
    for a in range(0, len(spikes.times), chunk):
        step = np.floor(spikes.times[a:a + chunk].astype(np.float64) * spec.bin_hz).astype(np.int64)
        k = step < spec.n_steps
        owner = np.searchsorted(spikes.offsets, np.arange(a, a + len(step))[k], side="right") - 1
        per_sample += np.bincount(owner, minlength=len(spikes))
        flats.append((step[k] * spec.n_channels + spikes.units[a:a + chunk][k]).astype(dtype))
    offsets = np.concatenate([[0], np.cumsum(per_sample)]).astype(np.int64)
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=dtype)
    speakers = None
    if spikes.speakers is not None:
        ids, inverse = np.unique(spikes.speakers, return_inverse=True)
        speakers = np.array([spikes.speaker_name(int(k)) for k in ids], dtype=object)[inverse]
    return BinnedSet(flat, offsets, spikes.labels.copy(), spec, spikes.class_names, speakers)
