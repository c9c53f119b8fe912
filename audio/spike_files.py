"""Spiking audio datasets: readers for the SHD/SSC and N-TIDIGITS18 layouts.

Events are kept flat (one array of times, one of channels, per-sample offsets)
because that is how both layouts store them and because binning, jitter and
batching are then single vectorised operations over a whole split.

Odd spike times (NaN, +-inf, negative) are dropped, never binned: the count is
kept in `SpikeSet.dropped` and printed by `cli.py data info`. Every other defect
(missing key, channel out of range, label outside the class list, empty sample,
times and channels of different lengths) raises `InputError` naming the file
and the sample.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from common.errors import InputError

SHD_CHANNELS = 700
DAS_CHANNELS = 64
DAS_CLASSES = ["z", "o", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
_DAS_ID = re.compile(r"^(?P<speaker>.*?)_?(?P<take>\d*)-(?P<digits>[^-]+?)(?P<letter>[a-z]?)$")


@dataclass
class SpikeSet:
    """Events of many samples; sample i owns events offsets[i]:offsets[i+1]."""

    times: np.ndarray  # float32 seconds (float64 where a caller made them so)
    units: np.ndarray  # uint16 channel ids (int32 beyond 65535 channels), 0 <= unit < n_channels
    offsets: np.ndarray  # int64, len n+1
    labels: np.ndarray  # int64 class index
    speakers: np.ndarray | None  # int64 speaker index, or None when the file has none
    class_names: list[str]
    n_channels: int
    source: str
    ids: list[str] | None = None
    dropped: dict[str, int] = field(default_factory=lambda: {"nan": 0, "inf": 0, "negative": 0})
    skipped_multi_digit: int = 0
    speaker_names: list[str] | None = None  # speaker_names[k] names speaker index k (None: the index is the name)
    # `data convert --speed` copies: each sample's playback factor (None: every sample at its own speed) and the
    # recording it was made from (copies of one recording share it); the speaker protocol tests originals only
    speeds: np.ndarray | None = None
    recordings: np.ndarray | None = None

    @property
    def is_original(self) -> np.ndarray:
        """Whether each sample is a recording at its own speed (not a speed-perturbed copy)."""
        return np.ones(len(self.labels), dtype=bool) if self.speeds is None else self.speeds == 1.0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> np.ndarray:
        """Events per sample."""
        return np.diff(self.offsets)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.times[a:b], self.units[a:b]

    def subset(self, index: np.ndarray) -> "SpikeSet":
        index = np.asarray(index, dtype=np.int64)
        starts, stops = self.offsets[index], self.offsets[index + 1]
        take = ranges(starts, stops)
        offsets = np.concatenate([[0], np.cumsum(stops - starts)]).astype(np.int64)
        return SpikeSet(
            times=self.times[take], units=self.units[take], offsets=offsets,
            labels=self.labels[index],
            speakers=None if self.speakers is None else self.speakers[index],
            class_names=self.class_names, n_channels=self.n_channels, source=self.source,
            ids=None if self.ids is None else [self.ids[i] for i in index],
            dropped=dict(self.dropped), skipped_multi_digit=self.skipped_multi_digit,
            speaker_names=self.speaker_names,
            speeds=None if self.speeds is None else self.speeds[index],
            recordings=None if self.recordings is None else self.recordings[index],
        )

    def speaker_name(self, k: int) -> str:
        return self.speaker_names[k] if self.speaker_names is not None else str(k)


def concat(sets: list[SpikeSet], source: str) -> SpikeSet:
    """One SpikeSet of several (the splits of one dataset), speakers matched by name across them."""
    first = sets[0]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise InputError(f"{s.source}: classes {s.class_names[:5]}... differ from {first.source}'s")
        if s.n_channels != first.n_channels:
            raise InputError(f"{s.source}: {s.n_channels} channels, {first.source} has {first.n_channels}")
    speakers, names = None, None
    if all(s.speakers is not None for s in sets):
        if all(s.speaker_names == first.speaker_names for s in sets):  # one numbering (the file's ids): kept
            speakers, names = np.concatenate([s.speakers for s in sets]), first.speaker_names
        else:
            per_sample = [s.speaker_name(int(k)) for s in sets for k in s.speakers]
            names = sorted(set(per_sample))
            index = {n: k for k, n in enumerate(names)}
            speakers = np.array([index[n] for n in per_sample], dtype=np.int64)
    starts = np.cumsum([0] + [len(s.times) for s in sets[:-1]])
    offsets = np.concatenate([[0]] + [s.offsets[1:] + a for s, a in zip(sets, starts)]).astype(np.int64)
    dropped = {k: sum(s.dropped[k] for s in sets) for k in first.dropped}
    ids = [i for s in sets for i in s.ids] if all(s.ids is not None for s in sets) else None
    speeds = recordings = None
    if any(s.speeds is not None for s in sets):  # a file without copies: every sample at its own speed
        speeds = np.concatenate([np.ones(len(s)) if s.speeds is None else s.speeds for s in sets])
        # recordings numbered apart per file (a file without copies: each sample its own recording)
        parts, base = [], 0
        for s in sets:
            rec = np.arange(len(s)) if s.recordings is None else s.recordings
            parts.append(rec + base)
            base += int(rec.max(initial=-1)) + 1
        recordings = np.concatenate(parts)
    return SpikeSet(np.concatenate([s.times for s in sets]), np.concatenate([s.units for s in sets]), offsets,
                    np.concatenate([s.labels for s in sets]), speakers, first.class_names, first.n_channels, source,
                    ids=ids, dropped=dropped, skipped_multi_digit=sum(s.skipped_multi_digit for s in sets),
                    speaker_names=names, speeds=speeds, recordings=recordings)


def ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, stop) for each pair, without a Python loop."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - seg_start)


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__})") from None


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _require(h5: h5py.File, key: str, path: Path, layout: str):
    if key not in h5:
        raise InputError(f"{path}: not the {layout} layout, missing '{key}'")
    return h5[key]


def _assemble(path: Path, times_list, units_list, names: list[str], n_channels: int) -> tuple:
    """Checks each sample, drops odd times, and flattens; returns arrays and drop counts."""
    dropped = {"nan": 0, "inf": 0, "negative": 0}
    lengths = np.array([len(t) for t in times_list], dtype=np.int64)
    unit_lengths = np.array([len(u) for u in units_list], dtype=np.int64)
    bad = np.flatnonzero(lengths != unit_lengths)
    if bad.size:
        i = bad[0]
        raise InputError(f"{path}: sample {names[i]} has {lengths[i]} spike times but {unit_lengths[i]} channel ids")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise InputError(f"{path}: sample {names[empty[0]]} has no events ({empty.size} empty samples)")
    times = np.concatenate(times_list).astype(np.float32)
    units = np.concatenate(units_list)
    if units.dtype.kind not in "iu":
        if units.dtype.kind != "f" or not np.array_equal(units, np.round(units)):
            raise InputError(f"{path}: channel ids are {units.dtype}; whole numbers expected")
    owner = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    out = np.flatnonzero((units < 0) | (units >= n_channels)) if units.dtype.kind != "u" else \
        np.flatnonzero(units >= n_channels)
    if out.size:
        j = out[0]
        raise InputError(f"{path}: sample {names[owner[j]]} has channel id {units[j]} outside 0..{n_channels - 1}")
    nan, inf = np.isnan(times), np.isinf(times)
    neg = ~nan & (times < 0)
    dropped["nan"], dropped["inf"], dropped["negative"] = int(nan.sum()), int(inf.sum()), int((neg & ~inf).sum())
    keep = ~(nan | inf | neg)
    kept_per_sample = np.bincount(owner[keep], minlength=len(lengths))
    now_empty = np.flatnonzero(kept_per_sample == 0)
    if now_empty.size:
        raise InputError(f"{path}: sample {names[now_empty[0]]} has no valid spike times left (all NaN, inf or negative)")
    offsets = np.concatenate([[0], np.cumsum(kept_per_sample)]).astype(np.int64)
    return times[keep], units[keep].astype(unit_dtype(n_channels)), offsets, dropped


def unit_dtype(n_channels: int):
    """The narrowest dtype for channel ids: 2 bytes up to 65535 channels (SHD's 700, N-TIDIGITS18's 64)."""
    return np.uint16 if n_channels <= np.iinfo(np.uint16).max + 1 else np.int32


def _assemble_chunks(path: Path, times_ds, units_ds, names: list[str], n_channels: int, chunk: int = 4096) -> tuple:
    """_assemble over the file `chunk` samples at a time, so that reading a large file never holds more than one
    chunk of h5py's per-sample arrays beside the compact result (SSC-size files)."""
    parts, dropped = [], {"nan": 0, "inf": 0, "negative": 0}
    for a in range(0, len(names), chunk):
        t, u, off, d = _assemble(path, list(times_ds[a:a + chunk]), list(units_ds[a:a + chunk]), names[a:a + chunk],
                                 n_channels)
        parts.append((t, u, off))
        dropped = {k: dropped[k] + d[k] for k in dropped}
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, unit_dtype(n_channels)), np.zeros(1, np.int64), dropped
    starts = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p[2][1:] + a for p, a in zip(parts, starts)]).astype(np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), offsets, dropped


