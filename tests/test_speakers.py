"""Voices the model never heard: the speaker-held-out protocol, leave-one-speaker-out cross-validation,
evaluation on any file, and the recipe options (off: the study's weights exactly)."""
import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from audio.binning import Augment, BinSpec, augment_events
from audio.datasets import find_source, load_dataset, read_pool
from audio.speakers import present_speakers, resolve_speaker, speaker_split
from audio.spike_files import concat, read_shd
from common.errors import InputError
from conftest import SHARED_DATA, one_line_error, run_cli, write_das_file, write_shd_file
from train import trainer
from train.checkpoint import load_checkpoint
from train.models import MODEL_KINDS
from train.recipe import RECIPES, Recipe, make_recipe
from train.stats import format_summary, mean_ci, summarize
from train.trainer import config_from_options, train

FSDD_SHD = SHARED_DATA / "fsdd-shd"
FSDD_DAS = SHARED_DATA / "fsdd-das" / "fsdd-das.hdf5"
TINY = dict(model="cuba-lif", layers=1, hidden=16, bin_hz=25, batch=16, data="builtin")


def _names(s, index=None) -> set[str]:
    return {s.speaker_name(int(k)) for k in (s.speakers if index is None else s.speakers[index])}


# ---- the protocol ---------------------------------------------------------------------------

@pytest.mark.parametrize("valid", ["auto", "random", "speaker1"])
def test_held_out_speaker_never_in_training_or_validation_builtin(valid):
    pool = read_pool(find_source("builtin"), 700)
    assert present_speakers(pool) == [f"speaker{k}" for k in range(5)]  # four in the train file, one in test
    train, va, test, protocol = speaker_split(pool, "speaker2", valid, 0.1, seed=0)
    assert _names(test) == {"speaker2"} and len(test) == int(np.sum(pool.speakers == 2))
    assert "speaker2" not in _names(train) | _names(va)
    assert len(train) + len(va) + len(test) == len(pool)
    if valid == "random":
        assert _names(va) <= _names(train) and protocol["valid_speaker"] == "random"
    else:
        expected = "speaker3" if valid == "auto" else "speaker1"  # auto: the next speaker by name
        assert _names(va) == {expected} and expected not in _names(train)
        assert protocol["valid_speaker"] == expected
    assert protocol["test_speaker"] == "speaker2"


@pytest.mark.skipif(not FSDD_SHD.exists(), reason="../shared/data/fsdd-shd not present")
def test_held_out_speaker_real_data_both_layouts():
    pool = read_pool(find_source(str(FSDD_SHD)), 700)
    assert present_speakers(pool) == ["george", "jackson", "lucas", "nicolas", "yweweler"]  # 'theo' has no samples
    assert resolve_speaker(pool, "5") == "yweweler" and resolve_speaker(pool, "GEORGE") == "george"  # file id, any case
    train, va, test, _ = speaker_split(pool, "lucas", "auto", 0.1, 0)
    assert (len(train), len(va), len(test)) == (1500, 500, 500)  # takes of both files pooled
    assert _names(test) == {"lucas"} and _names(va) == {"nicolas"} and "lucas" not in _names(train)
    ds = load_dataset(str(FSDD_SHD), holdout_speaker="lucas")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1500, 500, 500)
    assert ds.protocol["train_speakers"] == ["george", "jackson", "yweweler"]
    das = read_pool(find_source(str(FSDD_DAS)), 64)
    train, va, test, _ = speaker_split(das, "george", "random", 0.2, 0)
    assert _names(test) == {"george"} and "george" not in _names(train) | _names(va) and len(test) == 500


