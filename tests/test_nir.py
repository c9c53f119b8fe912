"""NIR in and out: the Braille graphs written by snnTorch, read by us and independently by Norse; to Loihi 2 fixed
point and Lava; our models to NIR and back."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from conftest import one_line_error, run_cli, write_shd_file
from export import fixed_point as fx
from export.netx_h5 import read_network
from export.quantize import quantize_checkpoint
from nir_io.graph import layers_of
from nir_io.norse_reading import run_norse
from nir_io.to_model import graph_to_model
from sim.integer_net import run_batch
from train.checkpoint import load_checkpoint, save_checkpoint
from train.models import ModelConfig, build_model, model_from_checkpoint

NIR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nir"
BRAILLE = {"zero": NIR_DIR / "braille_noDelay_bias_zero.nir", "subtract": NIR_DIR / "braille_noDelay_noBias_subtract.nir"}
DT = 1e-4
STEPS = 256

needs_braille = pytest.mark.skipif(not NIR_DIR.is_dir(), reason="../shared/data/nir is not present")


def small_graph(metadata: dict | None = None, bias=None) -> nir.NIRGraph:
    """A Braille-shaped graph of our own (12 -> CubaLIF 6 with a recurrent loop -> CubaLIF 3), same node names."""
    rng = np.random.default_rng(0)
    cuba = lambda n: nir.CubaLIF(tau_syn=np.full(n, 2e-4), tau_mem=np.full(n, 1e-3), r=np.ones(n), v_leak=np.zeros(n),
                                 v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.ones(n))
    fc1 = nir.Linear(weight=rng.normal(size=(6, 12))) if bias is None else \
        nir.Affine(weight=rng.normal(size=(6, 12)), bias=np.asarray(bias))
    nodes = {"input": nir.Input(input_type={"input": np.array([12])}), "fc1": fc1, "lif1.lif": cuba(6),
             "lif1.w_rec": nir.Linear(weight=rng.normal(size=(6, 6))), "fc2": nir.Linear(weight=rng.normal(size=(3, 6))),
             "lif2": cuba(3), "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc1"), ("fc1", "lif1.lif"), ("lif1.lif", "lif1.w_rec"), ("lif1.w_rec", "lif1.lif"),
             ("lif1.lif", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {}, type_check=False)


def braille_model(reset: str):
    cfg, state, _ = graph_to_model(nir.read(BRAILLE[reset]), DT, reset)
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval()


def random_spikes(batch: int, rate: float, seed: int) -> torch.Tensor:
    return (torch.rand(batch, STEPS, 12, generator=torch.Generator().manual_seed(seed)) < rate).float()


# ------------------------------------------------------------------------------------------------ import
@needs_braille
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_braille_graph_imports_and_commands_take_it(reset, tmp_path):
    res = run_cli("import-nir", BRAILLE[reset], "--out", tmp_path / "m", "--dt", DT, "--reset", reset,
                  "--bin-hz", 200, "--duration", STEPS / 200, "--json")
    assert res.exit_code == 0, res.output
    desc = json.loads(res.output)
    hidden = 38 if reset == "zero" else 40
    assert desc["model"] == "cuba-lif" and desc["widths"] == [hidden, 7] and desc["n_in"] == 12
    ckpt = load_checkpoint(tmp_path / "m")
    cfg = ModelConfig(**ckpt["model"])
    assert cfg.recurrent == [True, False] and cfg.options["reset"] == reset and cfg.options["spike_count_readout"]
    # the decays are forward Euler at dt: lif1 of the zero graph has tau_syn 2.2222e-4, tau_mem 1e-3
    if reset == "zero":
        np.testing.assert_allclose(ckpt["state_dict"]["hidden_layers.0.alpha"].numpy(), 1 - DT / 2.2222222e-4, rtol=1e-5)
        np.testing.assert_allclose(ckpt["state_dict"]["hidden_layers.0.beta"].numpy(), 0.9, rtol=1e-6)
    # eval, export, simulate and compare take the checkpoint as it is (on a 12-channel file of random spikes)
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 1.2, 60)).astype(np.float32) for _ in range(7)]
    units = [rng.integers(0, 12, 60) for _ in range(7)]
    data = write_shd_file(tmp_path / "taxels.h5", times, units, labels=np.arange(7))
    ev = run_cli("eval", tmp_path / "m", "--data", data)
    assert ev.exit_code == 0, ev.output
    assert run_cli("export", tmp_path / "m", "--out", tmp_path / "net.h5", "--split-weights").exit_code == 0
    sim = run_cli("simulate", tmp_path / "net.h5", "--data", data, "--engine", "fast", "--json")
    assert sim.exit_code == 0, sim.output
    cmp = run_cli("compare", tmp_path / "net.h5", "--data", data, "--checkpoint", tmp_path / "m", "--limit", 2)
    assert cmp.exit_code == 0, cmp.output


@needs_braille
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_float_forward_equals_norse_reading_of_the_file(reset):
    """Our float model and Norse's independent import, on the same random 12-channel spikes for 256 steps: every
    hidden and output spike equal."""
    x = random_spikes(4, 0.1, seed=1)
    with torch.no_grad():
        _, ours = braille_model(reset)(x, return_hidden=True)
    theirs = run_norse(BRAILLE[reset], DT, reset, x)
    assert ours[0].sum() > 100 and ours[1].sum() > 10  # the networks are active
    for a, b in zip(ours, [theirs["lif1.lif"], theirs["lif2"]]):
        assert torch.equal(a, b)


@needs_braille
def test_nested_subgraph_maps_as_the_flat_graph():
    """snnTorch's importer wraps the recurrent loop into a subgraph node; it must map to the same model."""
    flat = nir.read(BRAILLE["zero"])
    inner = {"input": nir.Input(input_type={"input": np.array([38])}), "lif": flat.nodes["lif1.lif"],
             "w_rec": flat.nodes["lif1.w_rec"], "output": nir.Output(output_type={"output": np.array([38])})}
    sub = nir.NIRGraph(nodes=inner, edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                       type_check=False)
    nodes = {k: v for k, v in flat.nodes.items() if k not in ("lif1.lif", "lif1.w_rec")}
    nodes["lif1"] = sub
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    nested = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    a, b = graph_to_model(flat, DT, "zero")[1], graph_to_model(nested, DT, "zero")[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_per_neuron_parameters_and_li_readout():
    rng = np.random.default_rng(3)
    n, k = 5, 3
    tau_syn, tau_mem = rng.uniform(2e-4, 1e-3, n), rng.uniform(2e-4, 1e-3, n)
    th, r, w_in = rng.uniform(0.5, 2, n), rng.uniform(1, 5, n), rng.uniform(0.5, 2, n)
    W, U = rng.normal(size=(n, 4)), rng.normal(size=(n, n))
    tau_o = rng.uniform(2e-4, 1e-3, k)
    graph = nir.NIRGraph(nodes={
        "in": nir.Input(input_type={"input": np.array([4])}), "w": nir.Linear(weight=W),
        "cuba": nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.zeros(n), v_threshold=th,
                            v_reset=np.zeros(n), w_in=w_in),
        "u": nir.Linear(weight=U), "wo": nir.Affine(weight=rng.normal(size=(k, n)), bias=rng.normal(size=k)),
        "li": nir.LI(tau=tau_o, r=np.full(k, 2.0), v_leak=np.zeros(k)), "out": nir.Output(output_type={"output": np.array([k])})},
        edges=[("in", "w"), ("w", "cuba"), ("cuba", "u"), ("u", "cuba"), ("cuba", "wo"), ("wo", "li"), ("li", "out")])
    cfg, state, _ = graph_to_model(graph, DT, "subtract")
    assert not cfg.options.get("spike_count_readout") and cfg.options["reset"] == "subtract"
    np.testing.assert_allclose(state["hidden_layers.0.alpha"].numpy(), 1 - DT / tau_syn, rtol=1e-6)
    np.testing.assert_allclose(state["hidden_layers.0.beta"].numpy(), 1 - DT / tau_mem, rtol=1e-6)
    gain = (DT / tau_syn) * w_in * r / th
    np.testing.assert_allclose(state["hidden_layers.0.W"].numpy(), gain[:, None] * W, rtol=1e-5)
    np.testing.assert_allclose(state["hidden_layers.0.U"].numpy(), gain[:, None] * U, rtol=1e-5)
    np.testing.assert_allclose(state["readout.beta"].numpy(), 1 - DT / tau_o, rtol=1e-6)