def _integer_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """Class indices as int64; strings, fractions and non-finite labels are errors naming the file and sample."""
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            raise InputError(f"{path}: sample {bad[0]} has label {labels[bad[0]]}; labels must be whole class indices")
        return labels.astype(np.int64)
    raise InputError(f"{path}: labels are {labels.dtype} ({labels[:1].tolist()}...); the SHD/SSC layout stores class "
                     "indices (integers) in 'labels' and the names in 'extra/keys'")


@contextlib.contextmanager
def _damaged(path: Path, layout: str):
    """Whatever a damaged or mistyped file makes numpy or h5py raise becomes an InputError naming the file."""
    try:
        yield
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OSError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot be read as the {layout} layout, damaged or a value of the wrong type? "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def read_shd(path: str | Path, n_channels: int = SHD_CHANNELS) -> SpikeSet:
    """One SHD/SSC file: spikes/times, spikes/units, labels, extra/keys, extra/speaker."""
    path = Path(path)
    with _damaged(path, "SHD/SSC"):
        return _read_shd(path, n_channels)


def _read_shd(path: Path, n_channels: int) -> SpikeSet:
    with _open(path) as h5:
        times_ds = _require(h5, "spikes/times", path, "SHD/SSC")
        units_ds = _require(h5, "spikes/units", path, "SHD/SSC")
        labels = _integer_labels(np.asarray(_require(h5, "labels", path, "SHD/SSC")[()]).ravel(), path)
        keys = _decode(h5["extra/keys"][()]) if "extra/keys" in h5 else None
        speakers = np.asarray(h5["extra/speaker"][()]).astype(np.int64).ravel() if "extra/speaker" in h5 else None
        speaker_names = _decode(h5["extra/speaker_names"][()]) if "extra/speaker_names" in h5 else None
        n = len(labels)
        speeds, recordings = _speed_copies(h5, path, n)
        if times_ds.ndim != 1 or units_ds.ndim != 1:
            raise InputError(f"{path}: spikes/times and spikes/units must hold one array per sample")
        if len(times_ds) != n or len(units_ds) != n:
            raise InputError(f"{path}: {n} labels but {len(times_ds)} spike-time and {len(units_ds)} channel arrays")
        _check_labels(path, labels, keys, speakers, speaker_names)
        names = [str(i) for i in range(n)]
        times, units, offsets, dropped = _assemble_chunks(path, times_ds, units_ds, names, n_channels)
    class_names = keys if keys is not None else [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    return SpikeSet(times, units, offsets, labels, speakers, class_names, n_channels, str(path), dropped=dropped,
                    speaker_names=speaker_names if speakers is not None else None, speeds=speeds,
                    recordings=recordings)


def _speed_copies(h5, path: Path, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """extra/speed and extra/recording (`data convert --speed`), checked; (None, None) in a file without them."""
    if "extra/speed" not in h5:
        return None, None
    speeds = np.asarray(h5["extra/speed"][()], dtype=np.float64).ravel()
    if len(speeds) != n or not (np.isfinite(speeds) & (speeds > 0)).all():
        raise InputError(f"{path}: extra/speed must hold one positive factor per sample ({n})")
    if "extra/recording" not in h5:
        return speeds, None
    recordings = np.asarray(h5["extra/recording"][()]).ravel()
    if len(recordings) != n or recordings.dtype.kind not in "iu" or (recordings.size and recordings.min() < 0):
        raise InputError(f"{path}: extra/recording must hold one recording number (>= 0) per sample ({n})")
    return speeds, recordings.astype(np.int64)


def _check_labels(path: Path, labels: np.ndarray, keys, speakers, speaker_names) -> None:
    n = len(labels)
    if speakers is not None and len(speakers) != n:
        raise InputError(f"{path}: {n} labels but {len(speakers)} speaker entries")
    if speakers is not None and speakers.size and speakers.min() < 0:
        raise InputError(f"{path}: negative speaker id {speakers.min()} in extra/speaker")
    if speaker_names is not None and speakers is not None and speakers.size and speakers.max() >= len(speaker_names):
        raise InputError(f"{path}: speaker id {speakers.max()} but only {len(speaker_names)} extra/speaker_names")
    class_names = keys if keys is not None else [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise InputError(f"{path}: sample {bad[0]} has label {labels[bad[0]]} outside the {len(class_names)} classes")


def parse_das_id(sample_id: str) -> tuple[str, str]:
    """'george07-5a' -> ('george', '5'): speaker and digit string of an N-TIDIGITS18 id; an underscore before
    the take ends a speaker name that ends in a digit ('spk1_07-5a' -> 'spk1', as `data convert` writes it)."""
    m = _DAS_ID.match(sample_id)
    if not m or not m.group("digits"):
        raise ValueError(sample_id)
    return m.group("speaker"), m.group("digits")


def read_das(path: str | Path, split: str, n_channels: int = DAS_CHANNELS) -> SpikeSet:
    """One split of an N-TIDIGITS18-layout file; single-digit samples only (11 classes)."""
    path = Path(path)
    with _damaged(path, "N-TIDIGITS18"):
        return _read_das(path, split, n_channels)


def _read_das(path: Path, split: str, n_channels: int) -> SpikeSet:
    with _open(path) as h5:
        ids = _decode(_require(h5, f"{split}_labels", path, "N-TIDIGITS18")[()])
        addr = _require(h5, f"{split}_addresses", path, "N-TIDIGITS18")
        stamps = _require(h5, f"{split}_timestamps", path, "N-TIDIGITS18")
        kept, labels, speaker_names, times_list, units_list = [], [], [], [], []
        skipped = 0
        for sid in ids:
            try:
                speaker, digits = parse_das_id(sid)
            except ValueError:
                raise InputError(f"{path}: sample {sid} is not an N-TIDIGITS18 id (<speaker><take>-<digits><letter>)") from None
            if len(digits) != 1:
                skipped += 1
                continue
            if digits not in DAS_CLASSES:
                raise InputError(f"{path}: sample {sid} has digit '{digits}' outside the classes {' '.join(DAS_CLASSES)}")
            if sid not in addr or sid not in stamps:
                raise InputError(f"{path}: sample {sid} has no {split}_addresses or {split}_timestamps entry")
            kept.append(sid)
            labels.append(DAS_CLASSES.index(digits))
            speaker_names.append(speaker)
            times_list.append(np.asarray(stamps[sid][()]).ravel())
            units_list.append(np.asarray(addr[sid][()]).ravel())
    if not kept:
        raise InputError(f"{path}: split '{split}' has no single-digit samples")
    times, units, offsets, dropped = _assemble(path, times_list, units_list, kept, n_channels)
    speaker_list = sorted(set(speaker_names))
    speakers = np.array([speaker_list.index(s) for s in speaker_names], dtype=np.int64)
    return SpikeSet(times, units, offsets, np.array(labels, dtype=np.int64), speakers, list(DAS_CLASSES),
                    n_channels, str(path), ids=kept, dropped=dropped, skipped_multi_digit=skipped,
                    speaker_names=speaker_list)


def das_splits(path: str | Path) -> list[str]:
    """The splits (train, test) an N-TIDIGITS18-layout file holds."""
    path = Path(path)
    with _damaged(path, "N-TIDIGITS18"), _open(path) as h5:
        return [s for s in ("train", "test") if f"{s}_labels" in h5]


def detect_layout(path: str | Path) -> str:
    """'shd' (SHD/SSC) or 'das' (N-TIDIGITS18) for an HDF5 file."""
    path = Path(path)
    with _damaged(path, "SHD/SSC or N-TIDIGITS18"), _open(path) as h5:
        if "spikes" in h5:
            return "shd"
        if any(k.endswith("_labels") for k in h5.keys()):
            return "das"
    raise InputError(f"{path}: neither the SHD/SSC layout (spikes/times, spikes/units, labels) "
                     "nor the N-TIDIGITS18 layout ({split}_labels, {split}_addresses, {split}_timestamps)")
