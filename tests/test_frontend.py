"""From recordings to spikes (`data convert`) and to an answer (`infer`): the front end on real recordings, bad
files, and infer agreeing with eval and simulate on the same converted recording."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from scipy.io import wavfile

from audio.convert import convert
from audio.frontend import Frontend, frontend_of_file, read_wav, spikes_of
from audio.spike_files import read_das, read_shd
from conftest import SHARED_DATA, one_line_error, run_cli

WAV = SHARED_DATA / "fsdd-wav"
pytestmark = pytest.mark.skipif(not WAV.exists(), reason="../shared/data/fsdd-wav not present")
PICK = ["0_george_5.wav", "3_jackson_7.wav", "5_lucas_9.wav", "7_nicolas_6.wav", "9_yweweler_8.wav", "2_george_12.wav"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    for name in PICK:
        shutil.copy(WAV / name, d / name)
    return d


def test_convert_real_recordings_both_layouts(recordings, tmp_path):
    r = convert([str(recordings)], tmp_path / "a.h5", workers=2, progress=False)
    s = read_shd(tmp_path / "a.h5")
    assert len(s) == 6 and s.n_channels == 700 and int(s.units.max()) < 700 and int(s.units.min()) >= 0
    assert [s.class_names[l] for l in s.labels] == [n.split("_")[0] for n in sorted(PICK)]
    assert [s.speaker_name(int(k)) for k in s.speakers] == [n.split("_")[1] for n in sorted(PICK)]
    assert s.class_names == [str(k) for k in range(10)]
    seconds = np.array([len(read_wav(recordings / n, 8000)) / 8000 for n in sorted(PICK)])
    per_channel_rate = s.counts() / seconds / 700
    assert np.all((per_channel_rate > 1) & (per_channel_rate < 100)), per_channel_rate  # spikes/s per channel, sane
    assert np.all(np.diff(s.times[s.offsets[0]:s.offsets[1]]) >= 0) and s.times.max() <= seconds.max() + 1e-3
    assert frontend_of_file(tmp_path / "a.h5") == Frontend()
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


def test_bad_recordings_are_one_line_errors_and_leave_no_output(recordings, tmp_path):
    good = tmp_path / "1_ann_0.wav"
    shutil.copy(recordings / PICK[0], good)
    corrupt = tmp_path / "2_ann_1.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    empty = tmp_path / "3_ann_2.wav"
    wavfile.write(empty, 8000, np.zeros(0, dtype=np.int16))
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    odd = tmp_path / "recording.wav"
    shutil.copy(recordings / PICK[0], odd)
    cases = [(corrupt, "2_ann_1.wav: not a readable wav file"), (empty, "3_ann_2.wav: the recording is empty"),
             (text, "notes.txt: not a .wav file"), (odd, "recording.wav: the name does not match the label pattern")]
    for bad, message in cases:
        out = tmp_path / "out.h5"
        line = one_line_error(run_cli("data", "convert", good, bad, "--out", out, "--quiet"))
        assert message in line, line
        assert not out.exists() and not list(tmp_path.glob(".out.h5*"))
    assert "--include" in one_line_error(run_cli("data", "convert", good, "--include", "nomatch", "--out",
                                                 tmp_path / "o.h5"))


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
    assert all(x["loihi_ops_per_step"] > 0 and x["spikes"][0] >= 0 for x in net["recordings"])


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