def _graph_with(extra: dict, edges: list) -> nir.NIRGraph:
    g = small_graph()
    return nir.NIRGraph(nodes={**g.nodes, **extra}, edges=g.edges + edges, type_check=False)


def test_unmappable_nodes_are_listed_in_one_line(tmp_path):
    g = _graph_with({"conv": nir.Conv1d(input_shape=12, weight=np.ones((2, 1, 3)), stride=1, padding=0, dilation=1,
                                        groups=1, bias=np.zeros(2)),
                     "delay": nir.Delay(delay=np.ones(7))},
                    [("input", "conv"), ("lif2", "delay")])
    nir.write(tmp_path / "bad.nir", g)
    line = one_line_error(run_cli("import-nir", tmp_path / "bad.nir", "--out", tmp_path / "m", "--dt", DT))
    assert "Conv1d 'conv'" in line and "Delay 'delay'" in line
    assert not (tmp_path / "m" / "best.pt").exists()


def test_bad_input_gets_one_line_errors(tmp_path):
    out = tmp_path / "m"
    nir.write(tmp_path / "g.nir", small_graph())
    assert "--dt" in one_line_error(run_cli("import-nir", tmp_path / "g.nir", "--out", out))
    assert "overshoots" in one_line_error(run_cli("import-nir", tmp_path / "g.nir", "--out", out, "--dt", 1e-2))
    (tmp_path / "junk.nir").write_bytes(b"not a graph")
    assert "junk.nir" in one_line_error(run_cli("import-nir", tmp_path / "junk.nir", "--out", out, "--dt", DT))
    g = small_graph()
    g.nodes["lif2"].v_leak = np.full(3, 0.5)
    nir.write(tmp_path / "leak.nir", g)
    assert "v_leak" in one_line_error(run_cli("import-nir", tmp_path / "leak.nir", "--out", out, "--dt", DT))
    assert not out.exists()
    assert run_cli("import-nir", tmp_path / "g.nir", "--out", out, "--dt", DT).exit_code == 0
    assert "already holds an imported model" in one_line_error(run_cli("import-nir", tmp_path / "g.nir", "--out", out,
                                                                       "--dt", DT))


