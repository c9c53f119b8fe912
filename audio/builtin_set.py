"""The built-in dataset: spoken-word-like spike patterns in the SHD layout.

Each class is a few "formant" tracks (a band of channels sliding over time, as a
cochlea model shows a vowel glide); each speaker shifts the tracks in channel,
stretches them in time and scales their rate, and every sample adds its own onset
jitter and background noise. Deterministic from the seed, generated in about a
second, well under 1 MB, so the demo and the tests need no download.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

CLASS_NAMES = ["rise", "fall", "arch", "dip", "split", "merge"]
VERSION = 1
N_CHANNELS = 700


def _prototypes(rng: np.random.Generator, n_classes: int) -> list[np.ndarray]:
    """Per class, 3 tracks of (start channel, end channel, onset s, offset s)."""
    protos = []
    for _ in range(n_classes):
        start = rng.uniform(60, N_CHANNELS - 60, size=3)
        end = np.clip(start + rng.uniform(-250, 250, size=3), 40, N_CHANNELS - 40)
        onset = rng.uniform(0.05, 0.35, size=3)
        offset = onset + rng.uniform(0.2, 0.45, size=3)
        protos.append(np.stack([start, end, onset, offset], axis=1))
    return protos


def _sample(rng: np.random.Generator, tracks: np.ndarray, shift: float, tempo: float, rate: float):
    times, units = [], []
    for c0, c1, t0, t1 in tracks:
        n = rng.poisson(rate * (t1 - t0))
        frac = rng.uniform(0, 1, size=n)
        t = (t0 + frac * (t1 - t0)) * tempo + rng.normal(0, 0.01)
        ch = c0 + frac * (c1 - c0) + shift + rng.normal(0, 6, size=n)
        times.append(t)
        units.append(ch)
    n_noise = rng.poisson(20)
    times.append(rng.uniform(0, 1, size=n_noise))
    units.append(rng.uniform(0, N_CHANNELS, size=n_noise))
    t, u = np.concatenate(times), np.rint(np.concatenate(units)).astype(np.int64)
    keep = (t >= 0) & (t < 1.0) & (u >= 0) & (u < N_CHANNELS)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order].astype(np.float16), u[keep][order].astype(np.uint16)


def generate(seed: int = 0, n_classes: int = 6, train_per_class: int = 40, test_per_class: int = 10,
             n_speakers: int = 4) -> dict[str, dict]:
    """Both splits as plain arrays: {'train': {...}, 'test': {...}}; test speakers differ from train ones."""
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, n_classes)
    speakers = [(rng.uniform(-30, 30), rng.uniform(0.85, 1.15), rng.uniform(180, 300)) for _ in range(n_speakers + 1)]
    splits = {}
    for split, per_class, spk_ids in (("train", train_per_class, range(n_speakers)), ("test", test_per_class, [n_speakers])):
        times, units, labels, spk = [], [], [], []
        for c in range(n_classes):
            for k in range(per_class):
                s = list(spk_ids)[k % len(spk_ids)]
                shift, tempo, rate = speakers[s]
                t, u = _sample(rng, protos[c], shift, tempo, rate)
                times.append(t), units.append(u), labels.append(c), spk.append(s)
        splits[split] = dict(times=times, units=units, labels=np.array(labels, np.uint16), speakers=np.array(spk, np.uint16))
    return splits


def write_shd(path: Path, times, units, labels, speakers, class_names, speaker_names) -> None:
    """Writes one split in the SHD layout."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("spikes/times", data=np.array(times, dtype=object), dtype=h5py.vlen_dtype(np.float16))
        h5.create_dataset("spikes/units", data=np.array(units, dtype=object), dtype=h5py.vlen_dtype(np.uint16))
        h5.create_dataset("labels", data=labels)
        h5.create_dataset("extra/keys", data=np.array([n.encode() for n in class_names]))
        h5.create_dataset("extra/speaker", data=speakers)
        h5.create_dataset("extra/speaker_names", data=np.array([n.encode() for n in speaker_names]))


def cache_dir() -> Path:
    return Path(os.environ.get("SPIKAUDIO_CACHE", Path.home() / ".cache" / "spikaudio"))


def ensure_builtin(seed: int = 0, root: Path | None = None) -> Path:
    """The built-in dataset's directory (builtin_train.h5, builtin_test.h5), generated once per seed."""
    target = (root or cache_dir()) / f"builtin-v{VERSION}-seed{seed}"
    if (target / "builtin_train.h5").exists() and (target / "builtin_test.h5").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".builtin-", dir=target.parent))
    try:
        splits = generate(seed)
        speaker_names = [f"speaker{i}" for i in range(5)]
        for split, arrays in splits.items():
            write_shd(tmp / f"builtin_{split}.h5", arrays["times"], arrays["units"], arrays["labels"],
                      arrays["speakers"], CLASS_NAMES, speaker_names)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