def test_speaker_errors(tmp_path):
    no_ids = write_shd_file(tmp_path / "x_train.h5", [[0.1]] * 4, [[1]] * 4, [0, 1, 0, 1], ["a", "b"])
    write_shd_file(tmp_path / "x_test.h5", [[0.1]] * 2, [[1]] * 2, [0, 1], ["a", "b"])
    with pytest.raises(InputError, match=rf"{no_ids}, .*x_test.h5: has no speaker ids"):
        load_dataset(str(no_ids), holdout_speaker="0")
    one = write_shd_file(tmp_path / "y.h5", [[0.1]] * 4, [[1]] * 4, [0, 1, 0, 1], ["a", "b"], speakers=[3] * 4)
    with pytest.raises(InputError, match="only one speaker"):
        load_dataset(str(one), holdout_speaker="3")
    with pytest.raises(InputError, match=r"no such speaker .* \(speakers: speaker0, speaker1"):
        load_dataset("builtin", holdout_speaker="nobody")
    with pytest.raises(InputError, match="is the held-out test speaker"):
        load_dataset("builtin", holdout_speaker="speaker1", valid_speaker="speaker1")
    line = one_line_error(run_cli("train", "--model", "lif", "--data", str(no_ids), "--holdout-speaker", "0",
                                  "--out", tmp_path / "r"))
    assert str(no_ids) in line and "speaker" in line


def test_concat_matches_speakers_by_name(tmp_path):
    """Two files that number the same speakers differently: pooled, each sample keeps its speaker's name."""
    a = tmp_path / "a.h5"
    write_shd_file(a, [[0.1], [0.2]], [[1], [2]], [0, 1], ["x", "y"], speakers=[0, 1])
    b = tmp_path / "b.h5"
    write_shd_file(b, [[0.3], [0.4]], [[3], [4]], [1, 0], ["x", "y"], speakers=[1, 0])
    import h5py
    for path, names in ((a, [b"ann", b"bob"]), (b, [b"bob", b"cid"])):
        with h5py.File(path, "r+") as f:
            f.create_dataset("extra/speaker_names", data=np.array(names))
    pool = concat([read_shd(a), read_shd(b)], "pool")
    assert [pool.speaker_name(int(k)) for k in pool.speakers] == ["ann", "bob", "cid", "bob"]
    assert pool.offsets.tolist() == [0, 1, 2, 3, 4] and pool.units.tolist() == [1, 2, 3, 4]


# ---- training and cross-validation ------------------------------------------------------------

def test_train_holdout_speaker_records_protocol_and_eval_reuses_it(tmp_path):
    summary = train(config_from_options(epochs=2, holdout_speaker="speaker4", **TINY), tmp_path / "h", progress=False)
    assert summary["protocol"]["test_speaker"] == "speaker4" and summary["test_samples"] == 60
    assert summary["protocol"]["valid_speaker"] == "speaker0"
    r = json.loads(run_cli("eval", tmp_path / "h", "--json").stdout)
    assert r["samples"] == 60 and "held-out speaker 'speaker4'" in r["evaluated_on"]
    assert r["accuracy"] == pytest.approx(summary["test_acc"])


def test_cross_validation_tiny_builtin(tmp_path):
    out = tmp_path / "cv"
    res = run_cli("cv", "--by", "speaker", "--model", "lif", "--layers", "1", "--hidden", "8", "--bin-hz", "25",
                  "--batch", "32", "--epochs", "1", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    folds = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folds == [f"speaker{k}" for k in range(5)]
    accs = [json.loads((out / f / "seed0" / "summary.json").read_text())["test_acc"] for f in folds]
    mean, half = mean_ci(accs)
    assert f"{100 * mean:.2f} +- {100 * half:.2f} %" in res.output  # mean +- 95 % CI over the 5 folds
    assert "cross-validation (leave-one-speaker-out)" in res.output and res.output.count("speaker") >= 6
    # an interrupted fold (no summary yet) is resumed, finished ones are kept as they are
    stamp = (out / "speaker0" / "seed0" / "best.pt").stat().st_mtime_ns
    (out / "speaker3" / "seed0" / "summary.json").unlink()
    again = run_cli("cv", "--resume", out, "--quiet")
    assert again.exit_code == 0, again.output
    assert (out / "speaker3" / "seed0" / "summary.json").exists()
    assert (out / "speaker0" / "seed0" / "best.pt").stat().st_mtime_ns == stamp
    other = run_cli("cv", "--model", "cuba-lif", "--layers", "1", "--hidden", "8", "--epochs", "1", "--out", out)
    assert "holds a cross-validation with other settings (model" in one_line_error(other)


def test_summary_held_out_ci_over_folds(tmp_path):
    """Seeds are averaged within a fold first; the CI is over folds (the folds of a cross-validation: cv.json)."""
    (tmp_path / "cv.json").write_text("{}")
    rows = {("a", 0): 0.5, ("a", 1): 0.7, ("b", 0): 0.9, ("c", 0): 0.8}
    for (speaker, seed), acc in rows.items():
        d = tmp_path / speaker / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({
            "model": "lif", "layers": 1, "hidden": 8, "data": "x", "seed": seed, "epochs": 3, "test_acc": acc,
            "recipe": "study", "protocol": {"kind": "speaker-held-out", "test_speaker": speaker}}))
    (row,) = summarize([str(tmp_path)])
    mean, half = mean_ci([0.6, 0.9, 0.8])
    assert row["folds"] == 3 and row["test_acc_mean"] == pytest.approx(mean) and row["test_acc_ci95"] == pytest.approx(half)
    assert "a 60.0, b 90.0, c 80.0" in format_summary([row])


