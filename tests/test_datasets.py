"""The data layer: readers of both layouts, odd inputs, `data info`/`data plot`, binning, jitter,
validation splits, the built-in dataset and (when present) the real spoken-digit sets."""
from __future__ import annotations

import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from audio import builtin_set as synthetic
from audio.binning import Augment, BinSpec, EventBatch, bin_spikes, jitter
from audio.datasets import find_source, load_dataset, validation_split
from audio.inspect_data import describe, format_info
from audio.spike_files import DAS_CLASSES, SpikeSet, detect_layout, parse_das_id, read_das, read_shd
from common.errors import InputError
from conftest import SHARED_DATA, write_das_file, write_shd_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- hand-made files

SHD_TIMES = [
    np.array([0.0, 0.001, 0.25, 0.5, 0.999], dtype=np.float32),
    np.array([0.1, 0.2, 1.5], dtype=np.float32),  # 1.5 s: after the 1 s cut
    np.array([0.3125], dtype=np.float32),
]
SHD_UNITS = [
    np.array([0, 699, 5, 5, 350], dtype=np.uint16),
    np.array([1, 2, 3], dtype=np.uint16),
    np.array([42], dtype=np.uint16),
]
SHD_LABELS = [2, 0, 1]
SHD_KEYS = ["zero", "one", "two"]
SHD_SPEAKERS = [3, 1, 3]


def good_shd(path: Path) -> Path:
    return write_shd_file(path, SHD_TIMES, SHD_UNITS, SHD_LABELS, SHD_KEYS, SHD_SPEAKERS)


# id -> (timestamps, addresses); order matters (kept ids stay in file order)
DAS_TRAIN = {
    "george07-5a": ([0.0, 0.5, 1.0], [0, 63, 7]),
    "ann03-12a": ([0.1, 0.2], [1, 2]),  # two digits: skipped
    "bob01-za": ([0.25], [10]),
    "bob02-oa": ([0.125, 0.75], [11, 12]),
    "ann04-1b": ([0.0625], [13]),
    "carl11-9a": ([2.0, 0.5], [14, 15]),
    "carl12-z1oa": ([0.3], [4]),  # three digits: skipped
}
DAS_TEST = {
    "dora01-3a": ([0.1, 0.2], [20, 21]),
    "dora02-8b": ([0.3], [22]),
}


def good_das(path: Path) -> Path:
    return write_das_file(path, {"train": DAS_TRAIN, "test": DAS_TEST})


