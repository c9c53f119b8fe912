"""From what the user typed (`--data`) to train, validation and test splits.

`--data` is `builtin`, a directory of SHD/SSC files (`*train*`, `*test*`, and for
SSC `*valid*`), one SHD/SSC training file (its test and valid siblings are found by
name), an N-TIDIGITS18 file, or a directory holding one. Validation is the
dataset's own valid file where it ships one (SSC), else a seeded fraction of the
training split: 10 % for the SHD layout, 20 % for N-TIDIGITS18.

A training file with no test file beside it (a lone SHD/SSC file, whatever its name says unless it says 'test' or
'valid'; an N-TIDIGITS18 file with no test split: what `data convert` writes without --test-share) gets a seeded
test split (test_share_split): 10 % of each speaker's recordings of each class, the same samples for every run
and seed; speed-perturbed copies of a recording (`data convert --speed`) stay on its side, and the test side keeps
the recordings at their own speed only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from audio.binning import BinnedSet, BinSpec, bin_spikes
from audio.builtin_set import ensure_builtin
from audio.speakers import AUTO, HELD_OUT, SEEN_SPEAKERS, speaker_split_index, validation_recordings
from audio.spike_files import (DAS_CHANNELS, SHD_CHANNELS, SpikeSet, concat, das_splits, detect_layout, read_das,
                               read_shd)
from common.errors import InputError

LAYOUTS = {
    "shd": dict(bin_hz=250.0, duration=1.0, n_channels=SHD_CHANNELS, valid_fraction=0.1),
    "das": dict(bin_hz=200.0, duration=1.25, n_channels=DAS_CHANNELS, valid_fraction=0.2),
}
SPLITS = ("train", "valid", "test")
LAYOUT_NAMES = {"shd": "SHD/SSC", "das": "N-TIDIGITS18"}
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


@dataclass
class Source:
    """Where each split of a dataset lives: split -> HDF5 file (and its layout)."""

    name: str  # builtin | shd | ssc | das
    layout: str  # shd | das
    files: dict[str, Path]


def _split_of(path: Path) -> str | None:
    """'fsdd_train.h5' -> 'train'; the split is a word of the file name."""
    words = set(re.split(r"[^a-z]+", path.stem.lower()))
    for split, names in (("valid", {"valid", "val", "validation"}), ("train", {"train"}), ("test", {"test"})):
        if words & names:
            return split
    return None


def _shd_source(files: list[Path], name_hint: str, where: Path) -> Source:
    by_split: dict[str, Path] = {}
    for f in files:
        split = _split_of(f)
        if split is None:
            continue
        if split in by_split:
            raise InputError(f"{where}: two {split} files ({by_split[split].name}, {f.name})")
        by_split[split] = f
    if "train" not in by_split:
        data = [f for f in files if _split_of(f) is None]
        if len(data) != 1:
            raise InputError(f"{where}: no train file found (expected a name containing 'train')")
        by_split["train"] = data[0]  # a folder holding one data file: that file, with a seeded test split
    by_split = {k: by_split[k] for k in SPLITS if k in by_split}
    name = "ssc" if "valid" in by_split or "ssc" in name_hint.lower() else "shd"
    return Source(name, "shd", by_split)


def _is_data_file(path: Path) -> bool:
    """An HDF5 file a dataset directory may hold; hidden files (a killed writer's temp file, a lock) are not."""
    return path.suffix.lower() in HDF5_SUFFIXES and not path.name.startswith(".")


def _layout_in_directory(path: Path) -> str | None:
    """A file's layout; None for an HDF5 file that is no dataset and whose name names no split (an exported
    network or a report kept beside the data is not the data's business)."""
    try:
        return detect_layout(path)
    except InputError:
        if _split_of(path) is None:
            return None
        raise


def find_source(spec: str) -> Source:
    """Resolves `--data` to the files of each split.

    A single SHD/SSC file whose name does not say 'train' is a source of its own: its one split is
    'file' (all its samples), which evaluation and the speaker-held-out protocol take as they are."""
    if spec == "builtin":
        directory = ensure_builtin()
        src = _shd_source(sorted(directory.glob("*.h5")), "builtin", directory)
        src.name = "builtin"
        return src
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (expected 'builtin', a dataset directory or an HDF5 file)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_data_file(p))
        if not files:
            raise InputError(f"{path}: no HDF5 files (.h5, .hdf5) in this directory")
        das = [f for f in files if _layout_in_directory(f) == "das"]
        if das:
            if len(das) > 1:
                raise InputError(f"{path}: several N-TIDIGITS18 files ({', '.join(f.name for f in das)}); pass one")
            return _das_source(das[0])
        return _shd_source(files, path.name, path)
    layout = detect_layout(path)
    if layout == "das":
        return _das_source(path)
    if _split_of(path) != "train":
        return Source("ssc" if "ssc" in path.name.lower() else "shd", "shd", {"file": path})
    stems = {path.stem.lower().replace("train", w) for w in ("train", "test", "valid", "val")}
    siblings = [p for p in path.parent.iterdir() if _is_data_file(p) and p.stem.lower() in stems]
    return _shd_source(siblings, path.name, path)


