"""Training beyond one process: --device, DataLoader workers and torchrun (2 CPU processes, gloo) giving the
weights of a single-process run with the same global batch and seed, resume under torchrun, and a rank that dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.trainer import config_from_options, train

from conftest import REPO, one_line_error, run_cli

# the study's recipe: its steps draw no random number that differs between one process and two (regular's dropout does)
TINY = ["--model", "cuba-lif", "--layers", "1", "--hidden", "16", "--bin-hz", "25", "--batch", "16", "--seed", "3",
        "--recipe", "study", "--quiet"]


def _env(cache) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", SPIKAUDIO_CACHE=str(cache))


def _torchrun(cache, *args, timeout=240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "cli.py"), "train", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=timeout)


def _close(a: Path, b: Path, rtol: float = 1e-5) -> None:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        scale = float(sa[k].abs().max()) or 1.0
        assert float((sa[k] - sb[k]).abs().max()) <= rtol * scale, k


def test_two_gloo_processes_equal_one_with_the_same_global_batch(tmp_path, _builtin_cache_dir):
    one = run_cli("train", *TINY, "--epochs", "2", "--out", tmp_path / "one")
    assert one.exit_code == 0, one.output
    two = _torchrun(_builtin_cache_dir, *TINY, "--epochs", "2", "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("kept epoch") == 1  # rank 0 alone reports
    # each rank took its share of every event batch
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["input_projection"] == "sparse"
    _close(tmp_path / "one" / "last.pt", tmp_path / "two" / "last.pt")
    # resume under torchrun: one epoch, then on to two, equals the uninterrupted run
    first = _torchrun(_builtin_cache_dir, *TINY, "--epochs", "1", "--out", tmp_path / "resumed")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _torchrun(_builtin_cache_dir, "--resume", tmp_path / "resumed", "--epochs", "2", "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    _close(tmp_path / "one" / "last.pt", tmp_path / "resumed" / "last.pt")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".lock", "best.pt", "config.json", "last.pt",
                                                                    "metrics.jsonl", "summary.json"]


SGD_RUN = """
import os, sys
import torch
from train import models, trainer
trainer._optimizer = lambda model, cfg, recipe: torch.optim.SGD(model.parameters(), lr=cfg.lr)
build = trainer.build_model
def build_and_keep(mcfg):  # the initial weights, to measure the steps by
    model = build(mcfg)
    if os.environ.get("RANK", "0") == "0":
        torch.save(model.state_dict(), sys.argv[2])
    return model
trainer.build_model = build_and_keep
cfg = trainer.config_from_options(model="cuba-lif", layers=1, hidden=16, bin_hz=25, batch=108, epochs=1, seed=3, lr=0.5,
                                  recipe_name="study")
trainer.train(cfg, sys.argv[1], progress=False)
"""


def test_two_gloo_processes_take_the_one_process_sgd_steps(tmp_path, _builtin_cache_dir):
    """Two SGD steps (216 training samples, global batch 108) under torchrun equal the one-process steps to 1e-5
    of the step: plain SGD follows the gradient's scale, so a rank that trained on the whole batch (twice the
    gradient after the average) or on another part would move the weights elsewhere."""
    script = tmp_path / "sgd_run.py"
    script.write_text(SGD_RUN)
    env = dict(_env(_builtin_cache_dir), PYTHONPATH=str(REPO))
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), str(tmp_path / "init1.pt")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script), str(tmp_path / "two"), str(tmp_path / "init2.pt")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-2000:]
    init = torch.load(tmp_path / "init1.pt")
    assert all(torch.equal(init[k], v) for k, v in torch.load(tmp_path / "init2.pt").items())
    a, b = load_checkpoint(tmp_path / "one" / "last.pt")["state_dict"], load_checkpoint(tmp_path / "two" / "last.pt")["state_dict"]
    moved = 0
    for k in ("hidden_layers.0.W", "hidden_layers.0.U", "readout.W"):
        step = float((a[k] - init[k]).abs().max())
        assert step > 1e-3, k  # the steps are large against float rounding
        assert float((a[k] - b[k]).abs().max()) <= 1e-5 * step, k
        moved += 1
    assert moved == 3


def test_a_rank_that_dies_stops_the_others_with_one_line(tmp_path, _builtin_cache_dir):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(REPO / "cli.py"),
           "train", *TINY, "--epochs", "500", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(_builtin_cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = subprocess.run(["pgrep", "-f", f"cli.py train .*{out}"], capture_output=True, text=True).stdout.split()
    victims = [int(p) for p in ranks if int(p) != proc.pid]
    assert len(victims) >= 2, ranks
    os.kill(max(victims), signal.SIGKILL)  # the later-started worker: rank 1
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    ours = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(ours) == 1 and "lost another torchrun process" in ours[0], err[-3000:]
    assert not list(out.glob(".*.pt*")) and load_checkpoint(out / "last.pt")["epoch"] >= 1  # nothing half-written


def test_dataloader_workers_give_the_same_weights(tmp_path):
    base = dict(model="lif", layers=1, hidden=8, bin_hz=25, batch=16, epochs=2, seed=1, channel_shift=5, event_drop=0.1)
    inline = train(config_from_options(**base), tmp_path / "inline", progress=False)
    workers = train(config_from_options(workers=2, **base), tmp_path / "workers", progress=False)
    assert inline["input_projection"] == workers["input_projection"] == "sparse"  # event batches from the workers
    _close(tmp_path / "inline" / "last.pt", tmp_path / "workers" / "last.pt", rtol=0.0)


def test_device_option(tmp_path):
    assert "--device 'tpu'" in one_line_error(run_cli("train", *TINY, "--device", "tpu", "--out", tmp_path / "x"))
    if not torch.cuda.is_available():
        line = one_line_error(run_cli("train", *TINY, "--device", "cuda:0", "--out", tmp_path / "x"))
        assert "CUDA is not available" in line and not (tmp_path / "x").exists()
    res = run_cli("train", *TINY[:-1], "--epochs", "1", "--device", "auto", "--out", tmp_path / "auto")
    assert res.exit_code == 0 and ("training on cpu" in res.output or "training on cuda" in res.output), res.output
    r = run_cli("eval", tmp_path / "auto", "--device", "auto")
    assert r.exit_code == 0 and "accuracy" in r.output
