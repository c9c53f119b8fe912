"""QAT: the PyTorch fixed-point forward equals export.qnet.run_network bit for bit, its gradients
flow (and match the float model's), and `finetune` writes a checkpoint whose exported network
scores exactly the fixed-point accuracy it reports."""
import json

import numpy as np
import pytest
import torch

from audio.datasets import load_dataset
from common.errors import InputError
from conftest import one_line_error as _one_line_error
from conftest import run_cli as _cli
from export import fixed_point as fx
from export.finetune import finetune, format_finetune
from export.qat import FixedPointNet, run_fixed_point
from export.qnet import predict, run_network
from export.quantize import quantize_checkpoint, quantize_model
from train.checkpoint import load_checkpoint
from train.evaluate import evaluate
from train.layers import LAVA_CUBA_INIT
from train.loss import max_over_time_loss
from train.models import ModelConfig, build_model, model_from_checkpoint
from train.neurons import DEFAULT_CLIP
from train.trainer import TrainConfig, load_data, train

KINDS = {"lif": {}, "cuba-lif": {}, "spikgru": {}, "lava-cuba": {"lava_cuba": True}}
N_IN, HIDDEN, CLASSES, T = 40, 24, 5, 250
TINY = dict(layers=1, hidden=16, bin_hz=25, batch=16, epochs=1, data="builtin")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny per-step matmuls: one thread avoids OpenMP barriers on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_model(kind: str, layers: int, seed: int = 0, gain: float = 3.0, rec_gain: float = 0.1,
                 decays: tuple = (0.0, 1.0), **options):
    """Random weights scaled so that neurons fire (feed-forward x gain); the recurrent weights are small
    (rec_gain 0.1 gives negative exponents: the floor shift); decays uniform in `decays`."""
    torch.manual_seed(seed)
    cfg = ModelConfig("cuba-lif" if kind == "lava-cuba" else kind, N_IN, CLASSES, layers, HIDDEN,
                      {**KINDS[kind], **options})
    model = build_model(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    start = LAVA_CUBA_INIT if kind == "lava-cuba" else 1.0  # gains act on the study's range
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha", "beta"):
                p.copy_(decays[0] + (decays[1] - decays[0]) * torch.rand(p.shape, generator=g))
            elif leaf in ("U", "Uz"):
                p.mul_(rec_gain / start)
            elif not name.startswith("readout"):
                p.mul_(gain / start)
    return model, cfg


def graded_counts(batch: int = 4, steps: int = T, density: float = 0.05, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((batch, steps, N_IN)) < density) * rng.integers(1, 4, (batch, steps, N_IN))).astype(np.int64)


def assert_bit_exact(model, cfg, counts, fused: bool = True) -> dict:
    qnet, _ = quantize_model(model, cfg)
    ref = run_network(qnet, counts, record_states=True)
    got = run_fixed_point(model, torch.from_numpy(counts).float(), fused=fused)
    assert len(got["spikes"]) == len(ref["spikes"])
    for k, (want, have) in enumerate(zip(ref["spikes"], got["spikes"])):
        have = have.detach().numpy()
        assert np.array_equal(have, np.rint(have)), "spikes are not integers"
        np.testing.assert_array_equal(have.astype(np.int64), want.astype(np.int64), err_msg=f"layer {k} spikes")
    readout = got["readout"].detach().numpy()
    assert np.array_equal(readout, np.rint(readout))
    np.testing.assert_array_equal(readout.astype(np.int64), ref["readout"], err_msg="readout")
    return ref


# ---- bit-exact forward --------------------------------------------------------------------

@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_equals_run_network(kind, layers):
    model, cfg = random_model(kind, layers)
    counts = graded_counts()
    ref = assert_bit_exact(model, cfg, counts)
    for k, s in enumerate(ref["spikes"]):  # the comparison means something: every layer fires, not always
        assert 0.005 < s.mean() < 0.6, f"layer {k} rate {s.mean()}"
    assert len(np.unique(ref["readout"])) > 100
    qnet, _ = quantize_model(model, cfg)
    exps = [s.exp for l in qnet.hidden for s in l.synapses().values()]
    assert min(exps) < 0 < max(exps), exps  # both shift directions (floor for negative exponents)


