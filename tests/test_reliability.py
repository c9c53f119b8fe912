"""Reliability promises (docs/RELIABILITY.md): no Lava process outlives its command, no run or file is
silently overwritten, every bad input is one line with exit code 2, and the readers survive fuzzing."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError
from conftest import REPO, one_line_error, run_cli, write_das_file, write_shd_file

TINY = ["--model", "cuba-lif", "--layers", "1", "--hidden", "8", "--bin-hz", "25", "--batch", "32"]


def _descendants(pid: int) -> list[int]:
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's pid 1 may never reap what it inherits)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory, _builtin_cache_dir):
    from train.trainer import config_from_options, train
    run = tmp_path_factory.mktemp("rel") / "run"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        train(config_from_options(model="cuba-lif", layers=1, hidden=8, epochs=1, batch=32), run, progress=False)
        assert run_cli("export", run / "best.pt", "--out", run / "net.h5").exit_code == 0
    return run


# ---- 1, 7: no Lava process outlives its command ----------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_no_lava_process_outlives_simulate(tiny_net, sig, _builtin_cache_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", SPIKAUDIO_CACHE=str(_builtin_cache_dir))
    # as typed at a terminal: a shell starts background jobs (a CI runner's too) with Ctrl-C ignored, and a
    # Python started so keeps ignoring it, as it should
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "simulate", str(tiny_net / "net.h5"),
                             "--engine", "lava", "--limit", "60", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while len(_descendants(proc.pid)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # the runtime is up and running steps
    started = _descendants(proc.pid)
    assert len(started) >= 4 and proc.poll() is None, "Lava did not start"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while any(_running(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if _running(p)], f"left running after {sig.name}"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == {signal.SIGINT: 130}.get(sig, 128 + sig), err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err  # no child tracebacks, one line
    assert lines[0] == ("interrupted" if sig == signal.SIGINT else f"stopped by {sig.name}")


# ---- 2: one run per directory ------------------------------------------------------------------------------

def test_two_runs_on_one_directory(tmp_path, _builtin_cache_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", SPIKAUDIO_CACHE=str(_builtin_cache_dir))
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "cli.py"), "train", *TINY, "--epochs", "40", "--quiet", "--out", str(out)]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_cli("train", "--model", "lif", "--layers", "1", "--hidden", "8", "--epochs", "1", "--out", out)
    assert f"in use by another command (pid {first.pid})" in one_line_error(second)
    resumed = run_cli("train", "--resume", out)
    assert "in use by another command" in one_line_error(resumed)
    first.send_signal(signal.SIGKILL)  # a stale lock does not block
    first.wait()
    assert json.loads((out / "config.json").read_text())["model"] == "cuba-lif"
    again = run_cli("train", *TINY, "--epochs", "1", "--out", out)
    assert "already holds a run" in one_line_error(again)
    done = run_cli("train", "--resume", out, "--epochs", "1" if (out / "last.pt").exists() else "2", "--quiet")
    assert done.exit_code == 0, done.output
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metrics.jsonl").write_text("")
    assert "already holds a run (metrics.jsonl)" in one_line_error(run_cli("train", *TINY, "--out", partial))


def test_resume_without_checkpoint_says_so(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    from dataclasses import asdict

    from train.trainer import config_from_options
    (run / "config.json").write_text(json.dumps(asdict(config_from_options(
        model="lif", layers=1, hidden=8, bin_hz=25, batch=32, epochs=1))))
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.exit_code == 0 and "no checkpoint yet (stopped during epoch 1): starting from epoch 1" in res.output


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_resume_with_another_size_checkpoint(name, tmp_path):
    """Either checkpoint of another size is refused before any epoch runs (best.pt was read only at the end,
    after the extra epochs had trained)."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", a, "--quiet").exit_code == 0
    assert run_cli("train", *TINY[:-4], "--hidden", "12", "--bin-hz", "25", "--epochs", "1", "--out", b,
                   "--quiet").exit_code == 0
    shutil.copy(b / name, a / name)
    line = one_line_error(run_cli("train", "--resume", a, "--epochs", "2"))
    assert f"{name}: does not fit the run's config.json" in line
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 1  # no epoch trained