@pytest.mark.parametrize("metadata,bias,words", [
    ({"dt": DT}, np.zeros(5), "node 'fc1': 'bias' has 5 values for 6 outputs"),
    ({"dt": DT}, np.array([b"a"] * 6), "node 'fc1': 'bias' is not numeric"),
    ({"dt": "abc"}, None, "metadata 'dt' is 'abc', not one positive number of seconds"),
    ({"dt": np.array([1e-4, 2e-4])}, None, "metadata 'dt' is array([0.0001, 0.0002]), not one positive number"),
    ({"dt": DT, "reset": np.array([1, 2])}, None, "metadata 'reset' is array([1, 2]), not one of zero, subtract"),
])
def test_malformed_graph_is_one_line_naming_the_file_and_field(metadata, bias, words, tmp_path):
    nir.write(tmp_path / "bad.nir", small_graph(metadata, bias))
    line = one_line_error(run_cli("import-nir", tmp_path / "bad.nir", "--out", tmp_path / "m"))
    assert "bad.nir" in line and words in line, line
    assert not (tmp_path / "m").exists()


def test_import_never_replaces_its_graph_nor_a_run_of_another_kind(tmp_path):
    """A graph stored as OUT/import.json or OUT/best.pt is an input: never replaced, --force or not; a training
    run is not an import's directory: its best.pt stays and it still resumes."""
    d = tmp_path / "d"
    d.mkdir()
    for name in ("import.json", "best.pt"):
        nir.write(d / name, small_graph({"dt": DT}))
        before = (d / name).read_bytes()
        for force in ([], ["--force"]):
            line = one_line_error(run_cli("import-nir", d / name, "--out", d, *force))
            assert f"holds {name}, an input of this command" in line
        assert (d / name).read_bytes() == before
        (d / name).unlink()
    nir.write(tmp_path / "g.nir", small_graph({"dt": DT}))
    run = tmp_path / "run"
    assert run_cli("train", "--model", "lif", "--layers", 1, "--hidden", 4, "--bin-hz", 25, "--batch", 32, "--epochs", 1,
                   "--out", run, "--quiet").exit_code == 0
    before = (run / "best.pt").read_bytes()
    line = one_line_error(run_cli("import-nir", tmp_path / "g.nir", "--out", run, "--force"))
    assert "holds a run (config.json, metrics.jsonl, last.pt, summary.json, best.pt), not an imported model" in line
    assert (run / "best.pt").read_bytes() == before and not (run / "import.json").exists()
    assert run_cli("train", "--resume", run, "--epochs", 2, "--quiet").exit_code == 0


# ------------------------------------------------------------------------------------------ fixed point
def _exported(reset: str, tmp_path: Path, split: bool):
    run_cli("import-nir", BRAILLE[reset], "--out", tmp_path / reset, "--dt", DT, "--reset", reset)
    args = ["--split-weights"] if split else []
    res = run_cli("export", tmp_path / reset, "--out", tmp_path / f"{reset}.h5", *args)
    assert res.exit_code == 0, res.output
    return read_network(tmp_path / f"{reset}.h5")