@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_bit_exact_when_saturating(kind):
    """Large weights, slow decays and dense input: 16-bit dendrites and 24-bit states saturate, Lava
    CUBA's current wraps, SpikGRU's gate runs off both ends of the table; still bit for bit."""
    model, cfg = random_model(kind, 2, seed=3, gain=60.0, rec_gain=30.0, decays=(0.95, 1.0), clip=None)
    counts = graded_counts(density=0.3, steps=120, seed=4)
    ref = assert_bit_exact(model, cfg, counts)
    assert_bit_exact(model, cfg, counts, fused=False)  # the plain-loop reference too
    states = ref["states"][0]
    assert any((np.abs(v) == fx.STATE_MAX).any() for k, v in states.items() if k != "s"), "no state saturated"
    layer = quantize_model(model, cfg)[0].layers[0]
    a = layer.ff.accumulate(counts)
    assert (a == fx.ACC_MIN).any() or (a == fx.ACC_MAX).any(), "no 16-bit dendrite saturated"
    prev = lambda x: np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    if kind == "spikgru":
        g = fx.synaptic(layer.ff_z.accumulate(counts) + layer.rec_z.accumulate(prev(states["s"]))) + layer.bias_z
        assert (g >> fx.SIGMOID_SHIFT).min() < -128 and (g >> fx.SIGMOID_SHIFT).max() > 127, "table ends not reached"
    if kind == "lava-cuba":
        u = fx.decay(prev(states["i"]), fx.lava_d(layer.du)) + fx.synaptic(a + layer.rec.accumulate(prev(states["s"])))
        assert (np.abs(u) > fx.STATE_MAX + 1).any(), "the current never wrapped"


@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru"])
def test_forward_bit_exact_when_the_clip_is_reached(kind):
    """The training clip is the state clamp: i and v reach both bounds (lo * THETA, hi * THETA) and the
    forward still equals run_network bit for bit, fused and plain."""
    model, cfg = random_model(kind, 2, seed=11, gain=6.0, rec_gain=1.0, decays=(0.0, 1.0), clip=(-0.2, 2.0))
    counts = graded_counts(density=0.15, steps=100, seed=12)
    ref = assert_bit_exact(model, cfg, counts)
    assert_bit_exact(model, cfg, counts, fused=False)
    qnet, report = quantize_model(model, cfg)
    lo, hi = -round(0.2 * fx.THETA), 2 * fx.THETA
    assert all((l.state_lo, l.state_hi) == (lo, hi) for l in qnet.hidden)
    assert [b["state_lo"] for b in report.state_bounds] == [lo, lo]
    reached = lambda name, bound: any((st[name] == bound).any() for st in ref["states"][:-1])
    assert reached("v", lo), "v never reached its lower bound"
    if kind == "lif":
        assert reached("v", hi), "v never reached its upper bound"
    else:  # v mixes i (within [lo, hi]) and v: only the soft reset takes it to a bound
        assert reached("i", lo) and reached("i", hi), "i never reached both bounds"
    assert all(0.005 < s.mean() < 0.9 for s in ref["spikes"])