# ---- 3: never overwrite an input, never an output without --force ----------------------------------------

def test_export_never_replaces_its_input_nor_an_output_unasked(tiny_net, tmp_path):
    ckpt = tmp_path / "x.pt"
    shutil.copy(tiny_net / "best.pt", ckpt)
    before = ckpt.read_bytes()
    assert "is an input of this command" in one_line_error(run_cli("export", ckpt, "--out", ckpt, "--force"))
    assert ckpt.read_bytes() == before
    out = tmp_path / "net.h5"
    out.write_text("precious")
    assert "exists; pass --force" in one_line_error(run_cli("export", ckpt, "--out", out))
    assert out.read_text() == "precious"
    assert run_cli("export", ckpt, "--out", out, "--force").exit_code == 0
    assert h5py.is_hdf5(out)
    assert "already holds a run" in one_line_error(run_cli("finetune", ckpt, "--out", tiny_net, "--epochs", "1"))
    line = one_line_error(run_cli("finetune", tiny_net / "best.pt", "--out", tiny_net, "--epochs", "1"))
    assert "holds best.pt, an input of this command" in line


def test_report_and_plot_refuse_existing_outputs(tiny_net, tmp_path):
    for name in ("r.md", "r.png"):
        (tmp_path / name).write_text("keep")
    assert "exists; pass --force" in one_line_error(run_cli("report", tiny_net, "--out", tmp_path / "r.md"))
    (tmp_path / "r.md").unlink()
    assert "exists; pass --force" in one_line_error(run_cli("report", tiny_net, "--out", tmp_path / "r.md"))
    assert (tmp_path / "r.png").read_text() == "keep"
    assert run_cli("report", tiny_net, "--out", tmp_path / "r.md", "--force", "--quiet").exit_code == 0
    plot = tmp_path / "p.png"
    plot.write_text("keep")
    assert "exists; pass --force" in one_line_error(run_cli("data", "plot", "builtin", "--out", plot))
    assert run_cli("data", "plot", "builtin", "--out", plot, "--force").exit_code == 0