@needs_braille
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_braille_in_lava_equals_fast_engine(reset, tmp_path, no_lava_process_left):
    from sim.lava_net import run_lava
    from sim.stream import run_stream
    net = _exported(reset, tmp_path, split=True)
    assert net.hidden[0].vth_mant < fx.VTH_MANT  # weights of tens of thresholds: a lower threshold mantissa
    x = random_spikes(2, 0.05, seed=5).numpy().astype(np.int64)
    fast = run_stream(net, x, 0, keep_traces=True)  # the stream Lava runs, the split weights' carry included
    lava = run_lava(net, x, record=True, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(fast.spikes, lava.spikes))
    assert np.array_equal(fast.sample_max, lava.sample_max)
    assert fast.tally.equals(lava.tally)
    assert fast.spikes[0].sum() > 50
    np.testing.assert_array_equal(fast.alone_max[0], run_batch(net, x)["readout"][0].max(axis=0))


@needs_braille
def test_fixed_point_decides_as_the_float_model(tmp_path):
    """On random inputs the split-weight fixed-point network keeps >= 99 % of the hidden spikes and picks the
    float model's class (most output spikes) on >= 90 % of the samples; plain 8-bit weights do worse."""
    x = random_spikes(100, 0.03, seed=7)
    for reset in ("zero", "subtract"):
        with torch.no_grad():
            _, h = braille_model(reset)(x, return_hidden=True)
        want = h[-1].sum(1).argmax(-1).numpy()
        agree = {}
        for split in (False, True):
            r = run_batch(_exported(reset, tmp_path / str(split), split), x.numpy().astype(np.int64))
            agree[split] = float(np.mean(r["spikes"][-1].sum(1).argmax(-1) == want))
            if split:
                assert np.mean(r["spikes"][0] == h[0].numpy()) >= 0.99
        assert agree[True] >= 0.9 and agree[True] > agree[False], (reset, agree)


# ------------------------------------------------------------------------------------------------ export
def _checkpoint(tmp_path: Path, kind: str, options: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind, 6, 3, 2, 9, options)
    model = build_model(cfg)
    if kind in ("lif", "cuba-lif"):
        with torch.no_grad():
            for layer in model.hidden_layers:
                layer.W.mul_(3)
    save_checkpoint(tmp_path / "best.pt", {"model": asdict(cfg), "state_dict": model.state_dict(), "epoch": 1,
                                           "data": {"spec": {"bin_hz": 100.0, "duration": 1.0, "n_channels": 6}}})
    return tmp_path


