"""benchmarks/ops_crosscheck.py without NeuroBench: the Lava counters of an exported network against our count from
its integer weights (exact zeros included) and the spikes Lava recorded, and against the fast engine's tally."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli


@pytest.fixture
def crosscheck(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("ops_crosscheck")


def test_lava_counters_equal_our_count_from_exported_weights_and_recorded_spikes(crosscheck, tmp_path,
                                                                                 no_lava_process_left):
    from audio.datasets import eval_set_for
    from export.netx_h5 import read_network
    from sim.lava_net import run_lava
    from train.checkpoint import checkpoint_origin, load_checkpoint
    res = run_cli("train", "--model", "cuba-lif", "--layers", 2, "--hidden", 8, "--bin-hz", 25, "--batch", 32,
                  "--epochs", 1, "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output
    assert run_cli("export", tmp_path / "run", "--out", tmp_path / "net.h5").exit_code == 0
    net = read_network(tmp_path / "net.h5")
    split = eval_set_for(checkpoint_origin(load_checkpoint(tmp_path / "run"))).samples
    counts = split.dense(np.arange(3)).numpy().astype(np.int64)
    lava = run_lava(net, counts, record=True, progress=False)
    r = crosscheck.crosscheck_exported(net, counts, lava)
    assert set(r["rows"]) == {"layer1.ff", "layer1.rec", "layer2.ff", "layer2.rec", "readout.ff"}
    for key, row in r["rows"].items():
        assert row["lava"] == row["ours"] == row["fast"], (key, row)
    assert sum(row["lava"] for row in r["rows"].values()) > 0
    assert any(row["ours"] < row["dense"] for row in r["rows"].values())  # the exact zeros are not counted
    # what NeuroBench is given: the same integer weights, the same recorded activity, recurrent inputs one step late
    replay = crosscheck.Replay(net, counts, lava.spikes)
    weights = [syn.weight for layer in net.layers for syn in layer.connections().values()]
    assert all(np.array_equal(lin.weight.detach().numpy(), w) for lin, w in zip(replay.links, weights))
    last = crosscheck.last_step_recurrent(net, lava.spikes)
    cut = [s.copy() for s in lava.spikes]
    for s in cut:
        s[:, -1] = 0
    without = crosscheck.our_count(net, counts, cut)
    assert sum(v - without[k] for k, v in crosscheck.our_count(net, counts, lava.spikes).items() if ".rec" in k) == last
    assert replay(torch.zeros(3, counts.shape[1], counts.shape[2])).shape[0] == 3