def test_stale_temp_file_of_a_killed_writer_is_removed(tiny_net, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".net.h5.{dead.pid}.abc123.h5"
    stale.write_text("half")
    mine = tmp_path / f".net.h5.{os.getpid()}.live.h5"  # a live writer's temp is left alone
    mine.write_text("busy")
    assert run_cli("export", tiny_net / "best.pt", "--out", tmp_path / "net.h5").exit_code == 0
    assert not stale.exists() and mine.exists()


# ---- 4, 5, 6, 8: one-line errors ------------------------------------------------------------------------

def test_bad_training_options_are_one_line(tmp_path):
    cases = [(["--epochs", "0"], "--epochs must be at least 1"),
             (["--clip", "4", "-4"], "LOW < HIGH"),
             (["--surrogate-width", "0"], "--surrogate-width must be positive"),
             (["--hidden", "99999999999"], "GiB, this machine has")]
    for args, message in cases:
        assert message in one_line_error(run_cli("train", "--model", "cuba-lif", *args, "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_string_and_fractional_labels(tmp_path):
    strings = write_shd_file(tmp_path / "s_train.h5", [[0.1], [0.2]], [[1], [2]], [0, 1])
    with h5py.File(strings, "r+") as f:
        del f["labels"]
        f.create_dataset("labels", data=np.array([b"yes", b"no"]))
    write_shd_file(tmp_path / "s_test.h5", [[0.1]], [[1]], [0])
    assert "labels are" in one_line_error(run_cli("data", "info", strings))
    assert "labels are" in one_line_error(run_cli("train", "--model", "lif", "--data", strings, "--out", tmp_path / "r"))
    half = tmp_path / "h.h5"
    with h5py.File(write_shd_file(half, [[0.1], [0.2]], [[1], [2]], [0, 1]), "r+") as f:
        del f["labels"]
        f.create_dataset("labels", data=np.array([0.0, 1.5]))
    assert "sample 1 has label 1.5" in one_line_error(run_cli("data", "info", half))


def test_eval_limit_and_plot_format_and_unwritable_locations(tiny_net, tmp_path):
    for limit in ("0", "-3"):
        assert "--limit must be at least 1" in one_line_error(run_cli("eval", tiny_net, "--limit", limit))
    assert "unknown image format '.xyz'" in one_line_error(run_cli("data", "plot", "builtin", "--out", tmp_path / "x.xyz"))
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    assert "file/net.h5" in one_line_error(run_cli("export", tiny_net / "best.pt", "--out", blocker / "net.h5"))
    assert "file" in one_line_error(run_cli("train", *TINY, "--epochs", "1", "--out", blocker / "run"))
    assert "is a directory" in one_line_error(run_cli("simulate", tmp_path))


def test_eval_and_compare_on_a_file_without_samples(tiny_net, tmp_path):
    from train.checkpoint import load_checkpoint
    names = load_checkpoint(tiny_net / "best.pt")["data"]["class_names"]
    empty = write_shd_file(tmp_path / "empty.h5", [], [], [], keys=names)
    for args in (("eval", tiny_net, "--data", empty), ("compare", tiny_net / "net.h5", "--data", empty),
                 ("simulate", tiny_net / "net.h5", "--data", empty, "--engine", "fast")):
        assert "empty.h5: no samples to evaluate" in one_line_error(run_cli(*args))


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path, monkeypatch):
    from train import trainer
    from train.trainer import TrainingDiverged, config_from_options

    monkeypatch.setattr(trainer, "readout_loss", lambda out, y, *a: out.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="in epoch 1; stopped, no checkpoint was written"):
        trainer.train(config_from_options(model="lif", layers=1, hidden=8, bin_hz=25, batch=32, epochs=2),
                      tmp_path / "n", progress=False)
    assert not (tmp_path / "n" / "last.pt").exists()


# ---- cross-validation and nested studies: their directories, resumes and plans -------------------------

CV = ["cv", "--model", "lif", "--layers", "1", "--hidden", "4", "--bin-hz", "25", "--batch", "32",
      "--speakers", "speaker0,speaker1", "--quiet"]


def test_cv_run_again_with_other_epochs(tmp_path):
    """More --epochs extends every finished fold; fewer is refused (cv.json kept), not reported as the old folds."""
    out = tmp_path / "cv"
    assert run_cli(*CV, "--epochs", "1", "--out", out).exit_code == 0
    plan = (out / "cv.json").read_text()
    line = one_line_error(run_cli(*CV, "--epochs", "1", "--out", out, "--lr", "0.002"))
    assert "other settings (lr)" in line and (out / "cv.json").read_text() == plan
    longer = run_cli(*CV, "--epochs", "2", "--out", out)
    assert longer.exit_code == 0, longer.output
    assert [json.loads((out / f"speaker{k}" / "seed0" / "summary.json").read_text())["epochs"] for k in (0, 1)] == [2, 2]
    plan = (out / "cv.json").read_text()
    line = one_line_error(run_cli(*CV, "--epochs", "1", "--out", out))
    assert "its folds train for 2 epochs; --epochs 1 cannot shorten them" in line and (out / "cv.json").read_text() == plan


def test_cv_refuses_a_fold_directory_holding_another_run(tmp_path):
    """Found before anything trains (it was resumed as a fold, then left out of the report: '4 folds')."""
    out = tmp_path / "cv"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", tmp_path / "foreign", "--quiet").exit_code == 0
    shutil.copytree(tmp_path / "foreign", out / "speaker1" / "seed0")
    line = one_line_error(run_cli(*CV, "--epochs", "1", "--out", out))
    assert "speaker1/seed0: holds another run (model, hidden" in line, line
    assert not (out / "speaker0").exists() and not (out / "cv.json").exists()


def test_nothing_but_the_cv_writes_inside_it(tmp_path):
    """Only the running fold was locked: a train, a resume, a finetune or a nested study inside a cv's directory
    could take a fold not yet running."""
    out = tmp_path / "cv"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", out / "speaker0" / "seed0", "--quiet").exit_code == 0
    (out / "cv.json").write_text("{}")
    for args in (("train", *TINY, "--epochs", "1", "--out", out / "speaker0" / "seed9"),
                 ("train", "--resume", out / "speaker0" / "seed0", "--epochs", "2"),
                 ("finetune", out / "speaker0" / "seed0" / "best.pt", "--out", out / "ft", "--epochs", "1"),
                 ("nested", "--out", out / "study", "--models", "lif-1", "--epochs", "1", "--jobs", "0")):
        assert f"lies inside a cross-validation ({out})" in one_line_error(run_cli(*args))
    assert json.loads((out / "speaker0" / "seed0" / "summary.json").read_text())["epochs"] == 1


def test_nested_refuses_bad_outputs_options_and_plans(tmp_path):
    """nested --out on a file, a run of another kind or a cv; bad --models and --recipes; --report-only without
    --resume; a study whose nested.json is corrupt: one line each, nothing written."""
    run, cv = tmp_path / "run", tmp_path / "cv"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", run, "--quiet").exit_code == 0
    cv.mkdir()
    (cv / "cv.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    small = ["--models", "lif-1", "--recipes", "study", "--epochs", "1", "--hidden", "4", "--jobs", "0"]  # if accepted
    for out, words in ((tmp_path / "file", "is a file"), (run, "holds a run (config.json"),
                       (cv, "holds a cross-validation (cv.json), not a nested study")):
        assert words in one_line_error(run_cli("nested", "--out", out, *small))
    assert not (run / "nested.json").exists() and not (cv / "nested.json").exists()
    study = tmp_path / "s"
    for args, words in ((["--models", "tpu-2"], "--models tpu-2: expected KIND-LAYERS"),
                        (["--models", "gru-x"], "--models gru-x"), (["--recipes", "magic"], "--recipes magic: unknown"),
                        (["--report-only"], "--report-only needs --resume"), (["--seeds", "1"], "--seeds 1"),
                        (["--jobs", "-1"], "--jobs must be >= 0"), (["--outer-seeds", "1"], "--outer-seeds 1"),
                        (["--outer-epochs", "0"], "--outer-epochs must be at least 1, got 0")):
        assert words in one_line_error(run_cli("nested", "--out", study, *small, *args))
    assert not study.exists()
    study.mkdir()
    for text in ("not json", "[]", '{"data": 5}', json.dumps({"data": "builtin", "models": ["gru-2"], "recipes": ["study"],
                 "seeds": "01", "epochs": 2, "hidden": 8, "speakers": ["a", "b", "c"]}),
                 json.dumps({"data": "builtin", "models": ["gru-2"], "recipes": ["study"], "seeds": [0, 1],
                             "outer_seeds": 3, "epochs": 2, "hidden": 8, "speakers": ["a", "b", "c"]}),
                 json.dumps({"data": "builtin", "models": ["gru-2"], "recipes": ["study"], "seeds": [0, 1],
                             "epochs": 2, "outer_epochs": "40", "hidden": 8, "speakers": ["a", "b", "c"]})):
        (study / "nested.json").write_text(text)
        line = one_line_error(run_cli("nested", "--resume", study, "--report-only"))
        assert "nested.json: unreadable nested plan" in line, line
    for option in ("--outer-seeds", "--outer-epochs"):  # never silently ignored
        line = one_line_error(run_cli("nested", "--resume", study, option, "3"))
        assert f"{option} changes the study" in line and f"use --out {study} {option} 3" in line, line
    # a running study: its report can be read, it cannot be run twice
    (study / "nested.json").write_text(json.dumps({"data": "builtin", "models": ["lif-1"], "recipes": ["study"],
                                                   "seeds": [0, 1], "epochs": 1, "hidden": 4,
                                                   "speakers": [f"speaker{k}" for k in range(5)]}))
    holder = subprocess.Popen([sys.executable, "-c", "import time; from common.rundir import run_lock\n"
                               f"with run_lock({str(study)!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_cli("nested", "--resume", study, "--report-only").exit_code == 0
        line = one_line_error(run_cli("nested", "--resume", study, "--jobs", "0"))
        assert f"in use by another command (pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()


PROBES = [  # (arguments, words of the one-line error): inputs found broken by hand, kept broken-proof here
    (["data", "convert", "{wav}", "--speed", "fast", "--out", "{tmp}/a.h5"], "--speed"),
    (["data", "convert", "{wav}", "--speed", "0.1,1", "--out", "{tmp}/a.h5"], "distinct factors between 0.5 and 2"),
    (["data", "convert", "{wav}", "--speed", "1,1", "--out", "{tmp}/a.h5"], "distinct factors"),
    (["data", "convert", "{wav}", "--floor", "1", "--out", "{tmp}/a.h5"], "--floor 1.0"),
    (["data", "convert", "{wav}", "--out", "{tmp}/none/a.h5"], "does not exist"),
    (["data", "convert", "{wav}", "--out", "{wav}.h5x"], "name an HDF5 file"),
    (["data", "convert", "{wav}", "--out", "{run}/best.pt"], "name an HDF5 file"),
    (["data", "plot", "builtin", "--out", "{run}/config.json", "--force"], "is part of a run"),
    (["export", "{run}/best.pt", "--out", "{run}/last.pt", "--force"], "is part of a run"),
    (["export", "{run}/best.pt", "--target", "nir", "--out", "{run}/summary.json", "--force"], "is part of a run"),
    (["report", "{run}", "--out", "{tmp}/none/r.md"], "does not exist"),
    (["infer", "{run}/best.pt", "{wav}", "--plot", "{tmp}/p.jpg"], "name a .png file"),
    (["import-nir", "{tmp}/g.nir", "--out", "{run}", "--force"], "holds a run"),
    (["train", *TINY, "--out", "{tmp}/imp"], "holds an imported model"),
    (["cv", *TINY, "--epochs", "1", "--out", "{run}"], "holds a run"),
    (["finetune", "{run}/best.pt", "--out", "{tmp}/imp"], "holds an imported model"),
]


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory, tiny_net):
    import nir
    from scipy.io import wavfile
    d = tmp_path_factory.mktemp("probe")
    wavfile.write(d / "1_ann_0.wav", 8000, (np.sin(np.arange(4000) / 3) * 8000).astype(np.int16))
    graph = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}), "w": nir.Linear(weight=np.ones((2, 3))),
                                "lif": nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2),
                                               v_threshold=np.ones(2)),
                                "out": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("in", "w"), ("w", "lif"), ("lif", "out")], metadata={"dt": 1e-4})
    nir.write(d / "g.nir", graph)
    assert run_cli("import-nir", d / "g.nir", "--out", d / "imp").exit_code == 0
    return d


