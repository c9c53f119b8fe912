"""Training recipe, checkpoints, resume, eval and the Table 2 op formulas."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import InputError
from conftest import one_line_error as _one_line_error
from conftest import run_cli as _cli
from train import trainer
from train.checkpoint import load_checkpoint, save_checkpoint
from train.evaluate import evaluate
from train.ops import layer_ops, model_ops, totals
from train.stats import mean_ci
from train.trainer import TrainConfig, TrainingDiverged, train

REPO = Path(__file__).resolve().parents[1]
# small and fast: 25 steps of 40 ms, 16 neurons
FAST = dict(layers=1, hidden=16, bin_hz=25, batch=16, data="builtin")


@pytest.fixture(autouse=True)
def builtin_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SPIKAUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _state(run_dir: Path, name: str = "last.pt") -> dict:
    return load_checkpoint(run_dir / name)["state_dict"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- op formulas -------------------------------------------------------------------------

def test_layer_ops_hand_computed():
    # m=4, n=3, a_in=0.5, a_out=0.25
    assert layer_ops("cuba-lif", 4, 3, 0.5, 0.25) == (9, 4 * 3 * 0.5 + (9 + 3) * 0.25 + 3)
    assert layer_ops("lif", 4, 3, 0.5, 0.25) == (3, 12.0)
    assert layer_ops("spikgru", 4, 3, 0.5, 0.25) == (9, 2 * 12 * 0.5 + (18 + 3) * 0.25 + 6)
    assert layer_ops("gru", 4, 3) == (3 * 12 + 27 + 9, 9)
    assert layer_ops("rnn", 4, 3) == (12 + 9, 3)
    assert layer_ops("readout", 3, 2, 0.25) == (2, 3 * 2 * 0.25 + 2)
    assert layer_ops("linear-readout", 3, 2) == (6, 2)
    with pytest.raises(ValueError):
        layer_ops("transformer", 1, 1)


def test_design_check_cuba_vs_gru():
    """DESIGN: 2x128 Cuba-LIF on SHD at a_in 0.047, a ~0.06: about 8.5k ops; 1x128 GRU about 320k (37x)."""
    cuba = totals(model_ops("cuba-lif", [700, 128, 128], 20, [0.047, 0.06, 0.06]))["ops"]
    gru = totals(model_ops("gru", [700, 128], 20, [0.047]))["ops"]
    assert 8000 < cuba < 9000
    assert 315_000 < gru < 325_000
    assert 35 < gru / cuba < 40


def test_mean_ci_student_t():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert mean_ci([0.5]) == (0.5, 0.0)


# ---- learning ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru", "rnn", "gru"])
def test_each_model_learns_builtin(kind, tmp_path):
    summary = train(TrainConfig(model=kind, epochs=3, seed=0, **FAST), tmp_path / kind, progress=False)
    # 6 classes: chance is 1/6; the test split is an unseen speaker
    assert summary["test_acc"] >= 0.5, summary
    rows = [json.loads(l) for l in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("kind", ["cuba-lif", "gru"])
def test_input_projection_does_not_change_the_run(kind, tmp_path):
    """--input-projection dense and sparse train the same weights (to float rounding), say which ran, and keep the
    setting in config.json; with augmentation on, both see the same batches."""
    runs = {}
    for mode in ("dense", "sparse"):
        cfg = TrainConfig(model=kind, epochs=2, seed=2, input_projection=mode, recipe={"channel_shift": 2},
                          **dict(FAST, layers=2))
        runs[mode] = train(cfg, tmp_path / mode, progress=False)
        assert json.loads((tmp_path / mode / "config.json").read_text())["input_projection"] == mode
        assert runs[mode]["input_projection"] == mode
    dense, sparse = _state(tmp_path / "dense"), _state(tmp_path / "sparse")
    assert dense.keys() == sparse.keys()
    for k in dense:
        torch.testing.assert_close(sparse[k], dense[k], rtol=1e-4, atol=1e-5, msg=k)
    assert runs["dense"]["test_acc"] == runs["sparse"]["test_acc"]


def test_auto_input_projection_choice():
    from train.projection import SPARSE_MAX_DENSITY, choose
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose("auto", cpu, True, 0.02)[0]
    assert not choose("auto", cpu, True, 2 * SPARSE_MAX_DENSITY)[0]
    assert not choose("auto", gpu, True, 0.02)[0]
    assert not choose("auto", cpu, False, 0.02)[0]  # e.g. QAT's fixed-point wrapper
    assert choose("sparse", gpu, True, 0.5)[0] and not choose("dense", cpu, True, 0.02)[0]
    assert choose("sparse", cpu, False, 0.02) == (False, "dense (this model takes dense inputs only)")
    assert choose("auto", cpu, True, 0.02)[1] == "sparse (auto: 2.0 % of the inputs are events, on the CPU)"


def test_decays_stay_in_unit_interval(tmp_path):
    train(TrainConfig(model="cuba-lif", epochs=1, lr=0.5, **FAST), tmp_path, progress=False)
    state = _state(tmp_path)
    decays = [v for k, v in state.items() if k.split(".")[-1] in ("alpha", "beta")]
    assert decays and all(float(d.min()) >= 0.0 and float(d.max()) <= 1.0 for d in decays)
    # with lr 0.5 some decay was pushed to a bound: the clip did work
    assert any(float(d.min()) == 0.0 or float(d.max()) == 1.0 for d in decays)


def test_resume_reproduces_uninterrupted_weights(tmp_path):
    cfg = dict(model="spikgru", seed=3, **FAST)
    train(TrainConfig(epochs=3, **cfg), tmp_path / "straight", progress=False)
    train(TrainConfig(epochs=1, **cfg), tmp_path / "resumed", progress=False)
    trainer.resume_runs(tmp_path / "resumed", epochs=3, progress=False)
    _assert_same_weights(_state(tmp_path / "straight"), _state(tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 3


def test_resume_of_a_finished_run_says_so_and_how_to_extend(tmp_path):
    """--resume on a finished run trains nothing and says so; --epochs N trains it on; fewer epochs is refused."""
    run = tmp_path / "done"
    train(TrainConfig(model="lif", epochs=1, **FAST), run, progress=False)
    stamp = (run / "last.pt").stat().st_mtime_ns
    res = _cli("train", "--resume", run, "--quiet")
    assert res.exit_code == 0, res.output
    assert f"note: {run} finished its 1 epochs already, nothing to resume; `train --resume {run} --epochs N`" \
        in res.output
    assert (run / "last.pt").stat().st_mtime_ns == stamp
    longer = _cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert longer.exit_code == 0 and load_checkpoint(run / "last.pt")["epoch"] == 2, longer.output
    shorter = _cli("train", "--resume", run, "--epochs", "1", "--quiet")
    assert "--epochs 1" in _one_line_error(shorter) and "has trained 2 epochs already" in shorter.output


def test_resume_after_sigkill(tmp_path):
    args = ["--model", "cuba-lif", "--layers", "1", "--hidden", "16", "--bin-hz", "25", "--batch", "16",
            "--epochs", "4", "--seed", "1", "--quiet"]
    env = {**os.environ, "SPIKAUDIO_CACHE": os.environ["SPIKAUDIO_CACHE"]}
    run = lambda *a: subprocess.run([sys.executable, "cli.py", "train", *a], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=300)
    assert run(*args, "--out", str(tmp_path / "straight")).returncode == 0
    victim = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "cli.py", "train", *args, "--out", str(victim)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (victim / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run("--resume", str(victim))
    assert done.returncode == 0, done.stderr
    _assert_same_weights(_state(tmp_path / "straight"), _state(victim))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = trainer.readout_loss
    calls = {"n": 0}

    def poisoned(out, y, *args):
        calls["n"] += 1
        loss = real(out, y, *args)
        return loss * float("nan") if calls["n"] > 14 else loss  # builtin: 14 batches of 16 per epoch

    monkeypatch.setattr(trainer, "readout_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        train(TrainConfig(model="lif", epochs=3, **FAST), tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# ---- eval --------------------------------------------------------------------------------

def test_eval_rates_and_ops_match_an_independent_count(tmp_path):
    train(TrainConfig(model="cuba-lif", layers=2, epochs=1, **{k: v for k, v in FAST.items() if k != "layers"}),
          tmp_path, progress=False)
    r = evaluate(str(tmp_path / "best.pt"), split="test")
    # recount activity with the model itself, sample by sample
    from audio.datasets import load_dataset
    from train.models import model_from_checkpoint
    ckpt = load_checkpoint(tmp_path / "best.pt")
    model = model_from_checkpoint(ckpt)
    ds = load_dataset("builtin", bin_hz=25)
    x = ds.test.dense(np.arange(len(ds.test)))
    with torch.no_grad():
        _, hidden = model(x, return_hidden=True)
    T = ds.spec.n_steps
    a0 = float(x.sum()) / (len(ds.test) * T * 700)
    a1, a2 = (float(h.sum()) / (len(ds.test) * T * 16) for h in hidden)
    assert r["input_rate"] == pytest.approx(a0)
    assert r["layer_rates"] == pytest.approx([a1, a2])
    n, m, k = 16, 700, 6
    expect_ac = (m * n * a0 + (n * n + n) * a1 + n) + (n * n * a1 + (n * n + n) * a2 + n) + (n * k * a2 + k)
    expect_mac = 3 * n + 3 * n + k
    assert r["ops_total"]["ac"] == pytest.approx(expect_ac)
    assert r["ops_total"]["mac"] == pytest.approx(expect_mac)


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--model", "transformer"],
    ["--model", "lif", "--layers", "0"],
    ["--model", "lif", "--hidden", "-3"],
    ["--model", "lif", "--data", "/no/such/dir"],
    ["--model", "lif", "--data", "cli.py"],
    ["--model", "rnn", "--surrogate-scale", "2"],
    ["--model", "lif", "--input-projection", "csr"],
])
def test_train_bad_input_is_one_line(args, tmp_path):
    _one_line_error(_cli("train", *args, "--epochs", "1", "--out", str(tmp_path / "run")))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_eval_bad_checkpoints(tmp_path):
    train(TrainConfig(model="lif", epochs=1, **FAST), tmp_path / "run", progress=False)
    good = tmp_path / "run" / "best.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    _one_line_error(_cli("eval", str(truncated)))
    ckpt = torch.load(good, weights_only=False)
    nan = dict(ckpt, state_dict={k: v * float("nan") if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in nan.items() if k not in ("format", "version")})
    _one_line_error(_cli("eval", str(tmp_path / "nan.pt")))
    missing = {k: v for k, v in ckpt.items() if k != "state_dict"}
    torch.save(missing, tmp_path / "missing.pt")
    _one_line_error(_cli("eval", str(tmp_path / "missing.pt")))
    # weights of a LIF model presented as a SpikGRU one
    other = dict(ckpt, model=dict(ckpt["model"], kind="spikgru"))
    torch.save(other, tmp_path / "other.pt")
    _one_line_error(_cli("eval", str(tmp_path / "other.pt")))
    with pytest.raises(InputError, match="is a lif model"):
        load_checkpoint(good, expect_kind="cuba-lif")
    das = REPO.parent / "shared/data/fsdd-das"
    _one_line_error(_cli("eval", str(good), "--data", str(das) if das.exists() else "/no/such"))


def test_existing_run_dir_needs_resume(tmp_path):
    train(TrainConfig(model="rnn", epochs=1, **FAST), tmp_path, progress=False)
    with pytest.raises(InputError, match="--resume"):
        train(TrainConfig(model="rnn", epochs=1, **FAST), tmp_path, progress=False)


def test_eval_two_layer_ann(tmp_path):
    """ANNs report only the input rate; their ops need no spike rates, at any depth."""
    train(TrainConfig(model="rnn", layers=2, epochs=1, **{k: v for k, v in FAST.items() if k != "layers"}),
          tmp_path, progress=False)
    r = evaluate(str(tmp_path / "best.pt"))
    assert r["layer_rates"] == []
    n, m, k = 16, 700, 6
    assert [o["mac"] for o in r["ops"]] == [m * n + n * n, n * n + n * n, n * k + k]
