"""`cli.py data convert`: wav recordings -> spikes through the auditory front end (audio.frontend) -> one HDF5
file in the SHD/SSC layout (700 channels) or the N-TIDIGITS18 layout (64 channels).

`speeds` (e.g. 0.9, 1.0, 1.1) converts each recording once per factor, played that much faster (tempo and pitch
together, the speed perturbation of Ko et al. 2015): same label and speaker, `extra/speed` records the factor and
`extra/recording` which recording a sample is a copy of. Meant for a training file: a test file keeps 1.0 alone.

`test_share` (e.g. 0.1) writes a split: that share of each speaker's recordings of each class
(audio.datasets.test_share_split, seeded: the split a lone training file would get) is the test set, converted at
its own speed only; the SHD layout writes two files (OUT's name with 'train' and 'test': `x.h5` -> `x_train.h5`,
`x_test.h5`), the N-TIDIGITS18 layout one file with both splits.

Labels and speakers come from the file names (regular expressions, first group); every name is checked and
every file read before anything is written; the output is written atomically (nothing is left on any error)
and records the front end's parameters (root attribute `frontend`, JSON), which a model trained on it keeps
and `infer` applies to new recordings. Recordings are converted by `workers` processes, in a fixed order, so
the output is the same whatever the number of workers.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import re
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np

from scipy import signal

from audio.datasets import TEST_SEED, test_share_split
from audio.frontend import LAYOUT_CHANNELS, Frontend, label_and_speaker, read_wav, spikes_of
from audio.spike_files import DAS_CLASSES
from common.atomic import atomic_path, claimed
from common.errors import InputError, quiet_child_signals
from common.progress import progress_bar

DEFAULT_LABEL_REGEX = r"^([^_]+)_"  # <digit>_<speaker>_<take>.wav
DEFAULT_SPEAKER_REGEX = r"^[^_]+_([^_]+)_"
DIGIT_WORDS = {"z": "z", "zero": "z", "0": "z", "o": "o", "oh": "o"}


def wav_files(inputs: list[str], include: str | None = None) -> list[Path]:
    """Every .wav among the inputs (files, or directories searched recursively, hidden files and folders left
    out), sorted; anything else named directly is an error."""
    files = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".wav"
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise InputError(f"{path}: no .wav files in this directory")
            files += found
        elif path.is_file():
            if path.suffix.lower() != ".wav":
                raise InputError(f"{path}: not a .wav file")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    if include:
        try:
            pattern = re.compile(include)
        except re.error as exc:
            raise InputError(f"--include {include!r}: not a regular expression ({exc})") from None
        files = [f for f in files if pattern.search(f.name)]
    if not files:
        raise InputError("no recordings to convert" + (f" (--include {include!r} matched none)" if include else ""))
    return sorted(set(files))


def play_faster(x: np.ndarray, speed: float) -> np.ndarray:
    """The recording played `speed` times faster (shorter and higher by that factor), at the same sample rate."""
    if speed == 1.0:
        return x
    f = Fraction(speed).limit_denominator(100)
    return signal.resample_poly(x, f.denominator, f.numerator)


def _convert_one(job: tuple[Path, Frontend, float]) -> tuple[np.ndarray, np.ndarray]:
    path, fe, speed = job
    x = play_faster(read_wav(path, fe.rate, fe.max_seconds * speed), speed)  # the limit is on what is played
    times, units = spikes_of(x, fe)
    if len(times) == 0:
        raise InputError(f"{path}: produced no spikes (silent?)")
    return times.astype(np.float32), units.astype(np.uint16)


def _class_list(labels: list[str], classes: list[str] | None) -> list[str]:
    if classes:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise InputError(f"labels {', '.join(unknown[:5])} are not in --classes {','.join(classes)}")
        return list(classes)
    if all(l.isdigit() for l in labels):
        return [str(k) for k in range(max(int(l) for l in labels) + 1)]
    return sorted(set(labels))


def split_outputs(out: Path) -> dict[str, Path]:
    """The two files of an SHD-layout split: OUT's name with 'train' and 'test' (x.h5 -> x_train.h5, x_test.h5;
    x_train.h5 -> x_train.h5, x_test.h5)."""
    if re.search(r"(?i)train", out.stem):
        return {s: out.with_name(re.sub(r"(?i)train", s, out.stem) + out.suffix) for s in ("train", "test")}
    return {s: out.with_name(f"{out.stem}_{s}{out.suffix}") for s in ("train", "test")}


def convert(inputs: list[str], out: str | Path, layout: str = "shd", fe: Frontend | None = None,
            label_regex: str = DEFAULT_LABEL_REGEX, speaker_regex: str = DEFAULT_SPEAKER_REGEX,
            include: str | None = None, classes: list[str] | None = None, split: str | None = None, workers: int = 2,
            progress: bool = True, force: bool = False, speeds: list[float] | None = None,
            test_share: float | None = None) -> dict:
    """Converts the recordings; returns a summary (files, samples, spikes, classes, speakers, seconds, outputs).
    Every setting and the outputs are checked before any work; each output is locked until it is written."""
    speeds = list(speeds or [1.0])
    if any(not 0.5 <= v <= 2.0 for v in speeds) or len(set(speeds)) != len(speeds):
        raise InputError(f"--speed {','.join(map(str, speeds))}: distinct factors between 0.5 and 2")
    if layout not in LAYOUT_CHANNELS:
        raise InputError(f"--layout {layout!r}: choose {', '.join(LAYOUT_CHANNELS)}")
    if test_share is not None and not 0 < test_share < 1:
        raise InputError(f"--test-share must be between 0 and 1, got {test_share}")
    if test_share is not None and split is not None:
        raise InputError("--split names the one split of an N-TIDIGITS18 file; --test-share writes both: give one")
    split = split or "train"
    fe = fe or Frontend(channels=LAYOUT_CHANNELS[layout])
    fe.validate()
    if fe.channels != LAYOUT_CHANNELS[layout]:
        raise InputError(f"--channels {fe.channels}: the {layout} layout has {LAYOUT_CHANNELS[layout]}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    for what, pattern in (("label", label_regex), ("speaker", speaker_regex)):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(f"--{what}-regex {pattern!r}: not a regular expression ({exc})") from None
    files = wav_files(inputs, include)
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        raise InputError(f"--out {out}: name an HDF5 file (.h5 or .hdf5)")
    outputs = split_outputs(out) if test_share is not None and layout == "shd" else {"all": out}
    with contextlib.ExitStack() as stack:
        targets = {part: stack.enter_context(claimed(path, files, force)) for part, path in outputs.items()}
        return _convert(files, out, targets, layout, fe, label_regex, speaker_regex, classes, split, workers,
                        progress, speeds, test_share)


def _convert(files: list[Path], out: Path, outputs: dict[str, Path], layout: str, fe: Frontend, label_regex: str,
             speaker_regex: str, classes: list[str] | None, split: str, workers: int, progress: bool,
             speeds: list[float], test_share: float | None) -> dict:
    import time
    names = [label_and_speaker(f, label_regex, speaker_regex) for f in files]  # every name, before any work
    if layout == "ntidigits":
        bad = [n[0] for n in names if DIGIT_WORDS.get(n[0].lower(), n[0]) not in DAS_CLASSES]
        if bad:
            raise InputError(f"the N-TIDIGITS18 layout holds single digits (z, o, 1..9); label {bad[0]!r} is not one")
    is_test = test_share_split([n[0] for n in names], [n[1] for n in names], test_share, TEST_SEED) \
        if test_share is not None else np.zeros(len(files), dtype=bool)
    if test_share is not None and (is_test.all() or not is_test.any()):
        raise InputError(f"--test-share {test_share}: leaves {'no' if not is_test.any() else 'only'} test recordings "
                         "(too few recordings per speaker and class)")
    # one job per (recording, speed); a test recording at its own speed only
    jobs = [(k, v) for k, t in enumerate(is_test) for v in ([1.0] if t else speeds)]
    class_names = _class_list([names[k][0] for k, _ in jobs], classes) if layout == "shd" else list(DAS_CLASSES)
    t0 = time.perf_counter()
    bar = progress_bar(len(jobs), "convert", progress, unit="file")
    results = []
    work = [(files[k], fe, v) for k, v in jobs]
    if workers == 1:
        for job in work:
            results.append(_convert_one(job))
            bar.update(1)
    else:
        with mp.get_context("fork").Pool(workers, initializer=quiet_child_signals) as pool:
            for res in pool.imap(_convert_one, work, chunksize=8):
                results.append(res)
                bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    speaker_names = sorted({n[1] for n in names})
    parts = {"train": [j for j, (k, _) in enumerate(jobs) if not is_test[k]],
             "test": [j for j, (k, _) in enumerate(jobs) if is_test[k]]}
    with contextlib.ExitStack() as stack:
        temps = {s: stack.enter_context(atomic_path(p)) for s, p in outputs.items()}
        for part, tmp in temps.items():
            take = list(range(len(jobs))) if part == "all" else parts[part]
            with h5py.File(tmp, "w") as h5:
                h5.attrs["frontend"] = json.dumps(fe.as_dict())
                if layout == "shd":
                    _write_shd(h5, [results[j] for j in take], [class_names.index(names[jobs[j][0]][0]) for j in take],
                               class_names, [speaker_names.index(names[jobs[j][0]][1]) for j in take], speaker_names)
                    if any(jobs[j][1] != 1.0 for j in take):  # speed copies (a test file has none)
                        h5.create_dataset("extra/speed", data=np.array([jobs[j][1] for j in take], np.float32))
                        h5.create_dataset("extra/recording", data=np.array([jobs[j][0] for j in take], np.int32))
                else:
                    taken = {}  # takes counted over both splits: every id is unique in the file
                    for s, idx in (parts.items() if test_share is not None else [(split, take)]):
                        _write_das(h5, [results[j] for j in idx], [names[jobs[j][0]][0] for j in idx],
                                   [names[jobs[j][0]][1] for j in idx], s, taken)
    n_spikes = [len(r[0]) for r in results]
    return {"out": str(out), "outputs": [str(p) for p in outputs.values()], "layout": layout, "files": len(files),
            "test_files": int(is_test.sum()), "samples": len(jobs), "speeds": speeds, "classes": class_names,
            "speakers": speaker_names, "spikes_mean": float(np.mean(n_spikes)), "spikes_min": int(np.min(n_spikes)),
            "spikes_max": int(np.max(n_spikes)), "seconds": seconds, "files_per_s": len(files) / max(seconds, 1e-9),
            "frontend": fe.as_dict()}


def _vlen(arrays, dtype) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = np.asarray(a, dtype=dtype)
    return out


def _write_shd(h5, results, labels, class_names, speakers, speaker_names) -> None:
    h5.create_dataset("spikes/times", data=_vlen([r[0] for r in results], np.float32),
                      dtype=h5py.vlen_dtype(np.float32))
    h5.create_dataset("spikes/units", data=_vlen([r[1] for r in results], np.uint16), dtype=h5py.vlen_dtype(np.uint16))
    h5.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
    h5.create_dataset("extra/keys", data=np.array([c.encode() for c in class_names]))
    h5.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint16))
    h5.create_dataset("extra/speaker_names", data=np.array([s.encode() for s in speaker_names]))


def _write_das(h5, results, labels, speakers, split: str, taken: dict) -> None:
    """N-TIDIGITS18 ids <speaker>_<take>-<digit><letter>: the take counts each speaker's recordings (in `taken`,
    over both splits of a file), the underscore keeps a speaker name's own digits (spk1, spk2) apart from it."""
    ids = []
    for label, speaker in zip(labels, speakers):
        clean = re.sub(r"[^A-Za-z0-9.-]+", "_", speaker).strip("_") or "speaker"
        taken[clean] = taken.get(clean, -1) + 1
        ids.append(f"{clean}_{taken[clean]:02d}-{DIGIT_WORDS.get(label.lower(), label)}a")
    h5.create_dataset(f"{split}_labels", data=np.array([i.encode() for i in ids]))
    addresses, stamps = h5.create_group(f"{split}_addresses"), h5.create_group(f"{split}_timestamps")
    for sid, (times, units) in zip(ids, results):
        stamps.create_dataset(sid, data=times)
        addresses.create_dataset(sid, data=units.astype(np.uint8))


def format_convert(r: dict) -> str:
    copies = f" x {len(r['speeds'])} speeds = {r['samples']} samples" if len(r["speeds"]) > 1 else ""
    split = f" ({r['test_files']} of them the test split, at their own speed)" if r["test_files"] else ""
    return (f"wrote {' and '.join(r['outputs'])} ({r['layout']} layout): {r['files']} recordings{split}{copies}, "
            f"{len(r['classes'])} classes, "
            f"{len(r['speakers'])} speakers; spikes per recording mean {r['spikes_mean']:.0f}, min {r['spikes_min']}, "
            f"max {r['spikes_max']}; {r['seconds']:.1f} s ({r['files_per_s']:.1f} recordings/s)")