@pytest.mark.parametrize("kind,options", [
    ("cuba-lif", {"reset": "subtract", "clip": None}),
    ("cuba-lif", {"reset": "zero", "clip": None, "readout_current": True}),
    ("lif", {"reset": "zero", "clip": None}),
    ("lif", {"clip": None}),  # the study's late reset: a same-step subtraction with -(1 - beta) on U's diagonal
])
def test_round_trip_ours_nir_ours_gives_identical_outputs(kind, options, tmp_path):
    src = _checkpoint(tmp_path, kind, options)
    res = run_cli("export", src, "--target", "nir", "--out", tmp_path / "net.nir")
    assert res.exit_code == 0, res.output
    nir.read(tmp_path / "net.nir", type_check=True)
    assert run_cli("import-nir", tmp_path / "net.nir", "--out", tmp_path / "back").exit_code == 0  # dt from the file
    a, b = model_from_checkpoint(load_checkpoint(src)), model_from_checkpoint(load_checkpoint(tmp_path / "back"))
    x = (torch.rand(4, 100, 6, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    with torch.no_grad():
        (oa, ha), (ob, hb) = a(x, return_hidden=True), b(x, return_hidden=True)
    assert ha[0].mean() > 0.02
    assert all(torch.equal(p, q) for p, q in zip(ha, hb))
    assert torch.equal(oa, ob)


def test_exported_graph_runs_in_norse_as_ours(tmp_path):
    """Our Cuba-LIF (same-step subtract) to NIR, read by Norse: its hidden spikes equal ours."""
    src = _checkpoint(tmp_path, "cuba-lif", {"reset": "subtract", "clip": None})
    assert run_cli("export", src, "--target", "nir", "--out", tmp_path / "net.nir").exit_code == 0
    ours = model_from_checkpoint(load_checkpoint(src))
    x = (torch.rand(1, 80, 6, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    with torch.no_grad():
        _, h = ours(x, return_hidden=True)
    theirs = run_norse(tmp_path / "net.nir", 0.01, "subtract", x)
    assert h[0].sum() > 20
    assert torch.equal(theirs["layer1"], h[0]) and torch.equal(theirs["layer2"], h[1])


@pytest.mark.parametrize("kind,options,words", [
    ("spikgru", {}, "SpikGRU gate"), ("gru", {}, "ANN"), ("rnn", {}, "ANN"),
    ("cuba-lif", {}, "late reset"), ("cuba-lif", {"lava_cuba": True, "shared_readout_decay": True}, "lava-cuba"),
])
def test_export_to_nir_refuses_what_nir_cannot_express(kind, options, words, tmp_path):
    src = _checkpoint(tmp_path, kind, options)
    line = one_line_error(run_cli("export", src, "--target", "nir", "--out", tmp_path / "x.nir"))
    assert words in line
    assert not (tmp_path / "x.nir").exists()


def test_layers_of_rejects_branches():
    g = small_graph()
    g2 = nir.NIRGraph(nodes={**g.nodes, "fc3": nir.Linear(weight=np.ones((3, 12)))},
                      edges=g.edges + [("input", "fc3"), ("fc3", "lif2")], type_check=False)
    from common.errors import InputError
    with pytest.raises(InputError, match="feeds 2 nodes"):
        layers_of(g2)


def test_same_step_resets_in_the_spec():
    v = np.array([fx.THETA + 5, fx.THETA, -3])
    assert fx.fire(v, "subtract")[1].tolist() == [5, fx.THETA, -3]
    assert fx.fire(v, "zero")[1].tolist() == [0, fx.THETA, -3]
    assert fx.fire(v, "late")[1].tolist() == v.tolist()
    assert fx.fire(v, "zero")[0].tolist() == [1, 0, 0]
    theta = fx.theta_of(64)
    assert fx.fire(np.array([theta + 1]), "subtract", theta)[1].tolist() == [1]


@needs_braille
def test_split_weights_are_nearly_exact_and_counted_twice(tmp_path):
    run_cli("import-nir", BRAILLE["zero"], "--out", tmp_path / "m", "--dt", DT)
    ckpt = load_checkpoint(tmp_path / "m")
    plain, split = quantize_checkpoint(ckpt)[0], quantize_checkpoint(ckpt, split_weights=True)[0]
    W = ckpt["state_dict"]["hidden_layers.0.U"].numpy()
    vth = split.hidden[0].vth_mant
    err = lambda net: np.abs(net.hidden[0].rec.to_float(vth) - W).max() / np.abs(W).max()
    assert err(split) < 1e-3 < err(plain)
    assert set(split.hidden[0].connections()) == {"ff", "ff.fine", "rec", "rec.fine"}


@needs_braille
def test_qat_forward_equals_the_spec_on_an_imported_graph():
    """The PyTorch fixed-point forward knows the lower threshold mantissa and the same-step reset too."""
    from export.qat import run_fixed_point
    from export.qnet import run_network
    model = braille_model("zero")
    x = random_spikes(2, 0.05, seed=9)
    cfg, _, _ = graph_to_model(nir.read(BRAILLE["zero"]), DT, "zero")
    from export.quantize import quantize_model
    net = quantize_model(model, cfg)[0]
    assert net.hidden[0].vth_mant < fx.VTH_MANT
    ref = run_network(net, x.numpy().astype(np.int64))
    got = run_fixed_point(model, x)
    assert all(np.array_equal(a, b.detach().numpy()) for a, b in zip(ref["spikes"], got["spikes"]))
    assert np.array_equal(ref["readout"], got["readout"].detach().numpy())


def test_train_with_a_same_step_reset_then_export_to_nir(tmp_path):
    """`train --reset subtract` trains (plain loop: the fused kernels know only the late reset) and the model
    exports to NIR; the late-reset Cuba-LIF of the same run would be refused."""
    res = run_cli("train", "--model", "cuba-lif", "--layers", 1, "--hidden", 16, "--data", "builtin", "--bin-hz", 50,
                  "--epochs", 1, "--batch", 32, "--reset", "subtract", "--out", tmp_path / "run", "--quiet")
    assert res.exit_code == 0, res.output
    assert ModelConfig(**load_checkpoint(tmp_path / "run")["model"]).options["reset"] == "subtract"
    assert run_cli("export", tmp_path / "run", "--target", "nir", "--out", tmp_path / "m.nir").exit_code == 0
    graph = nir.read(tmp_path / "m.nir")
    assert graph.metadata["reset"] == "subtract" and graph.metadata["dt"] == pytest.approx(1 / 50)
    assert "--reset" in one_line_error(run_cli("train", "--model", "cuba-lif", "--lava-cuba", "--reset", "zero",
                                               "--out", tmp_path / "x"))