def _das_source(path: Path) -> Source:
    """An N-TIDIGITS18 file: its train and test splits (no test split: a seeded one, load_dataset)."""
    return Source("das", "das", {s: path for s in das_splits(path)} or {"train": path})


def read_split(source: Source, split: str, n_channels: int | None = None) -> SpikeSet:
    channels = LAYOUTS[source.layout]["n_channels"] if n_channels is None else n_channels
    if channels < 1:
        raise InputError(f"n_channels must be positive, got {channels}")
    if source.layout == "das":
        if split == "file":  # an N-TIDIGITS18 file: all its splits
            parts = [read_das(source.files["train"], s, channels) for s in das_splits(source.files["train"])]
            return parts[0] if len(parts) == 1 else concat(parts, str(source.files["train"]))
        return read_das(source.files[split], split, channels)
    return read_shd(source.files[split], channels)


def read_pool(source: Source, n_channels: int) -> SpikeSet:
    """Every sample of a dataset, all its files and splits in one SpikeSet (speakers matched by name)."""
    if source.layout == "das":
        return read_split(source, "file", n_channels)
    parts = [read_split(source, split, n_channels) for split in source.files]
    return parts[0] if len(parts) == 1 else concat(parts, ", ".join(p.source for p in parts))


@dataclass
class Dataset:
    """A dataset's three splits, binned, plus the recipe defaults that depend on it."""

    name: str
    source: Source
    train: BinnedSet
    valid: BinnedSet
    test: BinnedSet
    spec: BinSpec
    protocol: dict = field(default_factory=lambda: dict(SEEN_SPEAKERS))  # speakers.protocol_of's dict

    @property
    def frontend(self) -> dict | None:
        """The audio front end that made the training file's spikes (`data convert`) as it recorded it, None if
        made elsewhere."""
        from audio.frontend import recorded_frontend
        return recorded_frontend(next(iter(self.source.files.values()))) if self.name != "builtin" else None

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def default_batch(self) -> int:
        return 512 if self.name == "ssc" else 128

    @property
    def default_jitter(self) -> float:
        """The study jitters SHD and SSC training inputs (sigma 2 channels), not N-TIDIGITS18."""
        return 0.0 if self.source.layout == "das" else 2.0


TEST_SHARE = 0.1  # the seeded test split of a training file that comes without one
TEST_SEED = 0  # ... drawn with a seed of its own: the same test samples for every run and seed