@pytest.mark.parametrize("args,words", PROBES, ids=[" ".join(a[:2]) + f" [{k}]" for k, (a, _) in enumerate(PROBES)])
def test_probes_of_every_command_are_one_line(args, words, probe_dir, tiny_net):
    """Each probe is a bad input or output of a command added or changed since the first round: one line,
    exit code 2, nothing written into the run directory it names."""
    before = {p.name: p.stat().st_mtime_ns for p in tiny_net.iterdir()}
    fill = dict(tmp=probe_dir, run=tiny_net, wav=probe_dir / "1_ann_0.wav")
    assert words in one_line_error(run_cli(*[a.format(**fill) for a in args]))
    assert {p.name: p.stat().st_mtime_ns for p in tiny_net.iterdir()} == before


# ---- fuzzing the readers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_files(tmp_path_factory, tiny_net):
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    shd = write_shd_file(d / "f_train.h5", [np.sort(rng.uniform(0, 1, 20)) for _ in range(4)],
                         [rng.integers(0, 700, 20) for _ in range(4)], [0, 1, 2, 1], ["a", "b", "c"],
                         speakers=[0, 1, 0, 1])
    das = write_das_file(d / "f.hdf5", {s: {f"ab{k}-{c}a": (np.sort(rng.uniform(0, 1, 9)), rng.integers(0, 64, 9))
                                            for k, c in enumerate("12z")} for s in ("train", "test")})
    import nir
    nir.write(d / "g.nir", nir.NIRGraph(
        nodes={"in": nir.Input(input_type={"input": np.array([3])}), "w": nir.Affine(weight=rng.normal(size=(2, 3)),
                                                                                     bias=np.zeros(2)),
               "lif": nir.CubaLIF(tau_syn=np.full(2, 2e-4), tau_mem=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2),
                                  v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.ones(2)),
               "out": nir.Output(output_type={"output": np.array([2])})},
        edges=[("in", "w"), ("w", "lif"), ("lif", "out")], metadata={"dt": 1e-4, "reset": "zero"}))
    from scipy.io import wavfile
    wavfile.write(d / "w.wav", 8000, (np.sin(np.arange(4000) / 3) * 8000).astype(np.int16))
    return {"shd": shd, "das": das, "net": tiny_net / "net.h5", "nir": d / "g.nir", "wav": d / "w.wav"}


