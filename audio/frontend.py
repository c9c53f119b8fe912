"""From a recording to spikes: an auditory front end (`cli.py data convert`, `cli.py infer`).

The chain, per recording (all deterministic, parameters in `Frontend`):
1. read the wav (scipy.io.wavfile: PCM or float), mix stereo to mono, resample to `rate` Hz
   (scipy.signal.resample_poly), scale to unit RMS (`normalize`: the loudness of a voice or a
   microphone is not what the digit is);
2. a gammatone filterbank (scipy.signal.gammatone's 4th-order FIR form, bandwidth 1.019 ERB) with
   `channels` centre frequencies equally spaced in Glasberg & Moore's ERB number from `fmin` to `fmax`,
   applied in one batched FFT convolution;
3. half-wave rectification and an envelope: the mean over each `resolution` step, then a one-pole
   low-pass at `envelope_hz`;
4. log compression above a silence floor f = `floor` x the recording's loudest channel envelope:
   c = log(1 + max(env / f - 1, 0)) / log(1 / floor), 0 at the floor and 1 at the loudest;
5. an integrate-and-fire rate coder per channel: rate = `max_rate` x c, a spike each time the
   integral of the rate passes an integer (at most one per `resolution` step).

700 channels give the SHD layout (SHD/SSC's own 700-channel cochlea), 64 the N-TIDIGITS18 layout.
A model records the front end of its training data (the file's root attribute `frontend`), and `infer` runs
a recording through exactly that one. Version 2 scales each channel to unit gain at its centre frequency;
version 1 divided it by its envelope's spectrum there instead, a gain rising as (fc / bandwidth)^4 (from 14
at 80 Hz to 2400 at 3.8 kHz): its spikes differ, so a model trained on them is refused by `infer`.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import fft as sp_fft
from scipy import signal
from scipy.io import wavfile

from common.errors import InputError, settings_from_dict

LAYOUT_CHANNELS = {"shd": 700, "ntidigits": 64}
VERSION = 2


@dataclass(frozen=True)
class Frontend:
    channels: int = 700
    rate: int = 8000  # Hz, every recording is resampled to this
    fmin: float = 80.0  # Hz, lowest centre frequency
    fmax: float = 3800.0  # Hz, highest centre frequency (below rate / 2)
    envelope_hz: float = 60.0
    resolution: float = 0.0005  # s, spike-time resolution
    floor: float = 0.1  # silence floor, a share of the loudest channel envelope (20 dB below it)
    max_rate: float = 400.0  # spikes per second at full scale
    normalize: bool = True  # scale each recording to unit RMS first
    max_seconds: float = 10.0  # longer recordings are refused (a keyword spotter's window is ~1 s)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "normalize" and not value > 0:
                raise InputError(f"--{f.name.replace('_', '-')} must be positive, got {value}")
        if self.channels != int(self.channels):
            raise InputError(f"--channels must be a whole number, got {self.channels}")
        if not self.fmin < self.fmax < self.rate / 2:
            raise InputError(f"--fmin {self.fmin} and --fmax {self.fmax} must satisfy fmin < fmax < rate / 2 = "
                             f"{self.rate / 2}")
        if not self.floor < 1:
            raise InputError(f"--floor {self.floor}: the silence floor is a share of the loudest envelope, below 1")
        if self.resolution * self.max_rate > 1:
            raise InputError(f"--max-rate {self.max_rate} allows more than one spike per --resolution {self.resolution} s")

    def as_dict(self) -> dict:
        return {"name": "gammatone-if", "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Frontend":
        """The front end a file or a model recorded; one of another version is an InputError."""
        if not isinstance(d, dict):
            raise InputError("the recorded front end is not a JSON object")
        if d.get("version") != VERSION:
            raise InputError(f"recorded front end version {d.get('version')}, this toolchain runs version {VERSION} "
                             "(other channel gains, other spikes): convert the recordings again and retrain")
        d = {k: v for k, v in d.items() if k not in ("name", "version")}
        return settings_from_dict(cls, d, "unknown front-end parameters")


def _erb_space(fmin: float, fmax: float, n: int) -> np.ndarray:
    """Centre frequencies equally spaced on Glasberg & Moore's ERB-number scale."""
    to_erb = lambda f: 21.4 * np.log10(1 + 0.00437 * f)
    from_erb = lambda e: (10 ** (e / 21.4) - 1) / 0.00437
    return from_erb(np.linspace(to_erb(fmin), to_erb(fmax), n))


@lru_cache(maxsize=8)
def _filterbank_spectrum(fe: Frontend, nfft: int) -> np.ndarray:
    """rfft of the impulse responses, [channels, nfft // 2 + 1] complex64 (computed once per length)."""
    return sp_fft.rfft(_filterbank(fe), nfft, axis=1).astype(np.complex64)


