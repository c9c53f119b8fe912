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
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "simulate", str(tiny_net / "net.h5"),
                             "--engine", "lava", "--limit", "60", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_resume_with_another_size_checkpoint(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", *TINY, "--epochs", "1", "--out", a, "--quiet").exit_code == 0
    assert run_cli("train", *TINY[:-4], "--hidden", "12", "--bin-hz", "25", "--epochs", "1", "--out", b,
                   "--quiet").exit_code == 0
    shutil.copy(b / "last.pt", a / "last.pt")
    line = one_line_error(run_cli("train", "--resume", a, "--epochs", "2"))
    assert "last.pt: does not fit the run's config.json" in line


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
    fine = run_cli("finetune", ckpt, "--out", tiny_net, "--epochs", "1")
    assert "already holds a run" in one_line_error(fine) or "holds the checkpoint" in one_line_error(fine)


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


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path, monkeypatch):
    from train import trainer
    from train.trainer import TrainingDiverged, config_from_options

    monkeypatch.setattr(trainer, "readout_loss", lambda out, y, *a: out.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="in epoch 1; stopped, no checkpoint was written"):
        trainer.train(config_from_options(model="lif", layers=1, hidden=8, bin_hz=25, batch=32, epochs=2),
                      tmp_path / "n", progress=False)
    assert not (tmp_path / "n" / "last.pt").exists()


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
    return {"shd": shd, "das": das, "net": tiny_net / "net.h5"}


def _read(kind: str, path: Path):
    from audio.spike_files import read_das, read_shd
    from export.netx_h5 import read_network
    return {"shd": lambda: read_shd(path), "das": lambda: read_das(path, "train"), "net": lambda: read_network(path)}[kind]()


def _clean_or_input_error(kind: str, path: Path) -> None:
    try:
        _read(kind, path)
    except InputError:
        pass


FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(kind=st.sampled_from(["shd", "das", "net"]), cut=st.floats(0.0, 1.0), flips=st.lists(
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
@given(kind=st.sampled_from(["shd", "das", "net"]), pick=st.floats(0.0, 1.0),
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