def test_quantize_state_bounds_follow_the_clip_option():
    """clip absent: train.neurons.DEFAULT_CLIP; None: the 24-bit range; (lo, hi): rounded, limited to 24 bits;
    lava-cuba keeps Lava's arithmetic (24-bit range)."""
    from train.neurons import DEFAULT_CLIP
    cases = [({}, (round(DEFAULT_CLIP[0] * fx.THETA), round(DEFAULT_CLIP[1] * fx.THETA))),
             ({"clip": None}, (-fx.STATE_MAX, fx.STATE_MAX)),
             ({"clip": (-0.3, 1.7)}, (round(-0.3 * fx.THETA), round(1.7 * fx.THETA))),
             ({"clip": [-1000.0, 1000.0]}, (-fx.STATE_MAX, fx.STATE_MAX))]
    for options, want in cases:
        model, cfg = random_model("cuba-lif", 1, **options)
        qnet, _ = quantize_model(model, cfg)
        assert (qnet.hidden[0].state_lo, qnet.hidden[0].state_hi) == want, options
    model, cfg = random_model("lava-cuba", 1, clip=(-1.0, 1.0))
    layer = quantize_model(model, cfg)[0].hidden[0]
    assert (layer.state_lo, layer.state_hi) == (-fx.STATE_MAX, fx.STATE_MAX)


@pytest.mark.parametrize("kind", ["cuba-lif", "spikgru", "lif"])
def test_fused_gradients_equal_reference_loop_when_clipped(kind):
    """Reached clip bounds: gradients pass only inside [lo, hi] (bounds included, as torch.clamp), in the
    fused kernel exactly as in the plain loop."""
    model, _ = random_model(kind, 2, seed=13, gain=6.0, rec_gain=1.0, decays=(0.7, 1.0), clip=(-1.0, 1.5))
    counts = torch.from_numpy(graded_counts(batch=3, steps=80, density=0.15, seed=14)).float()
    labels = torch.arange(3) % CLASSES
    _assert_fused_grads_equal_plain(model, counts, labels)


def test_reference_loop_equals_run_network():
    for kind in KINDS:
        model, cfg = random_model(kind, 2, seed=5)
        assert_bit_exact(model, cfg, graded_counts(steps=60), fused=False)


# ---- gradients ----------------------------------------------------------------------------

def _grads(model, net, counts, labels) -> dict:
    model.zero_grad(set_to_none=True)
    max_over_time_loss(net(counts), labels).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _assert_fused_grads_equal_plain(model, counts, labels) -> None:
    fused = _grads(model, lambda x: run_fixed_point(model, x)["readout"] / fx.THETA, counts, labels)
    plain = _grads(model, lambda x: run_fixed_point(model, x, fused=False)["readout"] / fx.THETA, counts, labels)
    for name in plain:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-9, atol=1e-12 * plain[name].abs().max().item(),
                                   msg=name)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_flow_to_weights_and_decays(kind):
    model, _ = random_model(kind, 2, seed=6)
    counts = torch.from_numpy(graded_counts(batch=8, steps=100)).float()
    labels = torch.arange(8) % CLASSES
    grads = _grads(model, FixedPointNet(model), counts, labels)
    assert set(grads) == {n for n, _ in model.named_parameters()}
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_fused_gradients_equal_reference_loop(kind):
    """The hand-written backpropagation through time equals plain autograd of the step-by-step loop."""
    model, _ = random_model(kind, 2, seed=7)
    counts = torch.from_numpy(graded_counts(batch=3, steps=80)).float()
    labels = torch.arange(3) % CLASSES
    _assert_fused_grads_equal_plain(model, counts, labels)


@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru"])
def test_gradients_follow_the_float_model(kind):
    """Straight-through estimators keep the float model's gradient scale and direction (unclipped
    float model, weights far from saturation)."""
    model, _ = random_model(kind, 2, seed=8, rec_gain=1.0, decays=(0.8, 0.95), clip=None)
    counts = torch.from_numpy(graded_counts(batch=16, steps=100, seed=9)).float()
    labels = torch.arange(16) % CLASSES
    fixed = _grads(model, FixedPointNet(model), counts, labels)
    flt = _grads(model, model, counts, labels)
    for name in flt:
        a, b = flt[name].flatten().double(), fixed[name].flatten().double()
        cos = float(a @ b / (a.norm() * b.norm()))
        assert cos > 0.75, f"{name}: cosine {cos:.3f}"
        assert 0.5 < float(b.norm() / a.norm()) < 2.0, name