def test_share_split(labels, speakers, share: float, seed: int = TEST_SEED) -> np.ndarray:
    """Which recordings are test recordings (a bool mask): round(share x n) of the n recordings of each speaker and
    class, drawn by a seeded generator (group by group, in sorted order, so the same inputs give the same mask).
    labels, speakers: one entry per recording (speakers None: classes alone); `data convert --test-share` and the
    seeded test split of a lone training file both use it."""
    labels = np.asarray(labels)
    keys = list(zip(np.asarray(speakers).tolist(), labels.tolist())) if speakers is not None else labels.tolist()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for key in sorted(set(keys), key=str):
        members = np.flatnonzero([k == key for k in keys])
        test[rng.permutation(members)[:int(np.floor(share * len(members) + 0.5))]] = True  # halves round up
    return test


def _recordings(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(recording of each sample, whether it is the recording at its own speed) of an SHD-layout file: speed copies
    (`data convert --speed`: extra/speed, and extra/recording) are one recording."""
    with h5py.File(path, "r") as h5:
        speed = np.asarray(h5["extra/speed"][()], dtype=float) if "extra/speed" in h5 else np.ones(n)
        recording = np.asarray(h5["extra/recording"][()]).astype(np.int64) if "extra/recording" in h5 else None
    if recording is None:  # converted before extra/recording: each recording's copies are consecutive
        k = len(np.unique(speed))
        if n % k or not (speed.reshape(-1, k) == speed[:k]).all():
            raise InputError(f"{path}: speed copies (extra/speed) in no order this toolchain wrote; give a test file")
        recording = np.arange(n) // k
    return recording, speed == 1.0


def seeded_test_split(samples: SpikeSet, path: Path, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) sample indices of a training file that comes without a test file (test_share_split): every
    copy of a test recording leaves training; the test keeps the recordings at their own speed."""
    recording, original = _recordings(path, len(samples)) if layout == "shd" else \
        (np.arange(len(samples)), np.ones(len(samples), dtype=bool))
    first = np.unique(recording, return_index=True)[1]
    mask = test_share_split(samples.labels[first], None if samples.speakers is None else samples.speakers[first],
                            TEST_SHARE)
    is_test = np.isin(recording, np.unique(recording)[mask])
    test = np.flatnonzero(is_test & original)
    if test.size == 0:
        raise InputError(f"{path}: too few recordings per speaker and class for a {100 * TEST_SHARE:.0f} % test split; "
                         "give a test file (data convert --test-share)")
    return np.flatnonzero(~is_test), test


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded random `fraction` of 0..n-1 held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(n * fraction)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def recording_validation_split(spikes: SpikeSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """validation_split for a file with speed copies: the validation share is drawn among the recordings at their
    own speed, and every copy of a validation recording leaves training."""
    va, leaves = validation_recordings(spikes, np.flatnonzero(spikes.is_original), fraction, seed)
    return np.flatnonzero(~leaves), va


def bin_spec(source: Source, bin_hz: float | None = None, duration: float | None = None,
             n_channels: int | None = None) -> BinSpec:
    """The binning of a source: the options given, else its layout's (SHD 250 Hz/1 s/700, DAS 200 Hz/1.25 s/64)."""
    d = LAYOUTS[source.layout]
    bins = BinSpec(float(d["bin_hz"] if bin_hz is None else bin_hz),  # `is None`: a 0 must reach the check below
                   float(d["duration"] if duration is None else duration),
                   int(d["n_channels"] if n_channels is None else n_channels))
    for name, value in (("bin_hz", bins.bin_hz), ("duration", bins.duration), ("n_channels", bins.n_channels)):
        if not value > 0:
            raise InputError(f"{name} must be positive, got {value}")
    if bins.n_steps < 1:
        raise InputError(f"duration {bins.duration} s at {bins.bin_hz} Hz gives no time step")
    return bins


def load_dataset(spec: str, *, bin_hz: float | None = None, duration: float | None = None,
                 n_channels: int | None = None, seed: int = 0, holdout_speaker: str | None = None,
                 valid_speaker: str = AUTO) -> Dataset:
    """Reads, splits and bins a dataset; options default to the layout's (SHD 250 Hz/1 s/700, DAS 200 Hz/1.25 s/64).

    holdout_speaker: the speaker-held-out protocol (audio.speakers): every sample of that speaker (all
    files) is the test split, `valid_speaker` picks the validation samples among the other speakers."""
    source = find_source(spec)
    d = LAYOUTS[source.layout]
    bins = bin_spec(source, bin_hz, duration, n_channels)
    if holdout_speaker is not None:
        pool = read_pool(source, bins.n_channels)
        tr, va, te, protocol = speaker_split_index(pool, holdout_speaker, valid_speaker, d["valid_fraction"], seed)
        binned = bin_spikes(pool, bins)
        del pool  # splitting the binned events, not the events, keeps one copy of the data in memory
        return Dataset(source.name, source, binned.subset(tr), binned.subset(va), binned.subset(te), bins, protocol)
    if "file" in source.files and _split_of(source.files["file"]) is not None:
        f = source.files["file"]
        raise InputError(f"{f}: a {_split_of(f)} file alone: train on its training file (the {_split_of(f)} file is "
                         "found beside it), or pass --holdout-speaker")
    if "test" in source.files:
        train = read_split(source, "train", bins.n_channels)
        test = read_split(source, "test", bins.n_channels)
    else:  # a training file without a test file: its seeded test split
        path = source.files.get("train") or source.files["file"]
        whole = read_split(Source(source.name, source.layout, {"train": path}), "train", bins.n_channels)
        tr, te = seeded_test_split(whole, path, source.layout)
        train, test = whole.subset(tr), whole.subset(te)
    if "valid" in source.files:
        valid = read_split(source, "valid", bins.n_channels)
        train = bin_spikes(train, bins)
    else:
        tr, va = (validation_split(len(train), d["valid_fraction"], seed) if train.speeds is None else
                  recording_validation_split(train, d["valid_fraction"], seed))
        train = bin_spikes(train, bins)
        train, valid = train.subset(tr), train.subset(va)
    for split, s in (("valid", valid), ("test", test)):
        if s.class_names != train.class_names:
            raise InputError(f"{s.source}: {split} classes {s.class_names[:5]}... differ from the train file's")
    binned = lambda s: s if isinstance(s, BinnedSet) else bin_spikes(s, bins)
    return Dataset(source.name, source, train, binned(valid), binned(test), bins)


def limit_index(labels, limit: int | None) -> np.ndarray:
    """The samples a --limit N run takes, in eval, simulate, compare and report alike: all of them, or N spread
    evenly over the classes (one of each class in turn, as long as a class has samples left; each class's share
    spread evenly over its samples, each class starting a little further in, so that a split ordered by class and
    speaker is sampled across its speakers too), in sample order."""
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    share = np.zeros(len(members), dtype=np.int64)
    while share.sum() < limit:
        for k, m in enumerate(members):
            if share.sum() < limit and share[k] < len(m):
                share[k] += 1
    c = len(members)
    picks = [m[((np.arange(n) * c + k) * len(m)) // (n * c)] for k, (m, n) in enumerate(zip(members, share)) if n]
    return np.sort(np.concatenate(picks))


@dataclass
class EvalSet:
    """The samples an evaluation runs on, binned, and what they are."""

    name: str  # the dataset's name (builtin, shd, ssc, das)
    split: str  # train, valid, test, or 'file' (every sample of one file)
    what: str  # for people: "test split", "all 500 samples of x.h5", "held-out speaker 'theo' (500 samples)"
    samples: BinnedSet
    protocol: dict

    @property
    def n_classes(self) -> int:
        return self.samples.n_classes


def load_eval_set(spec: str, split: str | None = None, *, bin_hz: float | None = None, duration: float | None = None,
                  n_channels: int | None = None, seed: int = 0, holdout_speaker: str | None = None,
                  valid_speaker: str = AUTO, layout: str | None = None) -> EvalSet:
    """What `eval`, `simulate` and `compare` run on: with `split` None and `spec` one file, every sample of that file
    (any name, either layout); otherwise the split (default test) of the dataset, held-out speaker included.

    layout: the layout the model was trained on ('shd' or 'das'); a file of the other layout is an error."""
    if split is not None and split not in SPLITS:
        raise InputError(f"--split {split}: choose {', '.join(SPLITS)}")
    source = find_source(spec)
    if layout is not None and source.layout != layout:
        raise InputError(f"{spec}: {LAYOUT_NAMES[source.layout]} layout ({LAYOUTS[source.layout]['n_channels']} "
                         f"channels); the model takes {n_channels or LAYOUTS[layout]['n_channels']} channels (it was "
                         f"trained on the {LAYOUT_NAMES[layout]} layout)")
    if split is None and (spec != "builtin" and Path(spec).expanduser().is_file() or "file" in source.files):
        bins = bin_spec(source, bin_hz, duration, n_channels)
        path = Path(spec).expanduser()
        if source.layout == "das" or "file" in source.files:
            samples = read_split(source, "file", bins.n_channels)
        else:  # a train file named directly: that file alone, not its siblings
            samples = read_shd(path, bins.n_channels)
        binned = bin_spikes(samples, bins)
        return _some(EvalSet(source.name, "file", f"all {len(binned)} samples of {path.name}", binned,
                             dict(SEEN_SPEAKERS)), spec)
    ds = load_dataset(spec, bin_hz=bin_hz, duration=duration, n_channels=n_channels, seed=seed,
                      holdout_speaker=holdout_speaker, valid_speaker=valid_speaker)
    split = split or "test"
    samples = getattr(ds, split)
    what = f"{split} split"
    if ds.protocol["kind"] == HELD_OUT and split == "test":
        what = f"held-out speaker '{ds.protocol['test_speaker']}'"
    elif ds.protocol["kind"] == HELD_OUT:
        what += f" (speaker '{ds.protocol['test_speaker']}' held out)"
    return _some(EvalSet(ds.name, split, f"{what} ({len(samples)} samples)", samples, ds.protocol), spec)


def _some(ev: EvalSet, spec: str) -> EvalSet:
    if len(ev.samples) == 0:
        raise InputError(f"{spec}: no samples to evaluate ({ev.what})")
    return ev


def origin_of(data_spec: str | None, seed: int = 0, holdout_speaker: str | None = None, valid_speaker: str = AUTO,
              spec: dict | None = None, layout: str | None = None) -> dict:
    """Where a model's samples came from and how they were binned and split: what evaluation needs to read the
    same test set again (checkpoints and exported networks carry it)."""
    spec = spec or {}
    return {"data": data_spec, "seed": seed, "holdout_speaker": holdout_speaker, "valid_speaker": valid_speaker,
            "bin_hz": spec.get("bin_hz"), "duration": spec.get("duration"), "n_channels": spec.get("n_channels"),
            "layout": layout}


def eval_set_for(origin: dict, data: str | None = None, split: str | None = None,
                 n_channels: int | None = None) -> EvalSet:
    """The samples to evaluate a model on: `data` (a file: all its samples unless `split`; a dataset: its `split`,
    default test) or, without `data`, the model's own test set (its held-out speaker, if it had one)."""
    bins = dict(bin_hz=origin.get("bin_hz"), duration=origin.get("duration"),
                n_channels=n_channels if n_channels is not None else origin.get("n_channels"))
    if data is None:
        if not origin.get("data"):
            raise InputError("the model does not record its dataset; pass --data")
        return load_eval_set(origin["data"], split or "test", seed=origin.get("seed") or 0,
                             holdout_speaker=origin.get("holdout_speaker"),
                             valid_speaker=origin.get("valid_speaker") or AUTO, **bins)
    return load_eval_set(data, split, seed=origin.get("seed") or 0, layout=origin.get("layout"), **bins)
