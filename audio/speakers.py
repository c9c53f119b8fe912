"""The speaker-held-out protocol: every sample of one speaker is the test set, never seen in training.

A dataset's own speaker ids say who spoke (`extra/speaker` with `extra/speaker_names` in the SHD
layout, the speaker prefix of N-TIDIGITS18 ids); all files of the dataset (train and test) are pooled
first, so the held-out speaker contributes every recording it has. The best epoch is chosen on a
validation set that never holds the test speaker either:

* ``auto`` (default): every sample of another speaker, the one after the test speaker in name order,
  so the epoch (and any recipe) is chosen on a voice the model never heard, as the test speaker is;
* ``random``: a seeded fraction (10 % SHD layout, 20 % N-TIDIGITS18) of the other speakers' samples;
* a speaker name or id.

A speaker is named by its name (case-insensitive) or by its id in the file (`extra/speaker` value;
for N-TIDIGITS18 the index of the name in sorted order). Several speakers, comma-separated, are held out
together (the nested protocol's inner folds: train on the rest, score each held-out speaker apart).
"""
from __future__ import annotations

import numpy as np

from audio.spike_files import SpikeSet
from common.errors import InputError

SEEN = "seen-speakers"
HELD_OUT = "speaker-held-out"
SEEN_SPEAKERS = {"kind": SEEN}
AUTO, RANDOM = "auto", "random"


def present_speakers(pool: SpikeSet) -> list[str]:
    """Names of the speakers that have samples, sorted; an error naming the file when there are no speaker ids."""
    if pool.speakers is None:
        raise InputError(f"{pool.source}: has no speaker ids (extra/speaker in the SHD layout, or N-TIDIGITS18 "
                         "sample ids); the speaker-held-out protocol needs them")
    return sorted({pool.speaker_name(int(k)) for k in np.unique(pool.speakers)})


def resolve_speaker(pool: SpikeSet, token: str, what: str = "--holdout-speaker") -> str:
    """A speaker's name from what the user typed: a name (any case) or an id."""
    names = present_speakers(pool)
    token = str(token).strip()
    by_lower = {n.lower(): n for n in names}
    if token.lower() in by_lower:
        return by_lower[token.lower()]
    if token.isdigit() and pool.speaker_names is not None and int(token) < len(pool.speaker_names):
        name = pool.speaker_names[int(token)]
        if name in names:
            return name
    if token.isdigit() and pool.speaker_names is None and token in names:
        return token
    raise InputError(f"{what} {token}: no such speaker in {pool.source} (speakers: {', '.join(names)})")


def speaker_mask(pool: SpikeSet, name: str) -> np.ndarray:
    ids = [k for k in np.unique(pool.speakers) if pool.speaker_name(int(k)) == name]
    return np.isin(pool.speakers, ids)


def speaker_split(pool: SpikeSet, holdout: str, valid: str, valid_fraction: float,
                  seed: int) -> tuple[SpikeSet, SpikeSet, SpikeSet, dict]:
    """(train, valid, test, protocol) of a pooled dataset with speaker `holdout` as the test set."""
    tr, va, te, protocol = speaker_split_index(pool, holdout, valid, valid_fraction, seed)
    return pool.subset(tr), pool.subset(va), pool.subset(te), protocol


def validation_recordings(pool: SpikeSet, among: np.ndarray, fraction: float,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded `fraction` of the samples `among` (recordings at their own speed) for validation, and the mask of
    every sample that then leaves training: those recordings and their `data convert --speed` copies."""
    order = np.random.default_rng(seed).permutation(len(among))
    va = np.sort(among[order[:max(1, int(round(len(among) * fraction)))]])
    leaves = np.zeros(len(pool), dtype=bool)
    leaves[va] = True
    if not pool.is_original.all():
        if pool.recordings is None:
            raise InputError(f"{pool.source}: speed copies (extra/speed) without extra/recording: a random validation "
                             "share cannot keep a recording's copies out of training; convert the recordings again")
        leaves |= np.isin(pool.recordings, pool.recordings[va])
    return va, leaves


def speaker_split_index(pool: SpikeSet, holdout: str, valid: str, valid_fraction: float,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """speaker_split as sample indices of the pool (train, valid, test) and the protocol."""
    names = present_speakers(pool)
    if len(names) < 2:
        raise InputError(f"{pool.source}: only one speaker ({names[0]}); holding it out leaves nothing to train on")
    tokens = [t for t in str(holdout).split(",") if t.strip()] or [str(holdout)]
    test_names = sorted({resolve_speaker(pool, t) for t in tokens}, key=names.index)
    if len(test_names) >= len(names):
        raise InputError(f"--holdout-speaker {holdout}: holds out every speaker; nothing is left to train on")
    test = np.zeros(len(pool), dtype=bool)
    for name in test_names:
        test |= speaker_mask(pool, name)
    original = pool.is_original  # speed-perturbed copies train, never test or validate
    rest = np.flatnonzero(~test & original)
    if valid == RANDOM:
        va, leaves = validation_recordings(pool, rest, valid_fraction, seed)
        tr = np.flatnonzero(~test & ~leaves)
        valid_name = RANDOM
    else:
        if valid == AUTO:
            if len(names) < len(test_names) + 2:
                raise InputError(f"{pool.source}: {len(names)} speakers; a validation speaker besides the test "
                                 "speaker(s) leaves none to train on (use --valid-speaker random)")
            start = names.index(test_names[0])
            valid_name = next(names[(start + k) % len(names)] for k in range(1, len(names))
                              if names[(start + k) % len(names)] not in test_names)
        else:
            valid_name = resolve_speaker(pool, valid, "--valid-speaker")
            if valid_name in test_names:
                raise InputError(f"--valid-speaker {valid}: is the held-out test speaker; choose another")
        is_valid = speaker_mask(pool, valid_name)
        va, tr = np.flatnonzero(is_valid & original), np.flatnonzero(~is_valid & ~test)
        if len(tr) == 0:
            raise InputError(f"{pool.source}: no training samples left after holding out "
                             f"{', '.join(test_names)} and {valid_name}")
    protocol = {"kind": HELD_OUT, "test_speaker": ",".join(test_names), "test_speakers": test_names,
                "valid_speaker": valid_name, "train_speakers": [n for n in names if n not in (*test_names, valid_name)]}
    return tr, va, np.flatnonzero(test & original), protocol