def _read(kind: str, path: Path):
    from audio.frontend import Frontend, read_wav, spikes_of
    from audio.spike_files import read_das, read_shd
    from export.netx_h5 import read_network
    from nir_io.to_model import load_graph
    return {"shd": lambda: read_shd(path), "das": lambda: read_das(path, "train"), "net": lambda: read_network(path),
            "nir": lambda: load_graph(path),
            "wav": lambda: spikes_of(read_wav(path, 8000, 10.0), Frontend(channels=64))}[kind]()


def _clean_or_input_error(kind: str, path: Path) -> None:
    try:
        _read(kind, path)
    except InputError:
        pass


FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(kind=st.sampled_from(["shd", "das", "net", "nir", "wav"]), cut=st.floats(0.0, 1.0), flips=st.lists(
    st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6))
def test_fuzz_truncation_and_byte_flips(real_files, tmp_path_factory, kind, cut, flips):
    data = bytearray(real_files[kind].read_bytes())
    for where, xor in flips:
        data[int(where * (len(data) - 1))] ^= xor
    data = data[:max(1, int(cut * len(data)))] if cut < 1.0 else data
    path = tmp_path_factory.mktemp("f") / real_files[kind].name
    path.write_bytes(bytes(data))
    _clean_or_input_error(kind, path)