# ---- evaluation on any file ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, _builtin_cache_dir):
    run = tmp_path_factory.mktemp("tiny") / "run"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        train(config_from_options(epochs=3, **TINY), run, progress=False)
    return run


def test_eval_simulate_compare_on_a_file_with_any_name(tiny_run, tmp_path, _builtin_cache_dir):
    mine = tmp_path / "my recordings (final).h5"
    shutil.copy(find_source("builtin").files["test"], mine)
    whole = json.loads(run_cli("eval", tiny_run, "--json").stdout)
    r = json.loads(run_cli("eval", tiny_run, "--data", mine, "--json").stdout)
    assert r["split"] == "file" and r["samples"] == 60 and r["accuracy"] == whole["accuracy"]
    assert "all 60 samples of my recordings (final).h5" in r["evaluated_on"]
    limited = run_cli("eval", tiny_run, "--data", mine, "--limit", "7")
    assert "7 of them spread over the classes" in limited.output, limited.output
    assert run_cli("export", tiny_run / "best.pt", "--out", tmp_path / "n.h5").exit_code == 0
    sim = json.loads(run_cli("simulate", tmp_path / "n.h5", "--data", mine, "--engine", "fast", "--json",
                             "--quiet").stdout)
    assert sim["samples"] == sim["split_samples"] == 60
    cmp = run_cli("compare", tmp_path / "n.h5", "--data", mine, "--limit", "2", "--quiet")
    assert cmp.exit_code == 0 and "all 60 samples of my recordings (final).h5" in cmp.output, cmp.output


def test_eval_wrong_channel_count_is_one_line(tiny_run, tmp_path):
    das = write_das_file(tmp_path / "digits.hdf5", {"train": {"ab01-1a": ([0.1, 0.2], [3, 4])},
                                                   "test": {"ab02-2a": ([0.1], [5])}})
    line = one_line_error(run_cli("eval", tiny_run, "--data", das))
    assert "digits.hdf5" in line and "64 channels" in line and "takes 700" in line
    wide = write_shd_file(tmp_path / "wide.h5", [[0.1]], [[900]], [0], ["rise"])
    line = one_line_error(run_cli("eval", tiny_run, "--data", wide))
    assert "wide.h5" in line and "channel id 900" in line


# ---- the recipe ---------------------------------------------------------------------------------

def _weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["state_dict"]


