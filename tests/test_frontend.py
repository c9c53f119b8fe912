"""From recordings to spikes (`data convert`) and to an answer (`infer`): the front end on real recordings, bad
files, infer agreeing with eval and simulate on the same converted recording, and infer's outputs and limits.
Tests marked `needs_wav` read ../shared/data/fsdd-wav; the others make their own recordings."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import signal
from scipy.io import wavfile

from audio.convert import convert
from audio.frontend import Frontend, _erb_space, _filterbank, read_wav, recorded_frontend, spikes_of
from audio.spike_files import read_das, read_shd
from conftest import REPO, SHARED_DATA, one_line_error, run_cli

WAV = SHARED_DATA / "fsdd-wav"
needs_wav = pytest.mark.skipif(not WAV.exists(), reason="../shared/data/fsdd-wav not present")
PICK = ["0_george_5.wav", "3_jackson_7.wav", "5_lucas_9.wav", "7_nicolas_6.wav", "9_yweweler_8.wav", "2_george_12.wav"]


def tone(path, hz: float, seconds: float = 0.4, rate: int = 8000, amp: float = 0.3, dtype=np.int16):
    """A Hann-windowed sine as a wav file (int16 PCM, or float samples scaled by `amp`)."""
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * hz * t) * np.hanning(len(t))
    wavfile.write(path, rate, (x * 32767).astype(np.int16) if dtype == np.int16 else x.astype(dtype))
    return path


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    """A tiny LIF trained one epoch on converted tones (class 0 low, class 1 high; three speakers)."""
    from train.trainer import config_from_options, train
    d = tmp_path_factory.mktemp("tones")
    (d / "wav").mkdir()
    for label, hz in ((0, 300), (1, 1500)):
        for spk in ("ann", "bob", "cy"):
            for take in range(2):
                tone(d / "wav" / f"{label}_{spk}_{take}.wav", hz * (1 + 0.05 * take))
    (d / "data").mkdir()
    for split in ("train", "test"):
        convert([str(d / "wav")], d / "data" / f"t_{split}.h5", workers=1, progress=False)
    train(config_from_options(model="lif", layers=1, hidden=8, data=str(d / "data"), epochs=1, bin_hz=25, batch=4),
          d / "run", progress=False)
    return d


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    for name in PICK:
        shutil.copy(WAV / name, d / name)
    return d


@needs_wav
def test_convert_real_recordings_both_layouts(recordings, tmp_path):
    r = convert([str(recordings)], tmp_path / "a.h5", workers=2, progress=False)
    s = read_shd(tmp_path / "a.h5")
    assert len(s) == 6 and s.n_channels == 700 and int(s.units.max()) < 700
    assert np.bincount(s.units, minlength=700)[:350].sum() > 0.25 * len(s.units)  # voices reach the low channels
    assert [s.class_names[l] for l in s.labels] == [n.split("_")[0] for n in sorted(PICK)]
    assert [s.speaker_name(int(k)) for k in s.speakers] == [n.split("_")[1] for n in sorted(PICK)]
    assert s.class_names == [str(k) for k in range(10)]
    seconds = np.array([len(read_wav(recordings / n, 8000)) / 8000 for n in sorted(PICK)])
    per_channel_rate = s.counts() / seconds / 700
    assert np.all((per_channel_rate > 1) & (per_channel_rate < 100)), per_channel_rate  # spikes/s per channel, sane
    assert np.all(np.diff(s.times[s.offsets[0]:s.offsets[1]]) >= 0) and s.times.max() <= seconds.max() + 1e-3
    assert Frontend.from_dict(recorded_frontend(tmp_path / "a.h5")) == Frontend()
    # deterministic, whatever the number of workers
    convert([str(recordings)], tmp_path / "b.h5", workers=1, progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("spikes/times", "spikes/units"):
            assert all(np.array_equal(x, y) for x, y in zip(a[key][()], b[key][()])), key
    das = convert([str(recordings)], tmp_path / "d.hdf5", layout="ntidigits", progress=False)
    d = read_das(tmp_path / "d.hdf5", "train")
    assert d.n_channels == 64 and int(d.units.max()) < 64 and len(d) == 6 and das["classes"][0] == "z"
    assert sorted(d.ids)[0].startswith("george") and d.class_names[d.labels[d.ids.index(
        next(i for i in d.ids if i.startswith("yweweler")))]] == "9"
    assert r["files"] == 6 and r["spikes_min"] > 0


@needs_wav
def test_front_end_stereo_and_resampling_give_the_same_spikes(tmp_path):
    rate, x = wavfile.read(WAV / PICK[1])
    wavfile.write(tmp_path / "stereo.wav", rate, np.stack([x, x], axis=1))
    from scipy.signal import resample_poly
    wavfile.write(tmp_path / "fast.wav", 16000, np.rint(resample_poly(x.astype(float), 2, 1)).astype(np.int16))
    fe = Frontend()
    mono = spikes_of(read_wav(WAV / PICK[1], fe.rate), fe)
    stereo = spikes_of(read_wav(tmp_path / "stereo.wav", fe.rate), fe)
    assert np.array_equal(mono[0], stereo[0]) and np.array_equal(mono[1], stereo[1])
    resampled = spikes_of(read_wav(tmp_path / "fast.wav", fe.rate), fe)
    assert abs(len(resampled[0]) - len(mono[0])) < 0.05 * len(mono[0])  # 16 kHz input resampled to 8 kHz


def test_bad_recordings_are_one_line_errors_and_leave_no_output(tmp_path):
    good = tone(tmp_path / "1_ann_0.wav", 500)
    corrupt = tmp_path / "2_ann_1.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    empty = tmp_path / "3_ann_2.wav"
    wavfile.write(empty, 8000, np.zeros(0, dtype=np.int16))
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    odd = tmp_path / "recording.wav"
    shutil.copy(good, odd)
    truncated = tmp_path / "4_ann_3.wav"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2 + 1])
    long = tone(tmp_path / "5_ann_4.wav", 500, seconds=10.5)
    cases = [(corrupt, "2_ann_1.wav: not a readable wav file"), (empty, "3_ann_2.wav: the recording is empty"),
             (text, "notes.txt: not a .wav file"), (odd, "recording.wav: the name does not match the label pattern"),
             (truncated, "4_ann_3.wav: truncated"), (long, "5_ann_4.wav: 10.5 s long; recordings longer than 10 s")]
    for bad, message in cases:
        out = tmp_path / "out.h5"
        line = one_line_error(run_cli("data", "convert", good, bad, "--out", out, "--quiet", "--workers", "1"))
        assert message in line and "--max-seconds" not in line, line
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.h5")]
    assert "--include" in one_line_error(run_cli("data", "convert", good, "--include", "nomatch", "--out",
                                                 tmp_path / "o.h5"))


def test_convert_checks_its_output_and_settings_before_any_recording(tmp_path):
    """A missing output directory and a silence floor of 1 or more are reported first, not blamed on a file."""
    good, corrupt = tone(tmp_path / "1_ann_0.wav", 500), tmp_path / "2_ann_1.wav"
    corrupt.write_bytes(b"RIFF junk")
    line = one_line_error(run_cli("data", "convert", good, corrupt, "--out", tmp_path / "nodir" / "x.h5"))
    assert "directory" in line and "nodir" in line and "does not exist" in line, line
    line = one_line_error(run_cli("data", "convert", good, "--floor", "2", "--out", tmp_path / "x.h5"))
    assert line.startswith("error: --floor 2") and "below 1" in line, line


def test_float_recordings_beyond_full_scale_convert_as_at_full_scale(tmp_path):
    """A float wav near 1e304 gives the spikes of the same wav at 0.3 (the spikes do not depend on gain): no
    overflow warning, no 'silent?'."""
    quiet = tone(tmp_path / "1_ann_0.wav", 700, dtype=np.float64)
    loud = tone(tmp_path / "1_bob_0.wav", 700, amp=1e304, dtype=np.float64)
    res = run_cli("data", "convert", quiet, loud, "--out", tmp_path / "f.h5", "--quiet", "--workers", "1")
    assert res.exit_code == 0 and "Warning" not in res.output, res.output
    counts = read_shd(tmp_path / "f.h5").counts()
    assert counts[0] > 100 and abs(counts[1] - counts[0]) <= 0.01 * counts[0], counts


def test_filterbank_is_scipys_gammatone_at_unit_gain():
    """Every channel: scipy.signal.gammatone's 4th-order FIR impulse response, scaled to gain 1 at its centre
    frequency (front end version 1 gave gains from 14 to 2400 there)."""
    fe = Frontend(channels=64)
    fb = _filterbank(fe)
    for fc, ir in zip(_erb_space(fe.fmin, fe.fmax, fe.channels), fb):
        assert abs(signal.freqz(ir, worN=[fc], fs=fe.rate)[1][0]) == pytest.approx(1.0, rel=1e-9)
        ref = signal.gammatone(fc, "fir", order=4, numtaps=fb.shape[1], fs=fe.rate)[0]
        np.testing.assert_allclose(ir / np.abs(ir).max(), ref / np.abs(ref).max(), atol=1e-12)


def test_ntidigits_speakers_keep_their_digits(tmp_path):
    for spk in ("spk1", "spk2", "spk_1"):
        tone(tmp_path / f"3_{spk}_0.wav", 500)
    assert run_cli("data", "convert", tmp_path, "--layout", "ntidigits", "--speaker-regex", r"^[^_]+_(.+)_",
                   "--out", tmp_path / "d.hdf5", "--quiet", "--workers", "1").exit_code == 0
    d = read_das(tmp_path / "d.hdf5", "train")
    assert sorted(d.speaker_names) == ["spk1", "spk2", "spk_1"] and len(set(d.speakers.tolist())) == 3


def test_two_converts_of_one_output_do_not_both_write_it(tmp_path):
    """A second `data convert --out X` while a first one is converting is refused (naming its pid), not run to a
    silent replacement of the first's result; a lock left by a killed writer does not block."""
    wav = tone(tmp_path / "1_ann_0.wav", 500)
    out = tmp_path / "x.h5"
    paused = ("import time\nimport audio.convert as c\n"
              "def slow(job):\n    print('converting', flush=True)\n    time.sleep(60)\n"
              f"c._convert_one = slow\nc.convert([{str(wav)!r}], {str(out)!r}, workers=1, progress=False)\n")
    first = subprocess.Popen([sys.executable, "-c", paused], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "converting"  # inside its work, before its write
        line = one_line_error(run_cli("data", "convert", wav, "--out", out, "--quiet", "--workers", "1"))
        assert f"in use by another command (pid {first.pid})" in line and not out.exists()
    finally:
        first.kill()
        first.wait()
    res = run_cli("data", "convert", wav, "--out", out, "--quiet", "--workers", "1")  # the killed writer's lock
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1_ann_0.wav", "x.h5"]  # its lock file is gone too


def test_a_killed_writers_temp_file_does_not_spoil_its_data_directory(tone_model, tmp_path):
    """`data convert` killed while writing leaves a hidden temp file; data info and train still take the
    directory."""
    data = tmp_path / "d"
    shutil.copytree(tone_model / "data", data)
    (data / ".t_train.h5.999999999.x1y2.h5").write_bytes(b"half-written HDF5")
    info = run_cli("data", "info", data)
    assert info.exit_code == 0 and "t_train.h5" in info.output and ".t_train" not in info.output, info.output
    res = run_cli("train", "--model", "lif", "--layers", "1", "--hidden", "4", "--bin-hz", "25", "--epochs", "1",
                  "--data", data, "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def wav_model(tmp_path_factory, recordings):
    """A tiny Cuba-LIF trained two epochs on converted recordings, and the converted test file."""
    from train.trainer import config_from_options, train
    d = tmp_path_factory.mktemp("wavdata")
    convert([str(recordings)], d / "w_train.h5", progress=False)
    convert([str(recordings)], d / "w_test.h5", progress=False)
    run = d / "run"
    train(config_from_options(model="cuba-lif", layers=1, hidden=16, data=str(d), epochs=2, batch=4), run,
          progress=False)
    assert run_cli("export", run / "best.pt", "--out", d / "net.h5").exit_code == 0
    return d


@needs_wav
def test_infer_agrees_with_eval_and_simulate(wav_model, recordings, tmp_path):
    from audio.datasets import eval_set_for
    from train.checkpoint import checkpoint_origin, load_checkpoint
    from train.evaluate import run_split
    from train.models import model_from_checkpoint
    ckpt = load_checkpoint(wav_model / "run" / "best.pt")
    assert ckpt["data"]["frontend"]["channels"] == 700
    split = eval_set_for(checkpoint_origin(ckpt), str(wav_model / "w_test.h5")).samples
    float_pred = run_split(model_from_checkpoint(ckpt), split)["pred"]
    fast = json.loads(run_cli("simulate", wav_model / "net.h5", "--data", wav_model / "w_test.h5", "--engine", "fast",
                              "--json", "--quiet").stdout)["pred"]
    files = [str(recordings / n) for n in sorted(PICK)]
    plot = tmp_path / "p.png"
    r = json.loads(run_cli("infer", wav_model / "run" / "best.pt", *files, "--json", "--plot", plot).stdout)
    assert [x["class_index"] for x in r["recordings"]] == float_pred.tolist()
    assert (tmp_path / "p_0.png").read_bytes()[:4] == b"\x89PNG" and len(list(tmp_path.glob("p_*.png"))) == 6
    net = json.loads(run_cli("infer", wav_model / "net.h5", *files, "--json").stdout)
    assert [x["class_index"] for x in net["recordings"]] == fast
    assert all(x["loihi_ops_per_step"] > 0 and x["input_events"] > 0 for x in net["recordings"])
    assert sum(x["spikes"][0] for x in net["recordings"]) > 0


@needs_wav
def test_infer_refuses_a_model_without_front_end_and_bad_input(wav_model, tmp_path):
    from train.trainer import config_from_options, train
    run = tmp_path / "b"
    train(config_from_options(model="lif", layers=1, hidden=8, epochs=1, bin_hz=25, batch=32), run, progress=False)
    rec = str(WAV / PICK[0])
    assert "no recorded front end" in one_line_error(run_cli("infer", run / "best.pt", rec))
    assert "no such model" in one_line_error(run_cli("infer", tmp_path / "none.pt", rec))
    assert "not a readable wav file" in one_line_error(run_cli("infer", wav_model / "run" / "best.pt", tmp_path))
    assert "export the checkpoint first" in one_line_error(run_cli("infer", wav_model / "run" / "best.pt", rec,
                                                                   "--engine", "lava"))


def test_infer_plot_goes_through_the_output_check(tone_model, tmp_path):
    """--plot never replaces an input (the checkpoint, the recording, a network file), nor an existing figure
    without --force; with several recordings every figure is checked before anything is written."""
    run = tmp_path / "run"
    shutil.copytree(tone_model / "run", run)
    rec = shutil.copy(tone_model / "wav" / "1_ann_0.wav", tmp_path / "1_ann_0.wav")
    os.chmod(rec, 0o444)
    keep = {p: p.read_bytes() for p in (run / "best.pt", rec)}
    png = tmp_path / "p.png"
    png.write_bytes(b"precious")
    assert "exists; pass --force" in one_line_error(run_cli("infer", run / "best.pt", rec, "--plot", png))
    assert png.read_bytes() == b"precious"
    (tmp_path / "net.h5").write_bytes(b"a network")
    for target in (run / "best.pt", rec, tmp_path / "net.h5"):
        assert "name a .png file" in one_line_error(run_cli("infer", run / "best.pt", rec, "--plot", target))
        assert "name a .png file" in one_line_error(run_cli("infer", run / "best.pt", rec, "--plot", target, "--force"))
    assert (tmp_path / "net.h5").read_bytes() == b"a network"
    (tmp_path / "q_1.png").write_bytes(b"precious")
    line = one_line_error(run_cli("infer", run / "best.pt", rec, rec, "--plot", tmp_path / "q.png"))
    assert "q_1.png: exists" in line and not (tmp_path / "q_0.png").exists()
    assert all(p.read_bytes() == b for p, b in keep.items())
    res = run_cli("infer", run / "best.pt", rec, "--plot", png, "--force")
    assert res.exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG", res.output


def test_infer_refuses_a_long_recording_an_imported_model_and_an_old_front_end(tone_model, tmp_path):
    import nir

    from train.checkpoint import load_checkpoint, save_checkpoint
    rec = tone(tmp_path / "1_ann_9.wav", 500, seconds=10.5)
    assert "10.5 s long; recordings longer than 10 s are refused" in one_line_error(
        run_cli("infer", tone_model / "run" / "best.pt", rec))
    short = tone_model / "wav" / "1_ann_0.wav"
    graph = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}),
                                "w": nir.Linear(weight=np.ones((2, 3))),
                                "lif": nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2),
                                               v_threshold=np.ones(2)),
                                "out": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("in", "w"), ("w", "lif"), ("lif", "out")])
    nir.write(tmp_path / "g.nir", graph)
    assert run_cli("import-nir", tmp_path / "g.nir", "--out", tmp_path / "imported", "--dt", 1e-4).exit_code == 0
    assert "no recorded front end" in one_line_error(run_cli("infer", tmp_path / "imported" / "best.pt", short))
    old = load_checkpoint(tone_model / "run" / "best.pt")
    old["data"]["frontend"]["version"] = 1
    save_checkpoint(tmp_path / "old.pt", {k: v for k, v in old.items() if k not in ("format", "version", "path")})
    line = one_line_error(run_cli("infer", tmp_path / "old.pt", short))
    assert "old.pt: recorded front end version 1" in line and "convert the recordings again" in line