def _datasets(f: h5py.File) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


@FUZZ
@given(kind=st.sampled_from(["shd", "das", "net", "nir"]), pick=st.floats(0.0, 1.0),
       op=st.sampled_from(["delete", "float", "string", "negative", "extra", "scalar", "attr"]))
def test_fuzz_structure(real_files, tmp_path_factory, kind, pick, op):
    path = tmp_path_factory.mktemp("s") / real_files[kind].name
    shutil.copy(real_files[kind], path)
    with h5py.File(path, "r+") as f:
        names = _datasets(f)
        name = names[min(len(names) - 1, int(pick * len(names)))]
        value = f[name][()]
        if op == "extra":
            f.create_dataset(name + "_extra" if "/" not in name else name.rsplit("/", 1)[0] + "/zz_extra", data=[1])
        elif op == "attr":
            for key in list(f.attrs)[:1]:
                f.attrs[key] = "garbage"
        else:
            del f[name]
            numeric = np.asarray(value).dtype.kind in "iuf"
            if op == "float":
                f.create_dataset(name, data=np.asarray(value, dtype=float) + 0.5 if numeric else np.zeros(3))
            elif op == "string":
                f.create_dataset(name, data=np.array([b"x"] * max(1, np.size(value))))
            elif op == "negative":
                f.create_dataset(name, data=-np.ones(np.shape(value) if numeric else 3, dtype=np.int64))
            elif op == "scalar":
                f.create_dataset(name, data=7)
    _clean_or_input_error(kind, path)
