"""Simulation: the PyTorch fixed-point forward, the fast engine and Lava give the same spikes, counts and
predictions; measured counts equal Table 2 on the same run's activity; the simulate / compare / report
commands; bad input stops cleanly (exit code 2, one line, no partial result, no Lava process left).

Lava runs cost one to a few seconds each (compilation), so every test batches its checks into one run
of a few samples of 20-40 steps.
"""
from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest
import torch

import sim.lava_net as lava_net  # first: Lava fixes multiprocessing's start method when imported
from conftest import SHARED_DATA
from conftest import one_line_error as _one_line_error
from conftest import run_cli as _cli
from conftest import write_das_file
from audio.datasets import limit_index
from export import fixed_point as fx
from export.netx_h5 import read_network, write_network
from export.qat import run_fixed_point
from export.qnet import QLayer, QNetwork, Synapse, run_network
from export.quantize import quantize_model
from lava_procs import CubaLIF
from lava_procs.models import PyCubaLIFModelFixed
from sim.engine import run_fast
from sim.integer_net import Inputs, run_batch
from sim.simulate import load_split, stream_gap
from sim.stream import quiet_gap, run_stream
from sim.tally import Tally, counted_ops
from train.checkpoint import load_checkpoint
from train.models import ModelConfig, build_model, model_from_checkpoint
from train.ops import model_ops

pytestmark = pytest.mark.usefixtures("no_lava_process_left")


def float_model(kind: str, layers: int, gain: float = 3.0, seed: int = 0, n_in: int = 12, hidden: int = 10,
                n_classes: int = 3, **options):
    """A freshly initialised model with its weights scaled so that every layer fires."""
    torch.manual_seed(seed)
    cfg = ModelConfig(kind, n_in, n_classes, layers, hidden, dict(options))
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ("W", "U", "Wz", "Uz"):
                p.mul_(gain)
    return model, cfg


def table2_rows(net: QNetwork, counts: Tally) -> list:
    """Table 2 (train.ops.model_ops) at the activity of the counted run."""
    per = counts.samples * counts.steps
    sizes = [net.layers[0].n_in] + [l.n_out for l in net.hidden]
    rates = [e / (per * m) for e, m in zip([counts.input_events] + counts.spikes, sizes)]
    return model_ops(net.layers[0].kind, sizes, net.readout.n_out, rates)


def assert_counts_match_table2(net: QNetwork, counts: Tally) -> None:
    for got, want in zip(counted_ops(net, counts), table2_rows(net, counts)):
        assert got["mac"] == pytest.approx(want.mac, rel=1e-12), got["name"]
        assert got["ac"] == pytest.approx(want.ac, rel=1e-12), got["name"]


# ------------------------------------------------------------------------- the three implementations
@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_random_networks_same_spikes_counts_and_predictions(kind, layers):
    """PyTorch fixed-point forward == fast engine == run_network == Lava (each layer shifted by its delay),
    spike for spike; Lava's counters == the fast engine's counts == Table 2 on the run's activity."""
    model, cfg = float_model(kind, layers, seed=layers)
    net, _ = quantize_model(model, cfg)
    rng = np.random.default_rng(layers)
    counts = rng.poisson(0.6, (3, 30, cfg.n_in))
    counts[0, 3, 2] = 300  # clips to 255
    with torch.no_grad():
        qat = run_fixed_point(model, torch.tensor(counts, dtype=torch.float64))
    ref = run_network(net, counts)
    fast = run_batch(net, counts)
    lava = lava_net.run_lava(net, counts, record=True, progress=False)
    stream = run_stream(net, counts, 0, keep_traces=True)  # the fast engine's account of Lava's stream
    assert stream.carried.size, "a spike on a sample's last step reaches the next sample: the carry is tested"
    for k in range(layers):
        want = ref["spikes"][k]
        assert 0.02 < want.mean() < 0.9, f"layer {k} should fire sometimes: rate {want.mean()}"
        np.testing.assert_array_equal(qat["spikes"][k].numpy().astype(np.int8), want, err_msg=f"qat layer {k}")
        np.testing.assert_array_equal(fast["spikes"][k], want, err_msg=f"fast layer {k}")
        np.testing.assert_array_equal(lava.spikes[k], stream.spikes[k], err_msg=f"lava layer {k}")
        np.testing.assert_array_equal(stream.spikes[k][0], want[0], err_msg=f"layer {k}: nothing before sample 0")
    np.testing.assert_array_equal(qat["readout"].numpy().astype(np.int64), ref["readout"])
    np.testing.assert_array_equal(fast["readout"], ref["readout"])
    np.testing.assert_array_equal(stream.alone_max, ref["readout"].max(axis=1))
    np.testing.assert_array_equal(lava.sample_max, stream.sample_max)
    assert lava.tally.source == "lava" and lava.tally.equals(stream.tally), (lava.tally, stream.tally)
    assert_counts_match_table2(net, lava.tally)