def test_speed_perturbation_plays_each_recording_faster_and_higher(tmp_path):
    """One sample per factor, same label and speaker; 1.1 is shorter by 1.1 and its tone sits in higher channels."""
    rate = 8000
    t = np.arange(int(0.5 * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 500 * t) * np.hanning(len(t)) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "3_amy_0.wav", rate, tone)
    r = convert([str(tmp_path / "3_amy_0.wav")], tmp_path / "sp.h5", speeds=[1.0, 1.1], workers=1, progress=False)
    assert r["samples"] == 2 and r["files"] == 1
    s = read_shd(tmp_path / "sp.h5")
    import h5py
    with h5py.File(tmp_path / "sp.h5") as h5:
        assert np.allclose(h5["extra/speed"][()], [1.0, 1.1])
    assert s.labels.tolist() == [3, 3] and s.speakers.tolist() == [0, 0]
    (t0, u0), (t1, u1) = s.sample(0), s.sample(1)
    assert t1.max() == pytest.approx(t0.max() / 1.1, rel=0.05)
    assert np.median(u1) > np.median(u0)
    with pytest.raises(Exception, match="--speed"):
        convert([str(tmp_path / "3_amy_0.wav")], tmp_path / "bad.h5", speeds=[0.1], workers=1, progress=False)