def test_fixed_point_net_is_a_drop_in_for_the_trainer():
    model, _ = random_model("cuba-lif", 1)
    net = FixedPointNet(model)
    assert net.state_dict().keys() == model.state_dict().keys()
    assert [p is q for p, q in zip(net.parameters(), model.parameters())] == [True] * len(list(model.parameters()))
    with torch.no_grad():
        model.hidden_layers[0].beta.fill_(1.5)
    net.clamp_()
    assert model.hidden_layers[0].beta.max() == 1.0
    counts = torch.from_numpy(graded_counts(steps=30)).float()
    out, hidden = net(counts, return_hidden=True)
    assert out.shape == (4, 30, CLASSES) and hidden[0].shape == (4, 30, HIDDEN)
    with pytest.raises(TypeError):
        FixedPointNet(build_model(ModelConfig("gru", N_IN, CLASSES, 1, 8)))


# ---- fine-tuning --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def float_runs(tmp_path_factory):
    """A tiny float model of each spiking kind, trained for one epoch on the builtin dataset."""
    root = tmp_path_factory.mktemp("qat-float")
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKAUDIO_CACHE", str(root / "cache"))
        for kind in ("lif", "cuba-lif", "spikgru"):
            train(TrainConfig(model=kind, **TINY), root / kind, progress=False)
            runs[kind] = root / kind
    torch.set_num_threads(threads)
    return runs


@pytest.fixture
def cache(float_runs, monkeypatch):
    monkeypatch.setenv("SPIKAUDIO_CACHE", str(next(iter(float_runs.values())).parent / "cache"))


@pytest.mark.parametrize("kind", ["lif", "cuba-lif", "spikgru"])
def test_finetune_exports_what_it_reports(kind, float_runs, cache, tmp_path):
    r = finetune(float_runs[kind] / "best.pt", tmp_path / "qat", epochs=1, lr=1e-3, progress=False)
    ckpt = load_checkpoint(tmp_path / "qat" / "best.pt")
    assert ckpt["qat"] is True and ckpt["model"]["kind"] == kind
    assert load_checkpoint(tmp_path / "qat" / "last.pt")["qat"] is True
    assert ckpt["epoch"] == r["best_epoch"]
    # the exported network scores exactly the fixed-point accuracies it reports, before and after
    data = load_dataset("builtin", bin_hz=TINY["bin_hz"])
    counts = {s: getattr(data, s).dense(np.arange(len(getattr(data, s)))).numpy() for s in ("valid", "test")}
    for when, source in (("after", ckpt), ("before", load_checkpoint(float_runs[kind] / "best.pt"))):
        qnet, _ = quantize_checkpoint(source)
        for split, x in counts.items():
            acc = float((predict(run_network(qnet, x)["readout"]) == getattr(data, split).labels).mean())
            assert acc == r[when]["fixed"][split], (when, split)
    # the float accuracy is what `cli.py eval` says
    assert evaluate(str(tmp_path / "qat" / "best.pt"))["accuracy"] == r["after"]["float"]["test"]
    assert r["after"]["fixed"]["valid"] >= r["before"]["fixed"]["valid"]  # selection on fixed-point valid
    summary = json.loads((tmp_path / "qat" / "summary.json").read_text())
    assert summary["qat"] is True and summary["test_acc"] == r["after"]["fixed"]["test"]
    assert len((tmp_path / "qat" / "metrics.jsonl").read_text().splitlines()) == 1
    table = format_finetune(r)
    assert "before" in table and "after" in table and "fixed test" in table


def _spike_rates(model, net, split) -> tuple[float, float]:
    """(float model's, fixed-point network's) hidden spike rate on a split."""
    from sim.engine import run_fast
    with torch.no_grad():
        spikes = [h for x, _ in split.batches(256) for h in model(x, return_hidden=True)[1]]
    flt = float(sum(h.sum() for h in spikes) / sum(h.numel() for h in spikes))
    fixed = run_fast(net, split, keep_traces=True, progress=False).spikes
    return flt, float(np.mean([s.mean() for s in fixed]))