@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru"])
def test_clip_reached_same_spikes_everywhere(kind):
    """A training clip small enough to be reached: run_network == PyTorch fixed-point forward == fast engine
    (spikes, states, readout), and == Lava for Cuba-LIF (one short run)."""
    model, cfg = float_model(kind, 2, gain=5.0, seed=5, clip=(-0.2, 1.5))
    net, _ = quantize_model(model, cfg)
    lo, hi = -round(0.2 * fx.THETA), round(1.5 * fx.THETA)
    assert all((l.state_lo, l.state_hi) == (lo, hi) for l in net.hidden)
    counts = np.random.default_rng(7).poisson(1.0, (3, 30, cfg.n_in))
    ref = run_network(net, counts, record_states=True)
    fast = run_batch(net, counts, record_states=True)
    with torch.no_grad():
        qat = run_fixed_point(model, torch.tensor(counts, dtype=torch.float64))
    states = [st for st in ref["states"][:-1]]
    assert any((st[n] == lo).any() for st in states for n in st if n != "s"), "the lower bound is never reached"
    assert any((st[n] == hi).any() for st in states for n in st if n != "s"), "the upper bound is never reached"
    for k in range(2):
        want = ref["spikes"][k]
        assert 0.01 < want.mean() < 0.9, f"layer {k} rate {want.mean()}"
        np.testing.assert_array_equal(qat["spikes"][k].numpy().astype(np.int8), want, err_msg=f"qat layer {k}")
        np.testing.assert_array_equal(fast["spikes"][k], want, err_msg=f"fast layer {k}")
        for name, value in fast["states"][k].items():
            np.testing.assert_array_equal(value, ref["states"][k][name], err_msg=f"fast layer {k} {name}")
    np.testing.assert_array_equal(qat["readout"].numpy().astype(np.int64), ref["readout"])
    np.testing.assert_array_equal(fast["readout"], ref["readout"])
    if kind == "cuba-lif":
        lava = lava_net.run_lava(net, counts, record=True, progress=False)
        stream = run_stream(net, counts, 0, keep_traces=True)
        np.testing.assert_array_equal(stream.alone_max, ref["readout"].max(axis=1))
        for k in range(2):
            np.testing.assert_array_equal(lava.spikes[k], stream.spikes[k], err_msg=f"lava layer {k}")
        np.testing.assert_array_equal(lava.sample_max, stream.sample_max)


def random_qnet(kind: str, rng, sizes=(9, 11, 8), n_classes=4) -> QNetwork:
    """Integer networks with any exponent (negative: floor shifts; large: 16-bit saturation) and biases."""
    def syn(n, m):
        return Synapse(rng.integers(-128, 128, (n, m)), int(rng.integers(fx.EXP_MIN, fx.EXP_MAX + 1)))

    layers = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        lay = QLayer(kind, syn(n, m), syn(n, n), bias_mant=rng.integers(-4096, 4096, n), bias_exp=int(rng.integers(0, 8)))
        if kind == "lava-cuba":
            lay.du, lay.v_decay = int(rng.integers(0, 4096)), rng.integers(0, 4096, 1)
        else:
            lay.i_decay, lay.v_decay = rng.integers(0, 4096, n), rng.integers(0, 4096, n)
        if kind == "lif":
            lay.i_decay = None
        if kind == "spikgru":
            lay.v_decay = None
            lay.ff_z, lay.rec_z = syn(n, m), syn(n, n)
            lay.bias_z_mant, lay.bias_z_exp = rng.integers(-4096, 4096, n), int(rng.integers(0, 8))
        layers.append(lay)
    layers.append(QLayer("readout", syn(n_classes, sizes[-1]), bias_mant=rng.integers(-4096, 4096, n_classes),
                         bias_exp=int(rng.integers(0, 8)), v_decay=rng.integers(0, 4096, n_classes)))
    return QNetwork(layers)