@lru_cache(maxsize=8)
def _filterbank(fe: Frontend) -> np.ndarray:
    """Gammatone impulse responses [channels, taps] at fe.rate (scipy.signal.gammatone's FIR form), each scaled
    to unit gain at its centre frequency."""
    taps = int(round(0.032 * fe.rate))  # 32 ms: the 80 Hz channel has decayed
    irs = []
    for fc in _erb_space(fe.fmin, fe.fmax, fe.channels):
        b, _ = signal.gammatone(fc, "fir", order=4, numtaps=taps, fs=fe.rate)
        _, gain = signal.freqz(b, worN=[fc], fs=fe.rate)
        irs.append(b / np.abs(gain[0]))
    return np.array(irs)


def read_wav(path: str | Path, rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Mono float64 samples at `rate` Hz, at most 1 in magnitude (a float file beyond full scale is scaled down:
    the spikes do not depend on a recording's gain); a corrupt, truncated, empty or non-wav file, or one longer
    than `max_seconds`, is an InputError naming it."""
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", wavfile.WavFileWarning)
        try:
            fs, x = wavfile.read(path)
        except Exception as exc:  # scipy's parser raises many types for a damaged file (UnboundLocalError among them)
            raise InputError(f"{path}: not a readable wav file ({exc.__class__.__name__}: {exc})") from None
    if any("EOF" in str(w.message) for w in caught):
        raise InputError(f"{path}: truncated (the file ends before the length its header gives)")
    if x.size == 0 or x.shape[0] == 0:
        raise InputError(f"{path}: the recording is empty")
    if max_seconds is not None and x.shape[0] > max_seconds * fs:
        raise InputError(f"{path}: {x.shape[0] / fs:.1f} s long; recordings longer than {max_seconds:g} s are "
                         "refused (cut it into utterances)")
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max - info.min + 1) * 2
    else:
        x = x.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if not np.isfinite(x).all():
        raise InputError(f"{path}: the recording holds NaN or inf samples")
    peak = float(np.abs(x).max())
    if peak > 1:
        x /= peak
    if fs != rate:
        g = np.gcd(int(fs), int(rate))
        x = signal.resample_poly(x, rate // g, fs // g)
    return x


def spikes_of(x: np.ndarray, fe: Frontend) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, channel ids) of a mono recording at fe.rate, sorted by time."""
    if fe.normalize:
        rms = float(np.sqrt(np.mean(x ** 2)))
        x = x / rms if rms > 0 else x
    n = len(x) + _filterbank(fe).shape[1] - 1
    nfft = sp_fft.next_fast_len(n, real=True)
    spectrum = _filterbank_spectrum(fe, nfft) * sp_fft.rfft(x.astype(np.float32), nfft)[None, :]
    y = sp_fft.irfft(spectrum, nfft, axis=1)[:, :len(x)]
    np.maximum(y, 0, out=y)  # half-wave rectification
    step = max(1, int(round(fe.resolution * fe.rate)))
    blocks = len(x) // step
    y = y[:, :blocks * step].reshape(fe.channels, blocks, step).mean(axis=2)  # one value per resolution step
    pole = np.exp(-2 * np.pi * fe.envelope_hz * step / fe.rate)
    env = signal.lfilter([1 - pole], [1, -pole], y, axis=1)
    top = float(env.max()) if env.size else 0.0
    if top <= 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    above = np.maximum(env / (fe.floor * top) - 1, 0)  # 0 at and below the silence floor
    c = np.minimum(np.log1p(above) / np.log1p(1 / fe.floor - 1), 1)
    dt = step / fe.rate
    count = np.floor(np.cumsum(c * fe.max_rate * dt, axis=1))
    fired = np.diff(count, axis=1, prepend=0) > 0
    ch, k = np.nonzero(fired)
    order = np.argsort(k, kind="stable")
    return (k[order] + 1) * dt, ch[order]


def label_and_speaker(path: Path, label_regex: str, speaker_regex: str) -> tuple[str, str]:
    """The label and speaker a file's name carries (the first group of each pattern)."""
    name = path.name
    out = []
    for what, pattern in (("label", label_regex), ("speaker", speaker_regex)):
        m = re.search(pattern, name)
        if not m:
            raise InputError(f"{path}: the name does not match the {what} pattern --{what}-regex {pattern!r}")
        out.append(m.group(1) if m.groups() else m.group(0))
    return out[0], out[1]


def recorded_frontend(path: str | Path) -> dict | None:
    """The front end recorded in a converted file (root attribute `frontend`, JSON) as it was written; None for
    spikes made elsewhere."""
    import h5py
    with h5py.File(path, "r") as h5:
        raw = h5.attrs.get("frontend")
    if raw is None:
        return None
    try:
        d = json.loads(raw)
    except (TypeError, ValueError):
        d = None
    if not isinstance(d, dict):
        raise InputError(f"{path}: its root attribute 'frontend' is not a recorded front end (JSON object)")
    return d