def f32(values) -> np.ndarray:
    """What float32 storage makes of `values`, as float64 (the reader's dtype)."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


# --------------------------------------------------------------------------- readers: good files

def test_read_shd_values_round_trip(tmp_path):
    s = read_shd(good_shd(tmp_path / "a_train.h5"))
    assert len(s) == 3 and s.n_channels == 700
    assert s.class_names == SHD_KEYS and s.n_classes == 3
    assert s.labels.tolist() == SHD_LABELS
    assert s.speakers.tolist() == SHD_SPEAKERS
    assert s.counts().tolist() == [5, 3, 1]
    assert s.offsets.tolist() == [0, 5, 8, 9]
    for i in range(3):
        t, u = s.sample(i)
        assert t.dtype == np.float32 and u.dtype == np.uint16  # compact: 6 bytes per event
        np.testing.assert_array_equal(t, f32(SHD_TIMES[i]))
        np.testing.assert_array_equal(u, SHD_UNITS[i].astype(np.int64))
    assert s.dropped == {"nan": 0, "inf": 0, "negative": 0}
    assert s.source == str(tmp_path / "a_train.h5")


def test_read_shd_float16_times_and_no_extra(tmp_path):
    """SHD itself stores float16 times; without extra/ the classes are '0'..max label, no speakers."""
    times = [np.array([0.0123, 0.777], np.float16), np.array([0.5], np.float16)]
    path = write_shd_file(tmp_path / "h_train.h5", times, [[1, 2], [3]], [0, 3], time_dtype=np.float16)
    s = read_shd(path)
    np.testing.assert_array_equal(s.times, np.concatenate(times).astype(np.float64))
    assert s.class_names == ["0", "1", "2", "3"]
    assert s.speakers is None
    assert s.labels.tolist() == [0, 3]


def test_read_shd_respects_channel_count(tmp_path):
    path = write_shd_file(tmp_path / "c_train.h5", [[0.1, 0.2]], [[0, 15]], [0], ["a"])
    assert read_shd(path, n_channels=16).n_channels == 16
    with pytest.raises(InputError, match=r"sample 0 has channel id 15 outside 0\.\.14"):
        read_shd(path, n_channels=15)


def test_read_das_values_round_trip(tmp_path):
    path = good_das(tmp_path / "d.hdf5")
    s = read_das(path, "train")
    assert s.ids == ["george07-5a", "bob01-za", "bob02-oa", "ann04-1b", "carl11-9a"]
    assert s.skipped_multi_digit == 2
    assert s.class_names == ["z", "o", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert s.labels.tolist() == [6, 0, 1, 2, 10]
    # speakers index the sorted speaker names: ann 0, bob 1, carl 2, george 3
    assert s.speakers.tolist() == [3, 1, 1, 0, 2]
    assert s.n_channels == 64
    for i, sid in enumerate(s.ids):
        t, u = s.sample(i)
        np.testing.assert_array_equal(t, f32(DAS_TRAIN[sid][0]))
        np.testing.assert_array_equal(u, np.array(DAS_TRAIN[sid][1], dtype=np.int64))
    test = read_das(path, "test")
    assert test.ids == ["dora01-3a", "dora02-8b"] and test.labels.tolist() == [4, 9]
    assert test.skipped_multi_digit == 0


def test_das_label_map_covers_all_eleven_words(tmp_path):
    words = ["z", "o", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    samples = {f"spk{k:02d}-{w}a": ([0.1], [k]) for k, w in enumerate(words)}
    samples["spk99-99a"] = ([0.1], [1])
    samples["spk98-o7b"] = ([0.1], [1])
    s = read_das(write_das_file(tmp_path / "all.hdf5", {"train": samples}), "train")
    assert s.labels.tolist() == list(range(11))
    assert [s.class_names[l] for l in s.labels] == words
    assert s.skipped_multi_digit == 2


@pytest.mark.parametrize("sid, speaker, digits", [
    ("george07-5a", "george", "5"),
    ("ann03-12a", "ann", "12"),
    ("bob-zb", "bob", "z"),
    ("man-ae01-o7a", "man-ae", "o7"),
])
def test_parse_das_id(sid, speaker, digits):
    assert parse_das_id(sid) == (speaker, digits)


def test_subset_keeps_samples_in_index_order(tmp_path):
    s = read_das(good_das(tmp_path / "d.hdf5"), "train")
    sub = s.subset(np.array([4, 0, 2]))
    assert sub.ids == ["carl11-9a", "george07-5a", "bob02-oa"]
    assert sub.labels.tolist() == [10, 6, 1] and sub.speakers.tolist() == [2, 3, 1]
    for j, sid in enumerate(sub.ids):
        t, u = sub.sample(j)
        np.testing.assert_array_equal(t, f32(DAS_TRAIN[sid][0]))
        np.testing.assert_array_equal(u, DAS_TRAIN[sid][1])
    assert sub.skipped_multi_digit == 2 and sub.class_names == s.class_names


def test_detect_layout(tmp_path):
    assert detect_layout(good_shd(tmp_path / "x_train.h5")) == "shd"
    assert detect_layout(good_das(tmp_path / "x.hdf5")) == "das"


# --------------------------------------------------------------------------- odd inputs

def _shd(tmp_path, times, units, labels, keys=("a", "b", "c")):
    return write_shd_file(tmp_path / "odd_train.h5", times, units, labels, list(keys))


def make_bad(kind: str, tmp_path: Path) -> tuple[Path, str, str | None, str]:
    """(file, reader 'shd'|'das', sample name the message must give or None, another word it must hold)."""
    ok_t, ok_u = [0.1, 0.2], [1, 2]
    if kind == "missing":
        return tmp_path / "nope_train.h5", "shd", None, "no such file"
    if kind == "text":
        p = tmp_path / "notes_train.h5"
        p.write_text("this is not an HDF5 file\n")
        return p, "shd", None, "HDF5"
    if kind == "wrong_layout":
        p = tmp_path / "other_train.h5"
        with h5py.File(p, "w") as h5:
            h5.create_dataset("something", data=np.arange(3))
        return p, "shd", None, "layout"
    if kind == "shd_missing_units":
        p = tmp_path / "half_train.h5"
        with h5py.File(p, "w") as h5:
            times = np.empty(1, dtype=object)
            times[0] = np.array([0.1], np.float32)
            h5.create_dataset("spikes/times", data=times, dtype=h5py.vlen_dtype(np.float32))
            h5.create_dataset("labels", data=np.zeros(1, np.int64))
        return p, "shd", None, "spikes/units"
    if kind == "shd_unit_out_of_range":
        return _shd(tmp_path, [ok_t, ok_t, [0.1, 0.3, 0.4]], [ok_u, ok_u, [3, 700, 5]], [0, 1, 2]), "shd", "2", "700"
    if kind == "shd_empty_sample":
        return _shd(tmp_path, [ok_t, [], ok_t], [ok_u, [], ok_u], [0, 1, 2]), "shd", "1", "no events"
    if kind == "shd_label_outside":
        return _shd(tmp_path, [ok_t, ok_t, ok_t], [ok_u, ok_u, ok_u], [0, 3, 1]), "shd", "1", "label 3"
    if kind == "shd_length_mismatch":
        return _shd(tmp_path, [ok_t, ok_t, [0.1, 0.2, 0.3]], [ok_u, ok_u, [1, 2]], [0, 1, 2]), "shd", "2", "3 spike times"
    if kind == "shd_all_odd":
        return (_shd(tmp_path, [ok_t, [np.nan, -0.5, np.inf], ok_t], [ok_u, [1, 2, 3], ok_u], [0, 1, 2]),
                "shd", "1", "no valid spike times")
    das = {"alice01-1a": (ok_t, ok_u), "alice02-2a": (ok_t, ok_u)}
    test = {"bert01-3a": (ok_t, ok_u)}
    bad_id = "carol05-7b"
    if kind == "das_unit_out_of_range":
        das[bad_id] = ([0.1, 0.2], [5, 64])
        word = "64"
    elif kind == "das_empty_sample":
        das[bad_id] = ([], [])
        word = "no events"
    elif kind == "das_length_mismatch":
        das[bad_id] = ([0.1, 0.2, 0.3], [1, 2])
        word = "3 spike times"
    elif kind == "das_all_odd":
        das[bad_id] = ([np.nan, -1.0], [1, 2])
        word = "no valid spike times"
    elif kind == "das_digit_outside":
        bad_id = "carol05-xa"
        das[bad_id] = (ok_t, ok_u)
        word = "outside the classes"
    elif kind == "das_bad_id":
        bad_id = "carol_without_dash"
        das[bad_id] = (ok_t, ok_u)
        word = "not an N-TIDIGITS18 id"
    elif kind == "das_missing_entry":
        das[bad_id] = None
        word = "no train_addresses"
    else:
        raise AssertionError(kind)
    return write_das_file(tmp_path / "odd.hdf5", {"train": das, "test": test}), "das", bad_id, word


BAD_KINDS = ["missing", "text", "wrong_layout", "shd_missing_units", "shd_unit_out_of_range",
             "shd_empty_sample", "shd_label_outside", "shd_length_mismatch", "shd_all_odd",
             "das_unit_out_of_range", "das_empty_sample", "das_length_mismatch", "das_all_odd",
             "das_digit_outside", "das_bad_id", "das_missing_entry"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_reader_rejects_odd_input_naming_file_and_sample(kind, tmp_path):
    path, reader, sample, word = make_bad(kind, tmp_path)
    with pytest.raises(InputError) as info:
        read_shd(path) if reader == "shd" else read_das(path, "train")
    msg = str(info.value)
    assert str(path) in msg
    assert word in msg
    if sample is not None:
        assert re.search(rf"sample {re.escape(sample)}\b", msg), msg


@pytest.mark.parametrize("kind", ["missing", "text", "wrong_layout"])
def test_das_reader_and_loader_reject_bad_files(kind, tmp_path):
    path, _, _, _ = make_bad(kind, tmp_path)
    with pytest.raises(InputError, match=re.escape(str(path))):
        read_das(path, "train")
    with pytest.raises(InputError, match=re.escape(str(path))):
        load_dataset(str(path))


def test_wrong_layout_names_the_missing_keys(tmp_path):
    path, _, _, _ = make_bad("wrong_layout", tmp_path)
    with pytest.raises(InputError, match="missing 'spikes/times'"):
        read_shd(path)
    with pytest.raises(InputError, match="missing 'train_labels'"):
        read_das(path, "train")
    with pytest.raises(InputError, match="neither the SHD/SSC layout"):
        detect_layout(path)


def _odd_times_shd(path: Path) -> Path:
    times = [[0.1, np.nan, 0.2, -0.25, np.inf, 0.3], [-0.5, 0.4, -np.inf, -1e-3, 1.5]]
    units = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11]]
    return write_shd_file(path, times, units, [0, 1], ["a", "b"])


def test_odd_spike_times_dropped_and_counted_shd(tmp_path):
    s = read_shd(_odd_times_shd(tmp_path / "odd_train.h5"))
    assert s.dropped == {"nan": 1, "inf": 2, "negative": 3}  # -inf counts as inf
    assert s.counts().tolist() == [3, 2]
    np.testing.assert_array_equal(s.times, f32([0.1, 0.2, 0.3, 0.4, 1.5]))
    np.testing.assert_array_equal(s.units, [1, 3, 6, 8, 11])  # each surviving time keeps its own channel
    assert np.isfinite(s.times).all() and (s.times >= 0).all()
    # the counts survive a subset (validation split)
    assert s.subset(np.array([1])).dropped == s.dropped


def test_odd_spike_times_dropped_and_counted_das(tmp_path):
    samples = {"eve01-4a": ([0.1, np.nan, -0.5, 0.2, np.nan], [1, 2, 3, 4, 5]), "eve02-5a": ([np.inf, 0.3], [5, 6])}
    s = read_das(write_das_file(tmp_path / "o.hdf5", {"train": samples}), "train")
    assert s.dropped == {"nan": 2, "inf": 1, "negative": 1}
    np.testing.assert_array_equal(s.units, [1, 4, 6])
    assert s.counts().tolist() == [2, 1]


def test_describe_reports_dropped_and_cut_events(tmp_path):
    path = _odd_times_shd(tmp_path / "odd_train.h5")
    (row,) = describe(str(path))
    assert row["samples"] == 2 and row["classes"] == 2
    assert (row["dropped_nan"], row["dropped_inf"], row["dropped_negative"]) == (1, 2, 3)
    assert row["events_after_cut"] == 1  # the 1.5 s event
    assert row["spikes_min"] == 2 and row["spikes_max"] == 3
    (row_short,) = describe(str(path), duration=0.35)
    assert row_short["events_after_cut"] == 2 and row_short["cut_s"] == 0.35  # 0.4 s and 1.5 s
    text = format_info([row])
    assert "NaN 1, inf 2, negative 3" in text
    assert "1 events after the 1.0 s cut" in text


def test_info_lists_the_speaker_names_holdout_speaker_takes(tmp_path):
    path = write_shd_file(tmp_path / "x_train.h5", SHD_TIMES, SHD_UNITS, SHD_LABELS, SHD_KEYS, SHD_SPEAKERS)
    with h5py.File(path, "a") as h5:
        h5.create_dataset("extra/speaker_names", data=np.array([b"ann", b"bob", b"cid", b"dee"]))
    (row,) = describe(str(path))
    assert row["speaker_names"] == ["bob", "dee"]  # the speakers with samples
    assert "speakers (--holdout-speaker NAME): bob, dee" in format_info([row])


# --------------------------------------------------------------------------- CLI

def _invoke(*args):
    return CliRunner().invoke(cli.cli, list(args))


def test_cli_info_good_shd_file(tmp_path):
    path = good_shd(tmp_path / "g_train.h5")
    r = _invoke("data", "info", str(path))
    assert r.exit_code == 0, r.output
    assert "samples 3" in r.output
    assert "classes 3 (zero, one, two)" in r.output
    assert "NaN 0, inf 0, negative 0" in r.output


def test_cli_info_good_das_file(tmp_path):
    r = _invoke("data", "info", str(good_das(tmp_path / "g.hdf5")))
    assert r.exit_code == 0, r.output
    assert "[train]" in r.output and "[test]" in r.output
    assert "samples 5," in r.output and "samples 2," in r.output
    assert "multi-digit samples skipped 2" in r.output


def test_cli_info_json_counts_dropped(tmp_path):
    import json
    r = _invoke("data", "info", "--json", str(_odd_times_shd(tmp_path / "odd_train.h5")))
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert (row["samples"], row["dropped_nan"], row["dropped_inf"], row["dropped_negative"]) == (2, 1, 2, 3)


def _assert_user_error(r, must_contain: str):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert must_contain in lines[0]
    assert r.stdout == ""


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_cli_info_bad_file_exit_2_one_line(kind, tmp_path):
    path, _, sample, _ = make_bad(kind, tmp_path)
    r = _invoke("data", "info", str(path))
    _assert_user_error(r, str(path))
    if sample is not None:
        assert f"sample {sample}" in r.stderr


@pytest.mark.parametrize("name", ["g_train.h5", "g.hdf5"])
def test_cli_plot_writes_png(tmp_path, name):
    path = good_shd(tmp_path / name) if name.endswith(".h5") else good_das(tmp_path / name)
    out = tmp_path / "x.png"
    r = _invoke("data", "plot", str(path), "--index", "1", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert out.stat().st_size > 1000
    assert "wrote" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "x.png"])  # no temp file left


@pytest.mark.parametrize("index", ["3", "-1", "1000"])
def test_cli_plot_bad_index_writes_nothing(tmp_path, index):
    path = good_shd(tmp_path / "g_train.h5")
    out = tmp_path / "x.png"
    r = _invoke("data", "plot", str(path), "--index", index, "--out", str(out))
    _assert_user_error(r, "--index")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g_train.h5"]


def test_cli_plot_bad_file_exit_2(tmp_path):
    path, _, _, _ = make_bad("shd_empty_sample", tmp_path)
    out = tmp_path / "x.png"
    r = _invoke("data", "plot", str(path), "--out", str(out))
    _assert_user_error(r, "sample 1")
    assert not out.exists()


# --------------------------------------------------------------------------- binning

def random_spikeset(rng, n_samples: int, n_channels: int, t_max: float) -> SpikeSet:
    counts = rng.integers(1, 60, size=n_samples)
    counts[0] = 1
    times = rng.uniform(0, t_max, size=counts.sum())
    units = rng.integers(0, n_channels, size=counts.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SpikeSet(times, units.astype(np.int64), offsets, rng.integers(0, 3, size=n_samples).astype(np.int64),
                    None, ["a", "b", "c"], n_channels, "memory")


def brute_force_counts(times_per_sample, units_per_sample, bin_hz, duration, n_channels) -> np.ndarray:
    n_steps = int(round(duration * bin_hz))
    out = np.zeros((len(times_per_sample), n_steps, n_channels), dtype=np.float32)
    for i, (ts, us) in enumerate(zip(times_per_sample, units_per_sample)):
        for t, u in zip(ts, us):
            k = math.floor(float(t) * bin_hz)  # bin k: k/bin_hz <= t < (k+1)/bin_hz
            if k < n_steps:
                out[i, k, int(u)] += 1
    return out


@pytest.mark.parametrize("bin_hz, duration, n_channels", [
    (250.0, 1.0, 700), (200.0, 1.25, 64), (100.0, 0.5, 16), (1000.0, 0.05, 3),
])
def test_binning_equals_brute_force(bin_hz, duration, n_channels):
    rng = np.random.default_rng(int(bin_hz))
    s = random_spikeset(rng, 9, n_channels, t_max=1.6 * duration)  # ~40 % of events after the cut
    spec = BinSpec(bin_hz, duration, n_channels)
    b = bin_spikes(s, spec)
    expect = brute_force_counts([s.sample(i)[0] for i in range(len(s))], [s.sample(i)[1] for i in range(len(s))],
                                bin_hz, duration, n_channels)
    got = b.dense(np.arange(len(s)))
    assert got.shape == (9, spec.n_steps, n_channels) and got.dtype == torch.float32
    assert expect.sum() < len(s.times)  # some events really were cut
    np.testing.assert_array_equal(got.numpy(), expect)
    # any index order picks the right rows
    idx = np.array([4, 0, 8, 4])
    np.testing.assert_array_equal(b.dense(idx).numpy(), expect[idx])
    assert b.labels.tolist() == s.labels.tolist()


def test_bin_edges_exact():
    """256 Hz makes k/256 exact: an event at k/256 is in bin k, one just before in bin k-1, one at the cut is gone."""
    times = np.array([0.0, 1 / 256, 1 / 256 - 2 ** -30, 127 / 256, 0.5 - 2 ** -30, 0.5, 0.75])
    units = np.array([0, 1, 1, 2, 2, 3, 3])
    s = SpikeSet(times, units, np.array([0, 7]), np.array([0]), None, ["a"], 4, "memory")
    d = bin_spikes(s, BinSpec(256.0, 0.5, 4)).dense(np.array([0]))[0]
    assert d.shape == (128, 4)
    assert d[0, 0] == 1 and d[1, 1] == 1 and d[0, 1] == 1 and d[127, 2] == 2
    assert d.sum() == 5 and d[:, 3].sum() == 0


def test_load_dataset_bin_options_equal_brute_force(tmp_path):
    rng = np.random.default_rng(7)
    n_ch = 12
    splits = {}
    for split, n in (("train", 20), ("test", 6)):
        times = [rng.uniform(0, 0.9, size=rng.integers(1, 40)).astype(np.float32) for _ in range(n)]
        units = [rng.integers(0, n_ch, size=len(t)) for t in times]
        labels = rng.integers(0, 4, size=n)
        write_shd_file(tmp_path / f"toy_{split}.h5", times, units, labels, ["a", "b", "c", "d"])
        splits[split] = (times, units, labels)
    ds = load_dataset(str(tmp_path), bin_hz=50.0, duration=0.6, n_channels=n_ch)
    assert (ds.spec.n_steps, ds.spec.n_channels) == (30, n_ch)
    times, units, labels = splits["test"]
    expect = brute_force_counts(times, units, 50.0, 0.6, n_ch)
    np.testing.assert_array_equal(ds.test.dense(np.arange(6)).numpy(), expect)
    assert ds.test.labels.tolist() == labels.tolist()
    with pytest.raises(InputError, match="channel id"):
        load_dataset(str(tmp_path), n_channels=n_ch - 1)


@pytest.mark.parametrize("option", ["bin_hz", "duration", "n_channels"])
@pytest.mark.parametrize("value", [0, -5])
def test_load_dataset_rejects_non_positive_options(tmp_path, option, value):
    """0 is an error, not 'use the default'."""
    for split in ("train", "test"):
        write_shd_file(tmp_path / f"toy_{split}.h5", [[0.1, 0.2]], [[1, 2]], [0], ["a"])
    with pytest.raises(InputError, match=f"{option} must be positive, got {value}"):
        load_dataset(str(tmp_path), **{option: value})
    with pytest.raises(InputError, match="gives no time step"):
        load_dataset(str(tmp_path), bin_hz=10.0, duration=0.01)


def test_batches_cover_every_sample_once():
    rng = np.random.default_rng(3)
    s = random_spikeset(rng, 23, 10, 1.0)
    s.labels = np.arange(23, dtype=np.int64)  # label = sample id
    s.class_names = [str(i) for i in range(23)]
    b = bin_spikes(s, BinSpec(100.0, 1.0, 10))
    full = b.dense(np.arange(23))
    for shuffle in (False, True):
        seen, sizes = [], []
        for x, y in b.batches(7, shuffle=shuffle, rng=np.random.default_rng(1)):
            sizes.append(len(y))
            np.testing.assert_array_equal(x.numpy(), full[y.numpy()].numpy())
            seen += y.tolist()
        assert sizes == [7, 7, 7, 2]
        assert sorted(seen) == list(range(23))
        if shuffle:
            assert seen != list(range(23))
        else:
            assert seen == list(range(23))


def test_event_batch_is_the_dense_batch_with_every_augmentation():
    """The same index, rng and augmentation give the same counts as events and dense (repeats in one bin count),
    and draw the same numbers from rng."""
    rng = np.random.default_rng(5)
    s = random_spikeset(rng, 9, 12, 1.0)
    b = bin_spikes(s, BinSpec(20.0, 1.0, 12))  # 20 steps: many events share a bin
    idx = np.array([4, 0, 7, 7, 2])
    aug = Augment(jitter_sigma=1.5, channel_shift=2, time_stretch=0.2, event_drop=0.1, spectral_tilt=0.5, blend=0.5)
    r1, r2 = np.random.default_rng(8), np.random.default_rng(8)
    dense, events = b.dense(idx, rng=r1, augment=aug), b.events(idx, rng=r2, augment=aug)
    assert r1.random() == r2.random()
    assert isinstance(events, EventBatch) and events.shape == dense.shape and len(events) == 5
    assert dense.max() > 1 and torch.equal(events.dense(), dense)
    assert torch.equal(events.count.sum(), dense.sum()) and len(events.count) == int((dense > 0).sum())
    assert not torch.equal(dense, b.dense(idx))  # the augmentation did something
    # a torchrun rank's share: contiguous samples, an empty share included
    for part in (slice(0, 2), slice(2, 5), slice(4, 5), slice(3, 3)):
        assert torch.equal(events[part].dense(), dense[part])
    assert torch.equal(events.dense(torch.float64), dense.double())
    for (xe, ye), (xd, yd) in zip(b.batches(4, events=True), b.batches(4)):
        assert torch.equal(xe.dense(), xd) and torch.equal(ye, yd)


# --------------------------------------------------------------------------- jitter and splits

def test_jitter_deterministic_for_seed():
    flat = np.arange(5000) * 7 % (50 * 100)
    owner = np.zeros(5000, dtype=np.int64)
    a = jitter(flat, owner, 100, 2.0, np.random.default_rng(11))
    b = jitter(flat, owner, 100, 2.0, np.random.default_rng(11))
    c = jitter(flat, owner, 100, 2.0, np.random.default_rng(12))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], flat[:len(a[0])])


def test_jitter_sigma_zero_leaves_counts():
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 30 * 20, size=400)
    owner = rng.integers(0, 4, size=400)
    f2, o2 = jitter(flat, owner, 20, 0.0, np.random.default_rng(1))
    np.testing.assert_array_equal(f2, flat)
    np.testing.assert_array_equal(o2, owner)


def test_jitter_moves_channels_only_and_drops_out_of_range():
    n_ch, step = 8, 5
    channels = np.repeat([0, 7, 3], 2000)
    flat = step * n_ch + channels
    owner = np.repeat([0, 1, 2], 2000)
    f2, o2 = jitter(flat, owner, n_ch, 3.0, np.random.default_rng(4))
    s2, c2 = np.divmod(f2, n_ch)
    assert (s2 == step).all()  # time step never changes
    assert ((c2 >= 0) & (c2 < n_ch)).all()
    assert len(f2) < len(flat)  # events pushed outside 0..7 are gone, never wrapped or clipped
    assert (np.bincount(o2, minlength=3) <= 2000).all()
    # about half of the channel-0 events go below 0 (plus the rounding band): roughly 0.44-0.5 dropped
    kept0 = (o2 == 0).sum() / 2000
    assert 0.45 < kept0 < 0.62
    # clipping would pile events on the edge channels; the dropped rule leaves channel 0 near its share
    assert (c2[o2 == 0] == 0).mean() < 0.35


def test_jitter_shift_distribution():
    n_ch, sigma, n = 1000, 3.0, 200_000
    flat = np.full(n, 500)
    f2, _ = jitter(flat, np.zeros(n, np.int64), n_ch, sigma, np.random.default_rng(5))
    assert len(f2) == n
    shift = f2 - 500
    assert abs(np.abs(shift).mean() - sigma * math.sqrt(2 / math.pi)) < 0.02 * sigma * math.sqrt(2 / math.pi)
    assert abs(shift.mean()) < 0.03  # unbiased (rounding, not floor)
    # round(Normal(0, 0.4)) moves an event iff |x| >= 0.5: P = 2 * (1 - Phi(1.25)) = 0.2113
    small, _ = jitter(flat, np.zeros(n, np.int64), n_ch, 0.4, np.random.default_rng(6))
    assert abs((small != 500).mean() - 0.2113) < 0.006
    assert np.abs(small - 500).max() <= 3


def test_dense_with_jitter_never_adds_spikes():
    rng = np.random.default_rng(9)
    s = random_spikeset(rng, 12, 16, 1.0)
    b = bin_spikes(s, BinSpec(100.0, 1.0, 16))
    idx = np.arange(12)
    plain = b.dense(idx)
    j1 = b.dense(idx, 2.0, np.random.default_rng(3))
    j2 = b.dense(idx, 2.0, np.random.default_rng(3))
    j3 = b.dense(idx, 2.0, np.random.default_rng(4))
    assert torch.equal(j1, j2) and not torch.equal(j1, j3) and not torch.equal(j1, plain)
    per_sample = j1.sum(dim=(1, 2))
    assert (per_sample <= plain.sum(dim=(1, 2))).all()
    assert per_sample.sum() < plain.sum()
    # counts per time step per sample only shrink: jitter moves along channels, never along time
    assert (j1.sum(dim=2) <= plain.sum(dim=2)).all()
    assert torch.equal(b.dense(idx, 0.0, np.random.default_rng(3)), plain)


@pytest.mark.parametrize("n, fraction", [(2250, 0.1), (2250, 0.2), (37, 0.2), (5, 0.1)])
def test_validation_split_sizes_disjoint_deterministic(n, fraction):
    tr, va = validation_split(n, fraction, seed=0)
    assert len(va) == max(1, round(n * fraction)) and len(tr) == n - len(va)
    assert not set(tr) & set(va)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(n))
    tr2, va2 = validation_split(n, fraction, seed=0)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    if n > 10:
        _, va3 = validation_split(n, fraction, seed=1)
        assert not np.array_equal(va, va3)


def _ids_of(binned, n_channels) -> list[int]:
    """Sample id = the channel of its events (each toy sample fires on one channel only)."""
    out = []
    for i in range(len(binned)):
        ch = np.unique(binned.flat[binned.offsets[i]:binned.offsets[i + 1]] % n_channels)
        assert len(ch) == 1
        out.append(int(ch[0]))
    return out


def test_shd_layout_holds_out_ten_percent(tmp_path):
    n = 50
    times = [[0.1, 0.2 + 0.01 * i] for i in range(n)]
    units = [[i, i] for i in range(n)]  # sample i fires on channel i
    write_shd_file(tmp_path / "toy_train.h5", times, units, [i % 3 for i in range(n)], ["a", "b", "c"])
    write_shd_file(tmp_path / "toy_test.h5", times[:4], units[:4], [0, 1, 2, 0], ["a", "b", "c"])
    a = load_dataset(str(tmp_path / "toy_train.h5"), seed=0)
    assert a.source.name == "shd" and set(a.source.files) == {"train", "test"}
    assert (len(a.train), len(a.valid), len(a.test)) == (45, 5, 4)
    tr, va = _ids_of(a.train, 700), _ids_of(a.valid, 700)
    assert not set(tr) & set(va) and sorted(tr + va) == list(range(n))
    b = load_dataset(str(tmp_path), seed=0)
    assert _ids_of(b.valid, 700) == va
    c = load_dataset(str(tmp_path), seed=1)
    assert _ids_of(c.valid, 700) != va
    assert a.default_jitter == 2.0


def _toy_recordings(path: Path, per_group: int = 10, speeds=None) -> Path:
    """2 speakers x 3 classes x per_group recordings, recording r firing on channel r; with speeds, every recording
    once per factor (channel r + 300 for the perturbed copies), as `data convert --speed` writes them."""
    rec = [(sp, c) for sp in range(2) for c in range(3) for _ in range(per_group)]
    speeds = speeds or [1.0]
    order = [(r, v) for r in range(len(rec)) for v in speeds]
    units = [[r if v == 1.0 else r + 300] * 2 for r, v in order]
    write_shd_file(path, [[0.1, 0.2]] * len(order), units, [rec[r][1] for r, _ in order], ["a", "b", "c"],
                   [rec[r][0] for r, _ in order])
    if speeds != [1.0]:
        with h5py.File(path, "a") as h5:
            h5.create_dataset("extra/speed", data=np.array([v for _, v in order], np.float32))
            h5.create_dataset("extra/recording", data=np.array([r for r, _ in order], np.int32))
    return path


@pytest.mark.parametrize("name", ["digits.h5", "digits_train.h5"])
def test_training_file_alone_gets_a_seeded_test_split_per_speaker_and_class(tmp_path, name):
    """A training file with no test file beside it (what `data convert` writes): 10 % of each speaker's recordings
    of each class are the test set, the same for every seed; validation comes out of the rest as usual."""
    path = _toy_recordings(tmp_path / name)
    a, b = load_dataset(str(path), seed=0), load_dataset(str(path), seed=3)
    te = _ids_of(a.test, 700)
    assert len(te) == 6 and {(r // 30, r // 10 % 3) for r in te} == {(sp, c) for sp in range(2) for c in range(3)}
    assert _ids_of(b.test, 700) == te and _ids_of(b.valid, 700) != _ids_of(a.valid, 700)
    tr, va = _ids_of(a.train, 700), _ids_of(a.valid, 700)
    assert sorted(tr + va + te) == list(range(60)) and (len(tr), len(va)) == (49, 5)
    assert _ids_of(load_dataset(str(tmp_path), seed=0).test, 700) == te  # the folder holding it: the same split
    # eval on the file takes every sample; --split test its seeded test split
    from audio.datasets import load_eval_set
    assert len(load_eval_set(str(path)).samples) == 60
    assert _ids_of(load_eval_set(str(path), "test").samples, 700) == te


def test_seeded_test_split_keeps_speed_copies_together(tmp_path):
    """Every copy of a test recording leaves training; the test holds the recordings at their own speed only."""
    path = _toy_recordings(tmp_path / "sp.h5", speeds=[0.9, 1.0, 1.1])
    ds = load_dataset(str(path), seed=0)
    te, rest = _ids_of(ds.test, 700), _ids_of(ds.train, 700) + _ids_of(ds.valid, 700)
    assert len(te) == 6 and all(r < 300 for r in te)  # speed 1.0 alone
    assert not {r % 300 for r in rest} & set(te)
    va = _ids_of(ds.valid, 700)  # validation: recordings at their own speed, their copies out of training
    assert all(r < 300 for r in va) and len(rest) == 3 * 54 - 2 * len(va)


def test_ntidigits_file_without_test_split_gets_the_seeded_split(tmp_path):
    samples = {f"{sp}{k:02d}-{DAS_CLASSES[c]}a": ([0.1, 0.3], [10 * c + k % 10, 10 * c + k % 10])
               for sp in ("ann", "bob") for c in range(3) for k in range(10)}
    path = write_das_file(tmp_path / "conv.hdf5", {"train": samples})
    ds = load_dataset(str(path), seed=0)
    assert len(ds.test) == 6 and len(ds.train) + len(ds.valid) == 54
    assert sorted(ds.test.speaker_set()) == ["ann", "bob"]


def test_convert_test_share_writes_a_split_that_trains(tmp_path):
    """data convert --test-share: per speaker and class, the test recordings at their own speed in x_test.h5, the
    rest at every speed in x_train.h5; the folder then trains with its own test file."""
    from scipy.io import wavfile

    from audio.convert import convert
    rate = 8000
    t = np.arange(int(0.3 * rate)) / rate
    wavs = tmp_path / "wav"
    wavs.mkdir()
    for digit, hz in ((1, 400), (2, 900)):
        for speaker in ("amy", "bo"):
            for take in range(5):
                tone = 0.3 * np.sin(2 * np.pi * (hz + 20 * take) * t) * np.hanning(len(t))
                wavfile.write(wavs / f"{digit}_{speaker}_{take}.wav", rate, (tone * 32767).astype(np.int16))
    out = tmp_path / "data" / "x.h5"
    out.parent.mkdir()
    r = convert([str(wavs)], out, test_share=0.2, speeds=[1.0, 1.1], workers=1, progress=False)
    assert r["outputs"] == [str(out.parent / "x_train.h5"), str(out.parent / "x_test.h5")] and not out.exists()
    train, test = read_shd(out.parent / "x_train.h5"), read_shd(out.parent / "x_test.h5")
    assert len(test) == 4 and len(train) == 2 * 16  # one of each speaker's 5 takes of each digit; two speeds
    with h5py.File(out.parent / "x_test.h5") as h5:
        assert "extra/speed" not in h5
    with h5py.File(out.parent / "x_train.h5") as h5:
        assert np.allclose(sorted(set(h5["extra/speed"][()])), [1.0, 1.1]) and len(set(h5["extra/recording"][()])) == 16
    ds = load_dataset(str(out.parent))
    assert len(ds.test) == 4 and set(ds.source.files) == {"train", "test"}
    das = convert([str(wavs)], tmp_path / "x.hdf5", layout="ntidigits", test_share=0.2, workers=1, progress=False)
    assert das["outputs"] == [str(tmp_path / "x.hdf5")]
    assert (len(read_das(tmp_path / "x.hdf5", "train")), len(read_das(tmp_path / "x.hdf5", "test"))) == (16, 4)
    with pytest.raises(InputError, match="--test-share"):
        convert([str(wavs)], tmp_path / "y.h5", test_share=1.5, workers=1, progress=False)


def test_das_layout_holds_out_twenty_percent(tmp_path):
    samples = {f"s{i % 3}{i:02d}-{DAS_CLASSES[i % 11]}a": ([0.1, 0.3], [i, i]) for i in range(40)}
    samples["s999-12a"] = ([0.1], [63])  # multi-digit: not a sample
    path = write_das_file(tmp_path / "toy.hdf5", {"train": samples, "test": {"t01-5a": ([0.2], [1])}})
    a = load_dataset(str(path), seed=0)
    assert a.source.name == "das" and a.n_classes == 11
    assert (len(a.train), len(a.valid), len(a.test)) == (32, 8, 1)
    assert (a.spec.bin_hz, a.spec.n_steps, a.spec.n_channels) == (200.0, 250, 64)
    tr, va = _ids_of(a.train, 64), _ids_of(a.valid, 64)
    assert not set(tr) & set(va) and sorted(tr + va) == list(range(40))
    assert _ids_of(load_dataset(str(tmp_path), seed=0).valid, 64) == va  # directory holding it: same split
    assert _ids_of(load_dataset(str(path), seed=2).valid, 64) != va
    assert a.default_jitter == 0.0


def test_ssc_valid_file_is_used(tmp_path):
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        write_shd_file(tmp_path / f"ssc_{split}.h5", [[0.1]] * n, [[1]] * n, [0] * n, ["a", "b"])
    ds = load_dataset(str(tmp_path / "ssc_train.h5"))
    assert ds.name == "ssc" and (len(ds.train), len(ds.valid), len(ds.test)) == (6, 3, 2)


def test_find_source_errors(tmp_path):
    train = good_shd(tmp_path / "g_train.h5")
    assert find_source(str(tmp_path)).files == {"train": train}  # no test file: a seeded test split (below)
    lone = good_shd(tmp_path / "g_test.h5")
    assert find_source(str(lone)).files == {"file": lone}  # evaluation takes it whole
    with pytest.raises(InputError, match="a test file alone: train on its training file"):
        load_dataset(str(lone))
    with pytest.raises(InputError, match="no such file or directory"):
        find_source(str(tmp_path / "absent"))


def test_directory_ignores_other_hdf5_files_beside_the_data(tmp_path):
    train, test = good_shd(tmp_path / "d_train.h5"), good_shd(tmp_path / "d_test.h5")
    with h5py.File(tmp_path / "net.h5", "w") as h5:  # an exported network kept beside the data
        h5.create_dataset("layers/0/weight", data=np.zeros((2, 2)))
    assert find_source(str(tmp_path)).files == {"train": train, "test": test}
    (tmp_path / "bad_train.h5").write_bytes(b"not hdf5")  # a broken split file is still an error
    with pytest.raises(InputError, match="bad_train.h5"):
        find_source(str(tmp_path))


# --------------------------------------------------------------------------- built-in dataset

def test_builtin_generate_deterministic():
    a, b, c = synthetic.generate(seed=0), synthetic.generate(seed=0), synthetic.generate(seed=1)
    for split in ("train", "test"):
        for key in ("labels", "speakers"):
            np.testing.assert_array_equal(a[split][key], b[split][key])
        assert len(a[split]["times"]) == len(b[split]["times"])
        for x, y in zip(a[split]["times"] + a[split]["units"], b[split]["times"] + b[split]["units"]):
            np.testing.assert_array_equal(x, y)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a["train"]["times"], c["train"]["times"]))


def test_builtin_files_small_and_readable(tmp_path):
    root = synthetic.ensure_builtin(seed=0, root=tmp_path)
    files = sorted(root.glob("*.h5"))
    assert [f.name for f in files] == ["builtin_test.h5", "builtin_train.h5"]
    assert sum(f.stat().st_size for f in files) < 1_000_000
    ref = synthetic.generate(seed=0)
    s = read_shd(root / "builtin_train.h5")
    assert s.n_classes == len(synthetic.CLASS_NAMES) >= 3
    assert len(np.unique(s.labels)) == s.n_classes
    np.testing.assert_array_equal(s.labels, ref["train"]["labels"])
    for i in (0, 17, len(s) - 1):
        t, u = s.sample(i)
        np.testing.assert_array_equal(t, ref["train"]["times"][i].astype(np.float64))
        np.testing.assert_array_equal(u, ref["train"]["units"][i])
    # test speakers are not training speakers
    assert not set(read_shd(root / "builtin_test.h5").speakers) & set(s.speakers)


def test_load_builtin_uses_private_cache(builtin_cache):
    ds = load_dataset("builtin")
    assert ds.name == "builtin" and ds.n_classes == 6 and ds.class_names == synthetic.CLASS_NAMES
    assert len(ds.train) + len(ds.valid) == 240 and len(ds.valid) == 24 and len(ds.test) == 60
    assert (ds.spec.n_steps, ds.spec.n_channels) == (250, 700)
    assert Path(ds.source.files["train"]).is_relative_to(builtin_cache)
    assert (builtin_cache / f"builtin-v{synthetic.VERSION}-seed0" / "builtin_train.h5").exists()
    x, y = next(ds.train.batches(16))
    assert x.shape == (16, 250, 700) and x.sum() > 0 and y.tolist() == ds.train.labels[:16].tolist()


def test_cli_info_builtin():
    r = _invoke("data", "info", "builtin")
    assert r.exit_code == 0, r.output
    assert "samples 240" in r.output and "samples 60" in r.output


# --------------------------------------------------------------------------- real spoken digits

FSDD_SHD = SHARED_DATA / "fsdd-shd"
FSDD_DAS = SHARED_DATA / "fsdd-das"


@pytest.mark.skipif(not FSDD_SHD.exists(), reason="../shared/data/fsdd-shd not present")
def test_fsdd_shd_sizes():
    ds = load_dataset(str(FSDD_SHD))
    assert ds.name == "shd"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (2025, 225, 250)
    assert ds.n_classes == 10 and ds.class_names[0] == "zero" and ds.class_names[9] == "nine"
    assert (ds.spec.n_steps, ds.spec.n_channels) == (250, 700)
    assert set(np.unique(ds.test.labels)) == set(range(10))


@pytest.mark.skipif(not FSDD_DAS.exists(), reason="../shared/data/fsdd-das not present")
def test_fsdd_das_sizes():
    ds = load_dataset(str(FSDD_DAS))
    assert ds.name == "das"
    assert len(ds.train) + len(ds.valid) == 2250 and len(ds.valid) == 450
    assert len(ds.test) == 250
    assert ds.n_classes == 11 and ds.class_names == DAS_CLASSES
    assert (ds.spec.n_steps, ds.spec.n_channels) == (250, 64)
    assert set(np.unique(ds.train.labels)) <= set(range(11))


def test_silence_after_a_batch_is_the_same_in_both_forms():
    from train.trainer import with_silence
    split = load_dataset("builtin", bin_hz=25.0).train
    idx = np.arange(5)
    dense = split.dense(idx)
    events = split.events(idx)
    padded = with_silence(events, 7).dense()
    assert padded.shape == (5, 32, 700)
    assert torch.equal(padded, with_silence(dense, 7)) and torch.equal(padded[:, :25], dense)
    assert float(padded[:, 25:].abs().sum()) == 0.0