@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru", "lava-cuba"])
def test_fast_engine_equals_run_network_on_wild_networks(kind):
    """Every exponent, saturating dendrites and states, counts above 8 bits: spikes, readout and states equal."""
    saturated = clamped = False
    for seed in range(4):
        rng = np.random.default_rng(seed)
        net = random_qnet(kind, rng)
        first = net.layers[0]
        first.bias_mant[0], first.bias_exp = fx.BIAS_MANT_MAX, 7  # neuron 0 runs into saturation
        for name in ("i_decay", "v_decay"):
            if getattr(first, name) is not None and kind != "lava-cuba":
                getattr(first, name)[0] = 0
        if kind != "lava-cuba" and seed % 2:  # a state clamp inside the 24-bit range (the training clip)
            for lay in net.hidden:
                lay.state_lo = -int(rng.integers(1, 4 * fx.THETA))
                lay.state_hi = int(rng.integers(fx.THETA // 2, 4 * fx.THETA))
        counts = rng.poisson(2.0, (4, 40, 9))
        counts[rng.random(counts.shape) < 0.02] = 600
        ref = run_network(net, counts, record_states=True)
        got = run_batch(net, counts, record_states=True)
        for k in range(2):
            np.testing.assert_array_equal(got["spikes"][k], ref["spikes"][k], err_msg=f"{kind} {seed} layer {k}")
            for name, value in got["states"][k].items():
                np.testing.assert_array_equal(value, ref["states"][k][name], err_msg=f"{kind} {seed} layer {k} {name}")
        np.testing.assert_array_equal(got["readout"], ref["readout"], err_msg=f"{kind} {seed} readout")
        saturated |= any(np.abs(v).max() == fx.STATE_MAX for st in ref["states"] for v in st.values())
        if kind != "lava-cuba" and seed % 2:
            clamped |= any(((v == lay.state_lo) | (v == lay.state_hi)).any()
                           for lay, st in zip(net.hidden, ref["states"]) for n, v in st.items() if n != "s")
    assert saturated
    assert clamped or kind == "lava-cuba"


def test_inputs_from_split_equal_dense_and_counts_add_up():
    from audio.datasets import load_dataset
    split = load_dataset("builtin", bin_hz=50).test
    index = np.array([0, 5, 7, 30])
    a, b = Inputs.from_split(split, index), Inputs.from_dense(split.dense(index).numpy())
    np.testing.assert_array_equal(a.dense(), b.dense())
    assert a.events == int(split.dense(index).sum())
    net = random_qnet("cuba-lif", np.random.default_rng(0), sizes=(700, 6, 5))
    whole = run_fast(net, split, index=np.arange(10), batch=4, progress=False)
    parts = Tally()
    for idx in (np.arange(4), np.arange(4, 10)):
        parts.add(run_fast(net, split, index=idx, progress=False).tally)
    assert whole.tally.equals(parts)
    threaded = run_fast(net, split, index=np.arange(10), batch=4, progress=False, keep_traces=True, threads=3)
    single = run_fast(net, split, index=np.arange(10), batch=4, progress=False, keep_traces=True)
    assert threaded.tally.equals(single.tally) and np.array_equal(threaded.pred, single.pred)
    assert all(np.array_equal(a, b) for a, b in zip(threaded.spikes, single.spikes))
    assert threaded.spikes[0].shape[0] == 10


# ------------------------------------------------------------------------------- a trained network
@pytest.fixture(scope="module")
def trained(tmp_path_factory, _builtin_cache_dir):
    """A Cuba-LIF trained two epochs on the built-in data at 25 Hz, exported for Loihi 2 into its run dir."""
    from train.trainer import TrainConfig, train
    run = tmp_path_factory.mktemp("trained") / "cuba-lif"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        train(TrainConfig(model="cuba-lif", layers=2, hidden=16, bin_hz=25, batch=16, epochs=2, data="builtin"),
              run, progress=False)
        res = _cli("export", run / "best.pt", "--target", "loihi2", "--out", run / "net.h5")
    assert res.exit_code == 0, res.output
    return run


def test_trained_network_lava_equals_fast_and_fixed_point(trained):
    net = read_network(trained / "net.h5")
    _, split = load_split(net, "builtin", "test")
    index = limit_index(split.labels, 6)
    counts = split.dense(index).numpy().astype(np.int64)
    lava = lava_net.run_lava(net, counts, record=True, progress=False, gap=2)
    stream = run_stream(net, split, 2, index, keep_traces=True)
    fast = run_fast(net, split, index=index, keep_traces=True, progress=False)
    with torch.no_grad():
        qat = run_fixed_point(model_from_checkpoint(load_checkpoint(trained / "best.pt")),
                              torch.tensor(counts, dtype=torch.float64))
    assert sum(int(s.sum()) for s in fast.spikes) > 50
    for k in range(2):
        np.testing.assert_array_equal(lava.spikes[k], stream.spikes[k], err_msg=f"layer {k}")
        np.testing.assert_array_equal(qat["spikes"][k].numpy().astype(np.int8), fast.spikes[k], err_msg=f"layer {k}")
    np.testing.assert_array_equal(lava.sample_max, stream.sample_max)
    np.testing.assert_array_equal(stream.alone_max.argmax(axis=1), fast.pred)
    assert lava.tally.equals(stream.tally)
    assert_counts_match_table2(net, lava.tally)


def test_simulate_cli_both_engines(trained):
    """Both engines run the same stream of the same 5 samples: equal predictions, counts and stream check."""
    lava = _cli("simulate", trained / "net.h5", "--engine", "lava", "--limit", "5", "--json", "--quiet")
    assert lava.exit_code == 0, lava.output
    r_lava = json.loads(lava.stdout)
    fast = _cli("simulate", trained / "net.h5", "--engine", "fast", "--limit", "5", "--json", "--quiet")
    assert fast.exit_code == 0, fast.output
    r_fast = json.loads(fast.stdout)
    assert r_lava["samples"] == r_fast["samples"] == 5 and r_lava["index"] == r_fast["index"]
    assert r_lava["tally_from"] == "lava" and r_fast["tally_from"] == "fast"
    assert r_lava["pred"] == r_fast["pred"] and r_lava["stream"] == r_fast["stream"]
    assert {k: v for k, v in r_lava["tally"].items() if k != "source"} == \
        {k: v for k, v in r_fast["tally"].items() if k != "source"}
    text = _cli("simulate", trained / "net.h5", "--engine", "fast", "--quiet")
    assert text.exit_code == 0 and "accuracy" in text.output and "MAC+AC" in text.output, text.output
    assert "stream: 60 samples back to back" in text.output and "stream check (fast engine)" in text.output


def test_limit_takes_the_same_samples_in_eval_simulate_compare_and_report(trained, tmp_path):
    """--limit N: N samples spread over the classes (audio.datasets.limit_index), the same in every command."""
    ev = json.loads(_cli("eval", trained / "best.pt", "--limit", "10", "--json").stdout)
    sim = json.loads(_cli("simulate", trained / "net.h5", "--engine", "fast", "--limit", "10", "--json",
                          "--quiet").stdout)
    cmp = json.loads(_cli("compare", trained / "net.h5", "--limit", "10", "--json", "--quiet").stdout
                     .rsplit("measured_vs_predicted_fixed=", 1)[0])
    assert ev["index"] == sim["index"] == cmp["index"] and len(ev["index"]) == 10
    _, split = load_split(read_network(trained / "net.h5"), None, "test")
    labels = np.asarray(split.labels)[ev["index"]]
    assert np.bincount(labels).min() >= 1 and np.bincount(labels).max() <= 2  # 10 over 6 classes: 1 or 2 each
    from sim.report import collect
    (measured,) = collect(trained, progress=False, limit=10)["runs"][0]["fixed_point"]
    assert measured["samples"] == 10 and measured["accuracy"] == pytest.approx(sim["accuracy"])


def test_compare_cli_measured_equals_predicted(trained):
    res = _cli("compare", trained / "net.h5", "--limit", "4", "--quiet", "--e-mac", "3.1", "--e-ac", "0.1")
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1] == "measured_vs_predicted_fixed=0", res.output
    assert "predictions equal, counts equal" in res.output
    assert "float model" in lines[0] and "3.1 pJ/MAC, 0.1 pJ/AC" in res.output
    total_ac = [l for l in lines if l.startswith("total") and " AC " in l][0].split()
    assert total_ac[4] == total_ac[5] == total_ac[3]  # Lava, fast, predicted fixed
    assert re.search(r"accuracy on these 4 samples: float [\d.]+ %, fixed point [\d.]+ %, Lava [\d.]+ %", res.output)


def test_report_html_and_markdown(trained, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained, runs / "a" / "cuba-lif")
    html_out = tmp_path / "report.html"
    res = _cli("report", runs, "--out", html_out, "--quiet")
    assert res.exit_code == 0, res.output
    text = html_out.read_text()
    assert "data:image/png;base64," in text and "Table 1" in text and "Table 2" in text and "cuba-lif" in text
    assert re.search(r"\d+\.\d\d % \(1 run\)", text) and "+- 0.00 %" not in text  # one run: no CI
    md_out = tmp_path / "report.md"
    res = _cli("report", runs, "--out", md_out, "--quiet")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    row = [l for l in md_out.read_text().splitlines() if l.startswith("| test-split | cuba-lif")][0]
    measured = [c.strip() for c in row.split("|")[10:13]]
    assert all(re.fullmatch(r"[\d,]+", c) for c in measured), row  # measured columns filled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md", "report.png", "runs"]  # no temp
    (tmp_path / "empty").mkdir()
    assert "no trained models" in _one_line_error(_cli("report", tmp_path / "empty", "--out", tmp_path / "o.md"))
    assert "no such runs directory" in _one_line_error(_cli("report", tmp_path / "none", "--out", tmp_path / "o.md"))
    assert ".html or a .md" in _one_line_error(_cli("report", runs, "--out", tmp_path / "r.txt"))


# ---------------------------------------------------------------------------------------- bad input
def test_bad_files_and_options(trained, tmp_path):
    other = tmp_path / "v2.h5"
    shutil.copy(trained / "net.h5", other)
    with h5py.File(other, "r+") as f:
        f.attrs["format_version"] = 2
    das = write_das_file(tmp_path / "das.hdf5", {
        split: {f"ab{k}-{d}a": (np.sort(np.random.default_rng(k).uniform(0, 1, 30)),
                                np.random.default_rng(k).integers(0, 64, 30)) for k, d in enumerate("12345z")}
        for split in ("train", "test")})
    text = tmp_path / "x.h5"
    text.write_text("not a network")
    cases = [((other, "--engine", "fast"), "format version 2"),
             ((other, "--engine", "lava"), "format version 2"),
             ((trained / "net.h5", "--data", das), "N-TIDIGITS18 layout (64 channels)"),
             ((trained / "net.h5", "--engine", "lava", "--data", das), "takes 700"),
             ((trained / "net.h5", "--backend", "loihi2"), "lava-loihi"),
             ((trained / "net.h5", "--limit", "0"), "--limit"),
             ((trained / "net.h5", "--engine", "fast", "--threads", "0"), "--threads must be at least 1"),
             ((trained / "net.h5", "--stock-netx"), "--stock-netx needs a --netx-compatible file"),
             ((trained / "net.h5", "--gap", "-1"), "--gap must be at least 0"),
             ((trained / "net.h5", "--gap", "3", "--raw-stream"), "--raw-stream is --gap 0"),
             ((text,), "not an HDF5 file"),
             ((tmp_path / "none.h5",), "no such file")]
    for args, message in cases:
        line = _one_line_error(_cli("simulate", *args, "--quiet"))
        assert message in line, line
    assert "format version 2" in _one_line_error(_cli("compare", other, "--quiet"))
    assert "takes 700" in _one_line_error(_cli("compare", trained / "net.h5", "--data", das, "--quiet"))


class _FaultyCubaLIF(PyCubaLIFModelFixed):
    """Fails on Lava step 40, in the middle of the second sample."""

    def update(self, a):
        if self.tau == 40:
            raise ArithmeticError("neuron fault at step 40")
        return super().update(a)


def test_lava_failure_mid_run_stops_cleanly(trained, monkeypatch):
    """A ProcessModel raising mid-run: one line naming the failure, exit code 2, nothing of the run printed,
    the runtime stopped (the autouse fixture checks no Lava process is left)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    monkeypatch.setattr(lava_net, "Loihi2SimCfg", lambda select_tag="fixed_pt": Loihi2SimCfg(
        select_tag=select_tag, exception_proc_model_map={CubaLIF: _FaultyCubaLIF}))
    for command in ("simulate", "compare"):
        line = _one_line_error(_cli(command, trained / "net.h5", "--limit", "3", "--quiet"))
        assert "Lava run failed" in line and "neuron fault at step 40" in line and "no results" in line, line


# ----------------------------------------------------------------------------------- stock netx files
@pytest.fixture(scope="module")
def netx_run(tmp_path_factory, _builtin_cache_dir):
    """A 2-layer --lava-cuba Cuba-LIF trained a few epochs on the built-in data, exported --netx-compatible."""
    from train.trainer import config_from_options, train
    run = tmp_path_factory.mktemp("netx") / "lc"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        train(config_from_options(model="cuba-lif", layers=2, hidden=16, bin_hz=50, batch=16, epochs=4,
                                  data="builtin", lava_cuba=True), run, progress=False)
        res = _cli("export", run / "best.pt", "--out", run / "nx.h5", "--netx-compatible")
    assert res.exit_code == 0, res.output
    return run


def test_netx_compatible_file_counted_build_equals_fast(netx_run):
    """The counting Lava build of a --netx-compatible file equals the fast engine on the same stream."""
    counted = json.loads(_cli("simulate", netx_run / "nx.h5", "--limit", "3", "--json", "--quiet").stdout)
    fast = json.loads(_cli("simulate", netx_run / "nx.h5", "--engine", "fast", "--limit", "3", "--json",
                           "--quiet").stdout)
    assert counted["tally_from"] == "lava" and counted["netx_compatible"]
    assert counted["pred"] == fast["pred"] and counted["index"] == fast["index"]


def test_stock_netx_stream_equals_fast_engine_whatever_the_gap(netx_run):
    """12 test samples through stock netx, 2 silent steps after each: every layer's spikes and every readout
    maximum equal the fast engine's account of the stream (sim.stream.run_stream). The trained fixture does not
    fall silent (quiet_gap says so), so spikes cross from sample to sample, and the account includes them."""
    net = read_network(netx_run / "nx.h5")
    _, split = load_split(net, None, "test")
    assert quiet_gap(net, split).gap is None
    index = limit_index(split.labels, 12)
    counts = split.dense(index).numpy().astype(np.int64)
    stream = run_stream(net, counts, 2, keep_traces=True)
    assert stream.carried.size > 5 and len(set(stream.alone_max.argmax(axis=1).tolist())) > 1
    stock = lava_net.run_stock_netx(netx_run / "nx.h5", net, counts, record=True, progress=False, gap=2)
    for k in range(2):
        np.testing.assert_array_equal(stock.spikes[k], stream.spikes[k], err_msg=f"layer {k}")
    np.testing.assert_array_equal(stock.sample_max, stream.sample_max)


def test_compare_stock_netx_column(netx_run):
    res = _cli("compare", netx_run / "nx.h5", "--limit", "10", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout.rsplit("\nmeasured_vs", 1)[0])
    assert r["netx_compatible"] and r["stock_netx"]["agree_with_fast"] == 10
    assert r["accuracy"]["stock_netx"] == r["accuracy"]["stream"] and r["stock_netx"]["accuracy_minus_fast_points"] == 0
    text = _cli("compare", netx_run / "nx.h5", "--limit", "2", "--quiet").output
    assert "stock netx (lava-dl's own layers, the route onto Loihi 2) vs fast engine: 2 of 2 predictions equal" in text


# ------------------------------------------------------------------------------ the gapped stream
def relay_network() -> QNetwork:
    """A hand-set --netx-compatible network (2 input channels, Lava CUBA 6 -> 7, 3 classes) whose gap is necessary,
    deterministically. Layer 1: A1..A5 copy channel 0, C copies channel 1, no recurrence. Layer 2: A'1..A'5 copy
    A1..A5, C' copies C; B' gets 5 x 0.25 thresholds from A'1..A'5 through the recurrent synapse, so it fires
    the step after all A' fire. Readout: class 0 <- A', class 1 <- B', class 2 <- C'. A sample on channel 0 (X)
    keeps the A' firing for a few steps after its input ends (their current decays); a sample on channel 1 (Y)
    never makes B' fire, unless the A' spike on the step before its reset: then B' fires on Y's first step."""
    W1 = np.zeros((6, 2), np.int64)
    W1[:5, 0] = W1[5, 1] = 127
    W2 = np.zeros((7, 6), np.int64)
    W2[np.arange(5), np.arange(5)] = W2[6, 5] = 127
    U2 = np.zeros((7, 7), np.int64)
    U2[5, :5] = 127
    Wo = np.zeros((3, 7), np.int64)
    Wo[0, :5], Wo[1, 5], Wo[2, 6] = 20, 127, 127
    hidden = []
    for W, U in ((W1, np.zeros((6, 6), np.int64)), (W2, U2)):
        layer = QLayer("lava-cuba", Synapse(W, 1), Synapse(U, 1), bias_mant=np.full(len(W), -64), bias_exp=6)
        layer.du, layer.v_decay = 800, np.array([400])
        hidden.append(layer)
    readout = QLayer("readout", Synapse(Wo, 1), bias_mant=np.zeros(3, np.int64), bias_exp=6, v_decay=np.full(3, 400))
    return QNetwork(hidden + [readout], {"bin_hz": 50.0})


def relay_samples() -> np.ndarray:
    """X, Y, X, Y: 40 steps each, X on channel 0 for 30 steps, Y on channel 1 for 10."""
    x = np.zeros((4, 40, 2), np.int64)
    x[0::2, :30, 0] = 2
    x[1::2, :10, 1] = 2
    return x


def test_one_gap_step_fewer_makes_a_sample_differ(tmp_path):
    """The gap quiet_gap chooses (the smallest after which every calibration sample is silent) is necessary: one
    step fewer and the A' spikes of X land on Y's reset step, B' fires on Y's first step and Y's class-1 maximum
    is no longer 0; with the gap every sample equals its answer alone. The fast engine's account, our Lava
    processes and stock netx agree spike for spike on both streams (zero Var writes, netx's own reset)."""
    net = relay_network()
    path = write_network(tmp_path / "relay.h5", net, netx_compatible=True)
    counts = relay_samples()
    choice = quiet_gap(net, counts, horizon=40)
    assert choice.gap == 4 and choice.last.tolist() == [42, -1, 42, -1]  # A' last spike: step 42 of X
    alone = run_batch(net, counts)["readout"].max(axis=1)
    assert alone[1, 1] == 0
    for gap, differs in ((choice.gap - 1, [1, 3]), (choice.gap, [])):
        stream = run_stream(net, counts, gap, keep_traces=True)
        np.testing.assert_array_equal(stream.alone_max, alone)
        assert stream.differs.tolist() == differs, gap
        assert (stream.sample_max[differs, 1] > 0).all()
        ours = lava_net.run_lava(net, counts, record=True, progress=False, gap=gap)
        stock = lava_net.run_stock_netx(path, net, counts, record=True, progress=False, gap=gap)
        for k in range(2):
            np.testing.assert_array_equal(ours.spikes[k], stream.spikes[k], err_msg=f"ours, gap {gap}, layer {k}")
            np.testing.assert_array_equal(stock.spikes[k], stream.spikes[k], err_msg=f"netx, gap {gap}, layer {k}")
        np.testing.assert_array_equal(ours.sample_max, stream.sample_max)
        np.testing.assert_array_equal(stock.sample_max, stream.sample_max)
        assert ours.tally.equals(stream.tally)
    # A'1 driven by its bias fires in the pipeline's warm-up and never falls silent: no gap makes the samples
    # independent; the account still equals both Lava forms, the first sample's carry from the warm-up included
    net.hidden[1].bias_mant[0] = 1000
    path = write_network(tmp_path / "biased.h5", net, netx_compatible=True)
    assert quiet_gap(net, counts, horizon=40).gap is None
    stream = run_stream(net, counts, 2)
    assert stream.carried.tolist() == [0, 1, 2, 3]
    for run in (lava_net.run_lava(net, counts, progress=False, gap=2),
                lava_net.run_stock_netx(path, net, counts, progress=False, gap=2)):
        np.testing.assert_array_equal(run.sample_max, stream.sample_max)


def quiet_network(data: str, n_classes: int, seed: int = 2, drive: float = 0.0) -> QNetwork:
    """A random --netx-compatible Lava CUBA 700 -> 24 -> 24 network that falls silent when its input does
    (negative biases, a recurrence without loops: strictly lower-triangular, so nothing sustains itself),
    binned at 50 Hz from `data` (its validation split chooses the gap); `drive`: the mean input weight."""
    rng = np.random.default_rng(seed)
    layers, m = [], 700
    for mu in (drive, 25.0):
        ff = Synapse(np.clip(rng.normal(mu, 6.0 if m == 700 else 40.0, (24, m)), -128, 127).astype(np.int64), 1)
        rec = Synapse(np.tril(rng.integers(0, 128, (24, 24)) * (rng.random((24, 24)) < 0.3), -1), 1)
        layer = QLayer("lava-cuba", ff, rec, bias_mant=rng.integers(-2000, -500, 24), bias_exp=6)
        layer.du, layer.v_decay = 440, np.array([430])
        layers.append(layer)
        m = 24
    readout = QLayer("readout", Synapse(rng.integers(-128, 128, (n_classes, 24)), 1),
                     bias_mant=np.zeros(n_classes, np.int64), bias_exp=6, v_decay=np.full(n_classes, 400))
    origin = {"data": data, "bin_hz": 50.0, "duration": 1.0, "n_channels": 700, "layout": "shd", "seed": 0,
              "holdout_speaker": None, "valid_speaker": "auto"}
    return QNetwork(layers + [readout], {"bin_hz": 50.0, "duration": 1.0, "origin": origin, "model": "cuba-lif",
                                         "class_names": [str(c) for c in range(n_classes)]})


@pytest.mark.skipif(not (SHARED_DATA / "fsdd-shd").exists(), reason="../shared/data/fsdd-shd not present")
def test_stock_netx_real_samples_equal_fast_engine_without_writes(tmp_path, monkeypatch):
    """30 real test samples (fsdd-shd) through stock netx with the default gap (chosen on the validation split):
    every sample's readout maxima and class equal the fast engine's for the sample alone, and nothing is written
    into the network while it runs (Var.set is never called)."""
    from lava.magma.core.process.variable import Var

    net = quiet_network(str(SHARED_DATA / "fsdd-shd"), 10)
    path = write_network(tmp_path / "quiet.h5", net, netx_compatible=True)
    gap, how = stream_gap(net, None, False, None, None, path)
    assert gap > 10 and "every one of 225 validation samples is silent" in how, how
    _, split = load_split(net, None, "test")
    counts = split.dense(limit_index(split.labels, 30)).numpy().astype(np.int64)
    alone = run_batch(net, counts)["readout"].max(axis=1)
    assert len(set(alone.argmax(axis=1).tolist())) > 2
    writes = []
    original = Var.set
    monkeypatch.setattr(Var, "set", lambda self, *a, **k: (writes.append(self.name), original(self, *a, **k))[1])
    stock = lava_net.run_stock_netx(path, net, counts, progress=False, gap=gap)
    assert writes == []
    np.testing.assert_array_equal(stock.sample_max, alone)
    np.testing.assert_array_equal(stock.pred, alone.argmax(axis=1))
    assert run_stream(net, counts, gap).gap_spikes > 0  # the gap was not idle: spikes landed in it


def test_fast_engine_gapped_stream_equals_samples_alone(tmp_path):
    """The whole built-in test split as one gapped stream in the fast engine (simulate --engine fast, the gap
    chosen on the validation split): every prediction equals the sample's alone, and the stream check says so;
    the gap's cost is printed. With --raw-stream (no gap) the check names the sample the carry changes."""
    net = quiet_network("builtin", 6, seed=2, drive=6.0)
    path = write_network(tmp_path / "quiet.h5", net, netx_compatible=True)
    r = json.loads(_cli("simulate", path, "--engine", "fast", "--json", "--quiet").stdout)
    text = _cli("simulate", path, "--engine", "fast", "--quiet").output
    raw = json.loads(_cli("simulate", path, "--engine", "fast", "--raw-stream", "--json", "--quiet").stdout)
    _, split = load_split(net, None, "test")
    alone = run_fast(net, split, progress=False)
    st = r["stream"]
    assert st["gap"] > 0 and st["differs"] == [] and r["pred"] == alone.pred.tolist()
    assert r["tally"]["spikes"] == alone.tally.spikes and r["samples"] == len(split)
    assert f"gap cost: {50 + st['gap']} steps per sample" in text and f"+{st['gap'] * 54} neuron updates" in text
    assert "every sample's answer equals its answer alone" in text
    assert raw["stream"]["gap"] == 0 and len(raw["stream"]["differs"]) == 1
    assert raw["stream"]["accuracy_alone"] == float(np.mean(alone.pred == alone.labels))


# ------------------------------------------------------------------------------- op counts that can fail
def test_lava_counters_equal_an_independent_count(trained):
    """Every Lava counter against a count written here from scratch (numpy on the recorded spikes and the
    weight matrices read straight from the HDF5 file; nothing shared with sim.engine or lava_procs)."""
    path = trained / "net.h5"
    net = read_network(path)
    _, split = load_split(net, None, "test")
    counts = np.minimum(split.dense(limit_index(split.labels, 5)).numpy().astype(np.int64), 255)
    lava = lava_net.run_lava(net, counts, record=True, progress=False)
    with h5py.File(path, "r") as f:
        W = [f[f"layer/{i}/weight"][()] for i in (1, 2, 3)]
        U = [f[f"layer/{i}/weight_rec"][()] for i in (1, 2)]
    sources = [counts] + lava.spikes  # what feeds layer1, layer2, the readout: [N, T, width]
    want = {}
    for k, (name, w) in enumerate(zip(["layer1", "layer2", "readout"], W)):
        src = sources[k]
        want[f"{name}.ff"] = (int(src.sum()) * w.shape[0], int(np.count_nonzero(src)),
                              int(sum(np.count_nonzero(w[:, j]) for j in np.nonzero(src)[2])))
    for k, u in enumerate(U):
        s = lava.spikes[k]
        want[f"layer{k + 1}.rec"] = (int(s.sum()) * u.shape[0], int(s.sum()),
                                     int(sum(np.count_nonzero(u[:, j]) for j in np.nonzero(s)[2])))
    c = lava.tally
    for key, (events, messages, nonzero) in want.items():
        assert (c.syn_events[key], c.messages[key], c.syn_ops_nz[key]) == (events, messages, nonzero), key
    assert c.input_events == int(counts.sum()) and c.input_messages == int(np.count_nonzero(counts))
    N, T = counts.shape[:2]
    # Table 2's neuron terms of a Cuba-LIF layer (3n MAC; n bias AC + one reset AC per spike) and the readout
    for k, s in enumerate(lava.spikes):
        n = s.shape[2]
        assert c.neuron_ops[f"layer{k + 1}"] == (3 * n * N * T, n * N * T + int(s.sum()))
    assert c.neuron_ops["readout"] == (6 * N * T, 6 * N * T)
    assert any(c.syn_ops_nz[k] < c.syn_events[k] for k in want)  # the counts differ where the chip differs


def test_trained_fixed_point_ops_stay_near_the_float_model(trained):
    """After export, the fixed-point network's operations are within 2 % of what Table 2 predicts from the float
    model's activity (total MAC + AC per step), on the whole test split."""
    r = json.loads(_cli("compare", trained / "net.h5", "--limit", "60", "--json", "--quiet").stdout
                   .rsplit("\nmeasured_vs", 1)[0])
    total = {op: r["total"][op] for op in ("mac", "ac")}
    flt = total["mac"]["float"] + total["ac"]["float"]
    fixed = total["mac"]["fixed"] + total["ac"]["fixed"]
    assert r["samples"] == r["split_samples"] == 60
    assert abs(fixed - flt) / flt < 0.02, (fixed, flt)
    assert r["accuracy"]["fixed_split"] >= r["accuracy"]["float_split"] - 0.1
