"""From what the user typed (`--data`) to train, validation and test splits.

`--data` is `builtin`, a directory of SHD/SSC files (`*train*`, `*test*`, and for
SSC `*valid*`), one SHD/SSC training file (its test and valid siblings are found by
name), an N-TIDIGITS18 file, or a directory holding one. Validation is the
dataset's own valid file where it ships one (SSC), else a seeded fraction of the
training split: 10 % for the SHD layout, 20 % for N-TIDIGITS18.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.binning import BinnedSet, BinSpec, bin_spikes
from train.data import DAS_CHANNELS, SHD_CHANNELS, SpikeSet, detect_layout, read_das, read_shd
from train.errors import InputError
from train.synthetic import ensure_builtin

LAYOUTS = {
    "shd": dict(bin_hz=250.0, duration=1.0, n_channels=SHD_CHANNELS, valid_fraction=0.1),
    "das": dict(bin_hz=200.0, duration=1.25, n_channels=DAS_CHANNELS, valid_fraction=0.2),
}
SPLITS = ("train", "valid", "test")
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
    for need in ("train", "test"):
        if need not in by_split:
            raise InputError(f"{where}: no {need} file found (expected a name containing '{need}')")
    by_split = {k: by_split[k] for k in SPLITS if k in by_split}
    name = "ssc" if "valid" in by_split or "ssc" in name_hint.lower() else "shd"
    return Source(name, "shd", by_split)


def find_source(spec: str) -> Source:
    """Resolves `--data` to the files of each split."""
    if spec == "builtin":
        directory = ensure_builtin()
        src = _shd_source(sorted(directory.glob("*.h5")), "builtin", directory)
        src.name = "builtin"
        return src
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (expected 'builtin', a dataset directory or an HDF5 file)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in HDF5_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no HDF5 files (.h5, .hdf5) in this directory")
        das = [f for f in files if detect_layout(f) == "das"]
        if das:
            if len(das) > 1:
                raise InputError(f"{path}: several N-TIDIGITS18 files ({', '.join(f.name for f in das)}); pass one")
            return Source("das", "das", {"train": das[0], "test": das[0]})
        return _shd_source(files, path.name, path)
    layout = detect_layout(path)
    if layout == "das":
        return Source("das", "das", {"train": path, "test": path})
    if _split_of(path) != "train":
        raise InputError(f"{path}: an SHD/SSC file for training must be the train file (its name contains 'train')")
    stems = {path.stem.lower().replace("train", w) for w in ("train", "test", "valid", "val")}
    siblings = [p for p in path.parent.iterdir() if p.suffix.lower() in HDF5_SUFFIXES and p.stem.lower() in stems]
    return _shd_source(siblings, path.name, path)


def read_split(source: Source, split: str, n_channels: int | None = None) -> SpikeSet:
    channels = LAYOUTS[source.layout]["n_channels"] if n_channels is None else n_channels
    if channels < 1:
        raise InputError(f"n_channels must be positive, got {channels}")
    if source.layout == "das":
        return read_das(source.files[split], split, channels)
    return read_shd(source.files[split], channels)


@dataclass
class Dataset:
    """A dataset's three splits, binned, plus the recipe defaults that depend on it."""

    name: str
    source: Source
    train: BinnedSet
    valid: BinnedSet
    test: BinnedSet
    spec: BinSpec

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


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded random `fraction` of 0..n-1 held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(n * fraction)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def load_dataset(spec: str, *, bin_hz: float | None = None, duration: float | None = None,
                 n_channels: int | None = None, seed: int = 0) -> Dataset:
    """Reads, splits and bins a dataset; options default to the layout's (SHD 250 Hz/1 s/700, DAS 200 Hz/1.25 s/64)."""
    source = find_source(spec)
    d = LAYOUTS[source.layout]
    bins = BinSpec(float(d["bin_hz"] if bin_hz is None else bin_hz),  # `is None`: a 0 must reach the check below
                   float(d["duration"] if duration is None else duration),
                   int(d["n_channels"] if n_channels is None else n_channels))
    for name, value in (("bin_hz", bins.bin_hz), ("duration", bins.duration), ("n_channels", bins.n_channels)):
        if not value > 0:
            raise InputError(f"{name} must be positive, got {value}")
    if bins.n_steps < 1:
        raise InputError(f"duration {bins.duration} s at {bins.bin_hz} Hz gives no time step")
    train = read_split(source, "train", bins.n_channels)
    test = read_split(source, "test", bins.n_channels)
    if "valid" in source.files:
        valid = read_split(source, "valid", bins.n_channels)
    else:
        tr, va = validation_split(len(train), d["valid_fraction"], seed)
        train, valid = train.subset(tr), train.subset(va)
    for split, s in (("valid", valid), ("test", test)):
        if s.class_names != train.class_names:
            raise InputError(f"{s.source}: {split} classes {s.class_names[:5]}... differ from the train file's")
    return Dataset(source.name, source, bin_spikes(train, bins), bin_spikes(valid, bins), bin_spikes(test, bins), bins)