def test_recipe_options_off_reproduce_the_study_weights(tmp_path):
    """Every named recipe with each of its fields set back to the study's value trains the study's weights bit for
    bit (no option draws a random number or changes a step when it is off)."""
    base = dict(epochs=2, seed=5, **TINY)
    train(config_from_options(recipe_name="study", **base), tmp_path / "study", progress=False)
    a = _weights(tmp_path / "study")
    off = {f.name: f.default for f in fields(Recipe) if f.name != "name"}
    off["decay_range"] = (off.pop("decay_min"), off.pop("decay_max"))
    for name in RECIPES:
        train(config_from_options(recipe_name=name, **off, **base), tmp_path / f"{name}-off", progress=False)
        b = _weights(tmp_path / f"{name}-off")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    train(config_from_options(recipe_name="blend", **base), tmp_path / "on", progress=False)
    c = _weights(tmp_path / "on")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_with_every_augmentation_on_gives_uninterrupted_weights(tmp_path):
    cfg = dict(seed=2, recipe_name="unseen", rate_reg=0.1, spectral_tilt=0.3, label_smoothing=0.1, **TINY)
    train(config_from_options(epochs=3, **cfg), tmp_path / "straight", progress=False)
    train(config_from_options(epochs=1, **cfg), tmp_path / "resumed", progress=False)
    torch.manual_seed(999)  # whatever ran before, the resumed epochs draw their own masks
    trainer.resume_runs(tmp_path / "resumed", epochs=3, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_keeping_its_last_epoch_made_from_one_keeping_its_best_equals_one_trained_so(tmp_path):
    """regular-last trains regular's weights; keep_last_of makes its run from regular's without training, and that
    run, once scored, is the one trained with regular-last: same kept weights, same summary."""
    base = dict(epochs=4, seed=3, **TINY)
    trained = train(config_from_options(recipe_name="regular-last", **base), tmp_path / "trained", progress=False)
    best_kept = train(config_from_options(recipe_name="regular", **base), tmp_path / "regular", progress=False)
    kept = load_checkpoint(tmp_path / "trained" / "best.pt")
    assert kept["epoch"] == 4 and trained["best_epoch"] == 4
    assert trained["best_valid_acc"] == kept["history"][-1]["valid_acc"]
    assert best_kept["best_valid_acc"] == max(h["valid_acc"] for h in kept["history"])
    assert best_kept["best_epoch"] < 4  # so that keeping the last epoch is a different run here

    trainer.keep_last_of(tmp_path / "regular", tmp_path / "derived", make_recipe("regular-last"))
    derived = trainer.resume_runs(tmp_path / "derived", progress=False)[0]
    a, b = kept["state_dict"], load_checkpoint(tmp_path / "derived" / "best.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    same = ("best_epoch", "best_valid_acc", "test_acc", "recipe", "epochs", "split_speakers")
    assert {k: derived[k] for k in same} == {k: trained[k] for k in same}
    assert (json.loads((tmp_path / "derived" / "config.json").read_text())
            == json.loads((tmp_path / "trained" / "config.json").read_text()))

    with pytest.raises(InputError, match="exists"):  # never over a run
        trainer.keep_last_of(tmp_path / "regular", tmp_path / "derived", make_recipe("regular-last"))
    with pytest.raises(InputError, match="not regular-last keeping its best"):  # another recipe trained otherwise
        trainer.keep_last_of(tmp_path / "trained", tmp_path / "other", make_recipe("regular-last"))
    train(config_from_options(recipe_name="study", **dict(base, epochs=1)), tmp_path / "study", progress=False)
    with pytest.raises(InputError, match="not regular-last keeping its best"):
        trainer.keep_last_of(tmp_path / "study", tmp_path / "other", make_recipe("regular-last"))
    assert not (tmp_path / "other").exists()


def test_weight_average_is_the_mean_of_the_steps_it_covers_and_survives_an_interruption(tmp_path, monkeypatch):
    """regular-avg's kept weights are the mean of the weights after each step of its last half (one step per epoch
    here, so the mean of epochs 3 and 4 of 4); a run stopped inside the window goes on to the same weights."""
    base = dict(epochs=4, seed=1, **dict(TINY, batch=10_000))
    straight = train(config_from_options(recipe_name="regular-avg", **base), tmp_path / "straight", progress=False)
    save = trainer.save_checkpoint

    def stop_after_epoch_3(path, payload):
        save(path, payload)
        if payload["epoch"] == 3 and Path(path).name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", stop_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(config_from_options(recipe_name="regular-avg", **base), tmp_path / "stopped", progress=False)
    monkeypatch.undo()
    at3 = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert at3["average_count"] == 1 and all(torch.equal(at3["state_dict"][k], at3["trained_state_dict"][k])
                                             for k in at3["state_dict"])
    resumed = trainer.resume_runs(tmp_path / "stopped", progress=False)[0]
    a, b = (load_checkpoint(tmp_path / d / "best.pt") for d in ("straight", "stopped"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert resumed["test_acc"] == straight["test_acc"] and a["average_count"] == 2 and a["epoch"] == 4
    w3, w4 = at3["trained_state_dict"], a["trained_state_dict"]
    for k, v in a["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v, (w3[k] + w4[k]) / 2, atol=1e-7), k
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)  # the two steps' weights differ: the mean is not either


def test_an_averaging_run_trained_on_to_more_epochs_averages_the_new_window_or_refuses(tmp_path):
    base = dict(seed=1, recipe_name="regular-avg", **dict(TINY, batch=10_000))
    train(config_from_options(epochs=2, **base), tmp_path / "run", progress=False)  # averages epoch 2 of 2
    trainer.resume_runs(tmp_path / "run", epochs=6, progress=False)  # 6 epochs average 4 to 6: ahead, a fresh mean
    assert load_checkpoint(tmp_path / "run" / "best.pt")["average_count"] == 3
    with pytest.raises(InputError, match="averaged from epoch 4 on; 8 epochs would average from epoch 5"):
        trainer.resume_runs(tmp_path / "run", epochs=8, progress=False)


def test_recipe_validation_and_help():
    assert make_recipe("unseen", dropout=0.0).dropout == 0.0 and make_recipe().name == "study"
    for bad in (dict(dropout=1.0), dict(time_stretch=1.0), dict(channel_shift=-1), dict(lr_schedule="step"),
                dict(weight_decay=-1e-3)):
        with pytest.raises(InputError):
            make_recipe(**bad)
    assert Recipe().describe() == "the study's, no additions"
    res = run_cli("train", "--help")
    assert "unseen:" in res.output and "study:" in res.output


def test_each_model_trains_with_the_recipe_the_nested_studies_chose_unless_told(tmp_path):
    """Cuba-LIF defaults to `regular`, SpikGRU to `regular-last` (each chosen on both layouts), the others to the
    study's; --recipe wins; a training says which it uses."""
    assert {m: make_recipe(model=m).name for m in MODEL_KINDS} == {
        "lif": "study", "cuba-lif": "regular", "spikgru": "regular-last", "rnn": "study", "gru": "study"}
    assert config_from_options(**TINY).recipe == make_recipe("regular").as_dict()
    assert config_from_options(recipe_name="study", **TINY).recipe == Recipe().as_dict()
    assert config_from_options(**dict(TINY, model="gru")).recipe == Recipe().as_dict()
    help_text = " ".join(run_cli("train", "--help").output.split())
    assert "Default per model: lif study, cuba-lif regular, spikgru regular-last, rnn study, gru study" in help_text
    res = run_cli("train", "--model", "cuba-lif", "--layers", "1", "--hidden", "8", "--bin-hz", "25", "--epochs", "1",
                  "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "recipe: regular (dropout=0.2, weight_decay=0.01, lr_schedule=cosine" in res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]["name"] == "regular"


def _events(n_samples=3, C=100, T=50, per=400, seed=0):
    rng = np.random.default_rng(seed)
    step = rng.integers(0, T, n_samples * per)
    ch = rng.integers(10, C - 10, n_samples * per)
    owner = np.repeat(np.arange(n_samples), per)
    return step * C + ch, owner, BinSpec(T / 1.0, 1.0, C)


def test_channel_shift_moves_a_whole_sample_together():
    flat, owner, spec = _events()
    f2, o2 = augment_events(flat, owner, 3, spec, Augment(channel_shift=8), np.random.default_rng(1))
    assert np.array_equal(o2, owner)  # all channels stay in range: nothing dropped
    for b in range(3):
        d = (f2[o2 == b] % 100) - (flat[owner == b] % 100)
        assert len(set(d.tolist())) == 1 and abs(int(d[0])) <= 8
        assert np.array_equal(f2[o2 == b] // 100, flat[owner == b] // 100)  # time untouched


def test_time_stretch_keeps_channels_and_scales_time():
    flat, owner, spec = _events(per=4000)
    f2, o2 = augment_events(flat, owner, 3, spec, Augment(time_stretch=0.3), np.random.default_rng(2))
    ratios = []
    for b in range(3):
        before, after = flat[owner == b], f2[o2 == b]
        kept = np.bincount(after % 100, minlength=100)
        assert np.all(kept <= np.bincount(before % 100, minlength=100))  # channels kept, events only cut at the end
        assert np.all(after // 100 < 50)
        ratios.append((after // 100).mean() / (before // 100 + 0.5).mean())
    assert all(0.69 < r < 1.31 for r in ratios) and max(ratios) - min(ratios) > 0.01  # one factor per sample


def test_event_drop_and_spectral_tilt_only_remove_events():
    flat, owner, spec = _events(per=20000)
    f2, _ = augment_events(flat, owner, 3, spec, Augment(event_drop=0.25), np.random.default_rng(3))
    assert abs(len(f2) / len(flat) - 0.75) < 0.01
    f3, o3 = augment_events(flat, owner, 3, spec, Augment(spectral_tilt=0.8), np.random.default_rng(3))
    assert len(f3) < len(flat) and set(f3.tolist()) <= set(flat.tolist())
    slopes = np.random.default_rng(3).uniform(-0.8, 0.8, size=3)  # the tilt's first draw: one slope per sample
    assert (slopes > 0).any() and (slopes < 0).any()
    for b, slope in enumerate(slopes):  # a positive slope drops the high end, a negative one the low end
        before, after = np.bincount(flat[owner == b] % 100, minlength=100), np.bincount(f3[o3 == b] % 100, minlength=100)
        kept_lo, kept_hi = after[:30].sum() / before[:30].sum(), after[70:].sum() / before[70:].sum()
        x_lo, x_hi = np.mean(np.arange(10, 30)) / 99, np.mean(np.arange(70, 90)) / 99  # channels sit in 10..89
        if slope < 0:  # positions counted from the high end
            x_lo, x_hi = 1 - x_lo, 1 - x_hi
        assert kept_lo == pytest.approx(1 - abs(slope) * x_lo, abs=0.03)
        assert kept_hi == pytest.approx(1 - abs(slope) * x_hi, abs=0.03)


def _lines(n_per_class=6, C=60, T=40, seed=0):
    """Class 0: a horizontal line (one channel, many steps); class 1: a vertical one (one step, many channels)."""
    from audio.binning import BinnedSet
    rng = np.random.default_rng(seed)
    flats, labels = [], []
    for label in (0, 1):
        for k in range(n_per_class):
            if label == 0:
                flats.append(np.sort(rng.choice(T, 20, replace=False)) * C + 5 + 7 * k)
            else:
                flats.append((3 + 5 * k) * C + np.sort(rng.choice(C, 20, replace=False)))
            labels.append(label)
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in flats])])
    return BinnedSet(np.concatenate(flats).astype(np.int32), offsets, np.array(labels), BinSpec(T, 1.0, C), ["h", "v"])


def test_blend_mixes_only_samples_of_one_class_aligned_on_their_centres():
    split = _lines()
    C, T = split.spec.n_channels, split.spec.n_steps
    index = np.arange(len(split))
    x = split.dense(index, rng=np.random.default_rng(3), augment=Augment(blend=1.0))
    assert x.shape == (12, T, C) and float(x.min()) >= 0
    changed = 0
    for b, label in enumerate(split.labels):
        steps, channels = np.nonzero(x[b].numpy())
        own = split.flat[split.offsets[b]:split.offsets[b + 1]]
        if label == 0:  # a horizontal partner lands on the sample's own channel: still one channel
            assert set(channels.tolist()) == {int(own[0] % C)}
            changed += not set(steps.tolist()) <= set((own // C).tolist())
        else:
            assert set(steps.tolist()) == {int(own[0] // C)}
            changed += not set(channels.tolist()) <= set((own % C).tolist())
        assert x[b].sum() <= 2 * len(own)
    assert changed >= 10  # partners' events are really there
    # labels never change, counts stay near the pair's mean over many draws
    total = sum(float(split.dense(index, rng=np.random.default_rng(s), augment=Augment(blend=1.0)).sum())
                for s in range(20))
    assert abs(total / 20 - 12 * 20) < 12 * 20 * 0.05
    batches = list(split.batches(5, shuffle=True, rng=np.random.default_rng(0), augment=Augment(blend=0.5)))
    order = np.random.default_rng(0).permutation(12)
    assert np.array_equal(np.concatenate([y.numpy() for _, y in batches]), split.labels[order])


def test_blend_off_draws_nothing_and_a_share_means_the_same_on_any_layout():
    split = _lines()
    a = split.dense(np.arange(12), rng=np.random.default_rng(1), augment=Augment(jitter_sigma=1.0))
    b = split.dense(np.arange(12), rng=np.random.default_rng(1), augment=Augment(jitter_sigma=1.0, blend=0.0))
    assert torch.equal(a, b)
    unseen = make_recipe("unseen")
    assert unseen.shift_channels(700) == 24 and unseen.shift_channels(64) == 2  # 24 of 700 is 2 of 64
    assert make_recipe(channel_shift_share=0.1).shift_channels(64) == 6
    assert make_recipe(channel_shift=5).shift_channels(64) == 5
    with pytest.raises(InputError, match="one way"):
        make_recipe(channel_shift=5, channel_shift_share=0.1)
    for bad in (dict(blend=1.0), dict(loss="sum"), dict(decay_min=0.9, decay_max=0.5), dict(rate_target=-1.0)):
        with pytest.raises(InputError):
            make_recipe(**bad)


def test_losses_agree_with_their_definitions():
    from train.loss import ce_mean_loss, readout_loss, softmax_mean_loss
    out = torch.randn(3, 5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1])
    p = torch.softmax(out, dim=2).mean(dim=1)
    assert torch.allclose(softmax_mean_loss(out, y), -torch.log(p[torch.arange(3), y]).mean())
    steps = [torch.nn.functional.cross_entropy(out[:, t], y) for t in range(5)]
    assert torch.allclose(ce_mean_loss(out, y), torch.stack(steps).mean())
    assert torch.allclose(readout_loss(out, y), torch.nn.functional.cross_entropy(out.max(dim=1).values, y))
    smooth = softmax_mean_loss(out, y, 0.1)
    assert torch.allclose(smooth, (0.9 * -torch.log(p[torch.arange(3), y]) - 0.1 * torch.log(p).mean(1)).mean())


def test_held_out_speakers_together_are_scored_apart(tmp_path):
    cfg = config_from_options(holdout_speaker="speaker1,speaker3", valid_speaker="random", epochs=1, **TINY)
    s = train(cfg, tmp_path / "two", progress=False)
    assert s["protocol"]["test_speakers"] == ["speaker1", "speaker3"]
    assert set(s["test_acc_by_speaker"]) == {"speaker1", "speaker3"}
    assert s["split_speakers"]["test"] == ["speaker1", "speaker3"]
    assert not {"speaker1", "speaker3"} & set(s["split_speakers"]["train"] + s["split_speakers"]["valid"])
    n1, n3 = 60, 60  # builtin: 60 samples per speaker
    assert s["test_acc"] == pytest.approx((s["test_acc_by_speaker"]["speaker1"] * n1
                                           + s["test_acc_by_speaker"]["speaker3"] * n3) / (n1 + n3))


def test_rate_target_penalises_each_neuron_and_decay_range_bounds_hidden_decays():
    from train.models import ModelConfig, build_model
    from train.trainer import _rate_penalty
    h = torch.zeros(2, 3, 4)
    h[:, :, 0] = 1.0  # one saturated neuron, three silent ones
    assert float(_rate_penalty([h])) == pytest.approx(0.25)
    assert float(_rate_penalty([h], 0.5)) == pytest.approx(0.25)  # (0.5^2 + 3 x 0.5^2) / 4
    assert float(_rate_penalty([h], 0.25)) == pytest.approx((0.75 ** 2 + 3 * 0.25 ** 2) / 4)
    model = build_model(ModelConfig("cuba-lif", 10, 3, 1, 4))
    with torch.no_grad():
        for p in (model.hidden_layers[0].alpha, model.hidden_layers[0].beta, model.readout.beta):
            p.copy_(torch.tensor([0.1, 0.99, 0.7, 1.5][:p.numel()]))
    model.clamp_(0.5, 0.98)
    assert model.hidden_layers[0].alpha.tolist() == pytest.approx([0.5, 0.98, 0.7, 0.98])
    assert model.readout.beta.tolist() == pytest.approx([0.1, 0.99, 0.7])  # the readout keeps [0, 1]


def test_quiet_penalty_reaches_the_weights_of_a_latched_set():
    """Two neurons exciting each other fire every step after the input stops; their spikes' surrogate gradient is zero
    so far above threshold, but the drive term's gradient lowers exactly their mutual weights."""
    from train.models import ModelConfig, build_model
    from train.trainer import quiet_penalty
    model = build_model(ModelConfig("cuba-lif", 3, 2, 1, 3, {"lava_cuba": True, "shared_readout_decay": True}))
    layer = model.hidden_layers[0]
    with torch.no_grad():
        layer.W.zero_()
        layer.W[0, 0] = layer.W[1, 0] = 5.0
        layer.U.copy_(torch.tensor([[0.0, 3.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        layer.b.fill_(-0.5)
    x = torch.zeros(1, 30, 3)
    x[0, :3, 0] = 1.0
    out, hidden = model(x, return_hidden=True)
    assert hidden[0][0, 20:, :2].min() == 1 and hidden[0][0, 20:, 2].max() == 0  # latched on, third neuron silent
    penalty = quiet_penalty(model, hidden, 10)
    penalty.backward()
    g = layer.U.grad
    assert g[0, 1] > 0 and g[1, 0] > 0 and float(g[2].abs().sum()) == 0.0
    assert layer.b.grad[0] > 0 and layer.b.grad[1] > 0


def test_speed_copies_train_and_never_test_or_validate(tmp_path):
    """A pool with `data convert --speed` copies (extra/speed, extra/recording): the held-out speaker is scored on
    its recordings at their own speed; a validation recording's copies leave training; a validation speaker's
    copies are in neither split."""
    import h5py
    times, units, labels, speakers, speed, recording = [], [], [], [], [], []
    for r in range(24):  # 24 recordings, 3 speakers x 2 classes x 4 takes, each at 0.9, 1.0 and 1.1
        for v in (0.9, 1.0, 1.1):
            times.append([0.1 * v, 0.2 * v])
            units.append([r % 7, 3])
            labels.append(r % 2)
            speakers.append(r // 8)
            speed.append(v)
            recording.append(r)
    path = write_shd_file(tmp_path / "sp_train.h5", times, units, labels, ["a", "b"], speakers)
    with h5py.File(path, "a") as h5:
        h5.create_dataset("extra/speaker_names", data=np.array([b"ann", b"bob", b"cid"]))
        h5.create_dataset("extra/speed", data=np.array(speed, np.float32))
        h5.create_dataset("extra/recording", data=np.array(recording, np.int32))
    pool = read_shd(path)
    assert pool.is_original.sum() == 24 and pool.recordings.max() == 23
    tr, va, te, _ = speaker_split(pool, "ann", "random", 0.25, 0)
    assert len(te) == 8 and (te.speeds == 1.0).all() and set(te.recordings) == set(range(8))
    assert (va.speeds == 1.0).all() and not set(va.recordings) & set(tr.recordings)
    assert len(tr) == 3 * (16 - len(va)) and not set(tr.recordings) & set(range(8))
    tr, va, te, protocol = speaker_split(pool, "ann", "auto", 0.1, 0)
    assert protocol["valid_speaker"] == "bob" and len(va) == 8 and (va.speeds == 1.0).all()
    assert set(tr.recordings) == set(range(16, 24)) and len(tr) == 24


def test_a_training_file_with_speed_copies_validates_on_recordings_at_their_speed(tmp_path):
    import h5py

    from audio.datasets import recording_validation_split
    n = 30
    path = write_shd_file(tmp_path / "c_train.h5", [[0.1, 0.2]] * (3 * n), [[1, 2]] * (3 * n),
                          [r % 2 for r in range(n) for _ in range(3)], ["a", "b"], [0] * (3 * n))
    with h5py.File(path, "a") as h5:
        h5.create_dataset("extra/speed", data=np.tile(np.array([0.9, 1.0, 1.1], np.float32), n))
        h5.create_dataset("extra/recording", data=np.repeat(np.arange(n), 3).astype(np.int32))
    s = read_shd(path)
    tr, va = recording_validation_split(s, 0.2, 0)
    assert len(va) == 6 and (s.speeds[va] == 1.0).all()
    assert not set(s.recordings[tr]) & set(s.recordings[va]) and len(tr) == 3 * (n - 6)