def test_trained_model_fires_as_often_in_fixed_point(cache, tmp_path):
    """The state clamp is the training clip: a trained Cuba-LIF's quantized network fires within 20 % of the
    float model's rate (without the clamp, i and v run to 24-bit saturation and it fires more)."""
    cfg = TrainConfig(model="cuba-lif", layers=1, hidden=16, bin_hz=25, batch=16, epochs=2, data="builtin")
    train(cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    model = model_from_checkpoint(ckpt)
    net, report = quantize_checkpoint(ckpt)
    assert report.state_bounds and report.state_bounds[0]["state_hi"] == round(DEFAULT_CLIP[1] * fx.THETA)
    split = load_data(cfg).test
    flt, fixed = _spike_rates(model, net, split)
    assert flt > 0.005, flt
    assert abs(fixed - flt) <= 0.2 * flt, (flt, fixed)
    for layer in net.hidden:  # the old rule: 24-bit saturation only
        layer.state_lo, layer.state_hi = -fx.STATE_MAX, fx.STATE_MAX
    _, unclamped = _spike_rates(model, net, split)
    print(f"float {flt:.4f}, fixed point {fixed:.4f}, without the clamp {unclamped:.4f}")
    assert abs(unclamped - flt) > abs(fixed - flt), (flt, fixed, unclamped)


def test_finetune_keeps_the_start_when_nothing_beats_it(float_runs, cache, tmp_path):
    """A learning rate too small to move a weight: no epoch beats the start, best.pt keeps it (epoch 0)."""
    r = finetune(float_runs["cuba-lif"], tmp_path / "qat", epochs=1, lr=1e-12, progress=False)
    start = load_checkpoint(float_runs["cuba-lif"] / "best.pt")["state_dict"]
    best = load_checkpoint(tmp_path / "qat" / "best.pt")
    assert r["best_epoch"] == 0 and best["epoch"] == 0 and best["qat"] is True
    assert all(torch.equal(best["state_dict"][k], start[k]) for k in start)
    assert r["after"] == r["before"]


def test_cli_finetune(float_runs, cache, tmp_path):
    res = _cli("finetune", float_runs["lif"], "--out", tmp_path / "q", "--epochs", "1", "--lr", "1e-3", "--quiet")
    assert res.exit_code == 0, res.output
    assert "float valid" in res.output and "fixed test" in res.output and "after" in res.output
    assert load_checkpoint(tmp_path / "q")["qat"] is True
    _one_line_error(_cli("finetune", float_runs["lif"], "--out", tmp_path / "q", "--quiet"))  # holds a run


def test_cli_finetune_bad_input(float_runs, cache, tmp_path):
    gru = tmp_path / "gru"
    train(TrainConfig(model="gru", **TINY), gru, progress=False)
    _one_line_error(_cli("finetune", gru, "--out", tmp_path / "a", "--quiet"))
    _one_line_error(_cli("finetune", tmp_path / "missing.pt", "--out", tmp_path / "b", "--quiet"))
    _one_line_error(_cli("finetune", float_runs["lif"], "--out", tmp_path / "c", "--epochs", "0", "--quiet"))
    _one_line_error(_cli("finetune", float_runs["lif"], "--out", tmp_path / "d", "--lr", "-1", "--quiet"))
    _one_line_error(_cli("finetune", float_runs["lif"], "--out", tmp_path / "d", "--batch", "0", "--quiet"))
    _one_line_error(_cli("finetune", float_runs["lif"], "--out", tmp_path / "e", "--data", "/no/such", "--quiet"))
    for d in "abcde":
        assert not (tmp_path / d / "last.pt").exists()
    with pytest.raises(InputError):
        finetune(gru, tmp_path / "f", epochs=1)
