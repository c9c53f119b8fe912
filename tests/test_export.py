"""Export: the netx-style HDF5 format (round trip, validation), quantization steps, Loihi 2 limits,
stock netx running a --netx-compatible file, and the export CLI's handling of bad input."""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import h5py
# Lava sets the multiprocessing start method when first imported, which fails once anything else has fixed
# it (tqdm's lock does, during training): import it at collection, before any test trains.
import lava.lib.dl.netx.hdf5  # noqa: F401
import numpy as np
import pytest
import torch

from common.errors import InputError
from conftest import one_line_error as _one_line_error
from conftest import run_cli as _cli
from export import fixed_point as fx
from export import resources
from export.h5_fields import normalize_meta
from export.netx_h5 import read_network, write_network
from export.netx_stock import NETX_EXP_MAX, NETX_EXP_MIN, netx_warmup_spikes, quantize_for_netx
from export.qnet import QLayer, QNetwork, Synapse, run_network
from export.quantize import quantize_checkpoint
from train.checkpoint import load_checkpoint, save_checkpoint
from train.models import ModelConfig, build_model, model_from_checkpoint

BIG = 1 << 20


# ---- helpers -------------------------------------------------------------------------------

def _syn(rng, n, m, exp=None, lo=-128, hi=128):
    return Synapse(rng.integers(lo, hi, (n, m)), int(rng.integers(fx.EXP_MIN, fx.EXP_MAX + 1)) if exp is None else exp)


def random_qnet(kind: str, rng, sizes=(10, 12, 9), n_classes=4, netx=False, bias_hi=4096) -> QNetwork:
    """A random QNetwork of `kind` hidden layers; netx=True: exactly representable in stock netx."""
    layers = []
    for n_in, n in zip(sizes[:-1], sizes[1:]):
        e = int(rng.integers(NETX_EXP_MIN, NETX_EXP_MAX + 1)) if netx else None
        layer = QLayer(kind, _syn(rng, n, n_in, e), _syn(rng, n, n, e), bias_mant=rng.integers(-bias_hi, bias_hi, n),
                       bias_exp=6 if netx else int(rng.integers(0, 8)))
        if kind == "lava-cuba":
            layer.du, layer.v_decay = int(rng.integers(0, 4096)), rng.integers(0, 4096, 1)
        else:
            layer.v_decay = rng.integers(0, 4096, n)
            if kind != "lif":
                layer.i_decay = rng.integers(0, 4096, n)
        if kind == "spikgru":
            layer.v_decay = None
            layer.ff_z, layer.rec_z = _syn(rng, n, n_in), _syn(rng, n, n)
            layer.bias_z_mant, layer.bias_z_exp = rng.integers(-4096, 4096, n), int(rng.integers(0, 8))
        if kind != "lava-cuba":  # the state clamp (training clip in state units)
            layer.state_lo = -int(rng.integers(1, fx.STATE_MAX + 1))
            layer.state_hi = int(rng.integers(layer.state_lo + 1, fx.STATE_MAX + 1))
        layers.append(layer)
    e = int(rng.integers(NETX_EXP_MIN, NETX_EXP_MAX + 1)) if netx else None
    readout = QLayer("readout", _syn(rng, n_classes, sizes[-1], e), bias_mant=rng.integers(-bias_hi, bias_hi, n_classes),
                     bias_exp=6 if netx else int(rng.integers(0, 8)),
                     v_decay=np.full(n_classes, int(rng.integers(0, 4096))) if netx else rng.integers(0, 4096, n_classes))
    meta = {"model": kind, "dataset": "random", "channels": sizes[0], "n_classes": n_classes, "steps": 20,
            "bin_hz": 25.0, "duration": 0.8, "class_names": [f"c{k}" for k in range(n_classes)],
            "options": {"clip": (-4, 4)}, "layers": len(sizes) - 1}
    return QNetwork(layers + [readout], meta)


def assert_same_network(a: QNetwork, b: QNetwork) -> None:
    assert len(a.layers) == len(b.layers)
    for k, (la, lb) in enumerate(zip(a.layers, b.layers)):
        for f in fields(QLayer):
            va, vb = getattr(la, f.name), getattr(lb, f.name)
            if isinstance(va, Synapse):
                assert isinstance(vb, Synapse) and va.exp == vb.exp, (k, f.name)
                assert np.array_equal(va.weight, vb.weight), (k, f.name)
            elif isinstance(va, np.ndarray):
                assert isinstance(vb, np.ndarray) and np.array_equal(va, vb), (k, f.name)
            else:
                assert va == vb, (k, f.name)
    assert normalize_meta(a.meta) == b.meta


def make_ckpt(path: Path, kind: str, options=None, layers=1, hidden=8, n_in=12, n_classes=3, seed=0) -> Path:
    """A checkpoint in the trainer's layout from a freshly initialised model (no training)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(kind, n_in, n_classes, layers, hidden, dict(options or {}))
    model = build_model(cfg)
    save_checkpoint(path, {"model": asdict(cfg), "state_dict": model.state_dict(), "epoch": 1,
                           "data": {"name": "builtin", "spec": {"bin_hz": 25.0, "duration": 1.0, "n_channels": n_in},
                                    "class_names": [f"c{k}" for k in range(n_classes)]}})
    return path


@pytest.fixture(scope="module")
def lava_cuba_run(tmp_path_factory, _builtin_cache_dir):
    """A Cuba-LIF trained one epoch with Lava's CUBA dynamics (--lava-cuba) on the built-in data."""
    from train.trainer import TrainConfig, train
    run = tmp_path_factory.mktemp("lava-cuba-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKAUDIO_CACHE", str(_builtin_cache_dir))
        train(TrainConfig(model="cuba-lif", layers=1, hidden=16, bin_hz=25, batch=16, epochs=1, data="builtin",
                          options={"lava_cuba": True}), run, progress=False)
    return run


# ---- the file format -------------------------------------------------------------------------

@pytest.mark.parametrize("kind, netx", [("lif", False), ("cuba-lif", False), ("spikgru", False),
                                        ("lava-cuba", False), ("lava-cuba", True)])
def test_round_trip_random_networks(tmp_path, kind, netx):
    net = random_qnet(kind, np.random.default_rng(3), netx=netx)
    path = write_network(tmp_path / "net.h5", net, netx_compatible=netx)
    back = read_network(path)
    assert_same_network(net, back)
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5"]  # no temp file left


def test_round_trip_checkpoint_and_layout(tmp_path, lava_cuba_run):
    ckpt = load_checkpoint(lava_cuba_run)
    for netx in (False, True):
        net = quantize_for_netx(ckpt)[0] if netx else quantize_checkpoint(ckpt)[0]
        path = write_network(tmp_path / f"net{netx}.h5", net, netx_compatible=netx)
        assert_same_network(net, read_network(path))
        with h5py.File(path) as f:
            assert f.attrs["format"] == "spikaudio-netx" and f.attrs["format_version"] == 1
            assert f.attrs["model"] == "cuba-lif" and f.attrs["dataset"] == "builtin"
            assert f.attrs["channels"] == 700 and f.attrs["steps"] == 25 and f.attrs["bin_hz"] == 25.0
            assert list(f.attrs["class_names"]) == ckpt["data"]["class_names"]
            assert f["layer/0/type"][0] == b"input" and list(f["layer/0/shape"][()]) == [700]
            assert f["layer/1/type"][0] == b"dense_rec" and f["layer/2/type"][0] == b"dense"
            ntype = f["layer/1/neuron/type"][0].decode()
            assert ntype == ("CUBA" if netx else "LAVA_CUBA")
            if netx:  # exactly the keys stock netx reads (plus weight_exp, which it ignores)
                assert set(f["layer/1"].keys()) == {"type", "shape", "weight", "weight_rec", "weight_exp", "bias", "neuron"}
                assert set(f["layer/1/neuron"].keys()) == {"type", "iDecay", "vDecay", "vThMant", "refDelay", "gradedSpike"}
                assert f["layer/1/neuron/vThMant"][()] == fx.VTH_MANT


def _quant_pairs(ckpt, netx):
    """(float, dequantized, exponent step) for every weight of a checkpoint."""
    model = model_from_checkpoint(ckpt)
    net = quantize_for_netx(ckpt)[0] if netx else quantize_checkpoint(ckpt)[0]
    blocks = [*model.hidden_layers, model.readout]
    names = {"ff": "W", "rec": "U", "ff_z": "Wz", "rec_z": "Uz"}
    for block, layer in zip(blocks, net.layers):
        p = block.export_params()
        for attr, syn in layer.synapses().items():
            yield p[names[attr]], syn.to_float(), 2.0 ** syn.exp / fx.VTH_MANT


@pytest.mark.parametrize("kind, options, netx", [("lif", None, False), ("cuba-lif", None, False),
                                                 ("spikgru", None, False), ("cuba-lif", {"lava_cuba": True}, False),
                                                 ("cuba-lif", {"lava_cuba": True}, True)])
def test_quantized_weights_within_half_a_step(tmp_path, kind, options, netx):
    ckpt = load_checkpoint(make_ckpt(tmp_path / "c.pt", kind, options, layers=2, hidden=24, n_in=40))
    checked = 0
    for w, wq, step in _quant_pairs(ckpt, netx):
        inside = np.abs(w) <= (fx.W_MAX + 0.5) * step  # away from saturation
        assert np.all(np.abs(wq - w)[inside] <= step / 2 + 1e-12)
        checked += int(inside.sum())
    assert checked > 1000


def test_netx_quantization_shares_one_exponent_and_bias_exp_6(lava_cuba_run):
    net, report, notes = quantize_for_netx(load_checkpoint(lava_cuba_run))
    for layer in net.layers:
        exps = {s.exp for s in layer.synapses().values()}
        assert len(exps) == 1 and NETX_EXP_MIN <= exps.pop() <= NETX_EXP_MAX
        assert layer.bias_exp == 6
    assert len(set(net.readout.v_decay.tolist())) == 1
    assert net.meta["netx_compatible"] is True


# ---- reader: every bad file is a clear error ---------------------------------------------------

def _set(key, value):
    def mutate(f):
        if key in f:
            del f[key]
        f[key] = value
    return mutate


def _attr(key, value):
    def mutate(f):
        f.attrs[key] = value
    return mutate


def _delete(key):
    def mutate(f):
        del f[key]
    return mutate


BAD_FILES = {
    "wrong version": (_attr("format_version", 2), "format version 2"),
    "foreign format": (_attr("format", "something-else"), "not a spikaudio-netx file"),
    "unknown root attribute": (_attr("colour", "blue"), "unknown root attribute 'colour'"),
    "unknown neuron type": (_set("layer/1/neuron/type", np.array([b"ALIF"])), "unknown neuron type 'ALIF'"),
    "unknown layer type": (_set("layer/1/type", np.array([b"conv"])), "unknown layer type 'conv'"),
    "missing key": (_delete("layer/1/weight_rec"), "layer 1: missing key 'weight_rec'"),
    "missing neuron key": (_delete("layer/2/neuron/iDecay"), "layer 2: missing key 'neuron/iDecay'"),
    "unknown key": (_set("layer/1/delay", np.zeros(3, dtype=np.int8)), "layer 1: unknown key 'delay'"),
    "mismatched shape": (_set("layer/2/weight", np.zeros((9, 11), dtype=np.int8)),
                         "layer 2: 'weight' has shape (9, 11), expected (9, 12)"),
    "mantissa out of range": (_set("layer/1/weight", np.full((12, 10), 300, dtype=np.int16)),
                              "layer 1: 'weight' holds 300, outside the 8-bit weight mantissa range"),
    "float weights": (_set("layer/1/weight", np.zeros((12, 10))), "'weight' must hold integers"),
    "decay out of range": (_set("layer/1/neuron/vDecay", np.full(12, 5000, dtype=np.int16)),
                           "layer 1: 'vDecay' holds 5000, outside the 12-bit decay range"),
    "exponent out of range": (_set("layer/3/weight_exp", np.int8(9)), "layer 3: 'weight_exp' holds 9"),
    "bias out of range": (_set("layer/3/bias", np.full(4, 5000, dtype=np.int16)), "layer 3: 'bias' holds 5000"),
    "wrong threshold": (_set("layer/1/neuron/vThMant", np.int32(2048)), "layer 1: 'vThMant' holds 2048"),
    "readout not last": (_delete("layer/3"), "layer 2: the last layer must be a readout"),
    "meta inconsistent": (_attr("meta", '{"channels": 99}'), "meta channels = 99 but the layers say 10"),
    "meta not json": (_attr("meta", "{oops"), "'meta' is not JSON"),
    "no layers": (_delete("layer"), "no 'layer' group"),
    "state bounds crossed": (_set("layer/1/neuron/stateMin", np.int32(fx.STATE_MAX)),
                             f"layer 1: 'neuron/stateMin' ({fx.STATE_MAX}) must be below 'neuron/stateMax'"),
    "state bound past 24 bits": (_set("layer/2/neuron/stateMax", np.int32(1 << 23)),
                                 "layer 2: 'stateMax' holds 8388608, outside the 24-bit state range"),
    "one state bound": (_delete("layer/1/neuron/stateMax"), "layer 1: missing key 'neuron/stateMax'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_reader_rejects_bad_file(tmp_path, case):
    mutate, message = BAD_FILES[case]
    path = write_network(tmp_path / "net.h5", random_qnet("cuba-lif", np.random.default_rng(1)))
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(InputError) as exc:
        read_network(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value), str(exc.value)


def test_state_bounds_round_trip_and_default(tmp_path):
    """stateMin/stateMax carry the clamp of i and v; files without them (written before the clamp) mean the
    24-bit range; the writer refuses bounds outside 24 bits or crossed."""
    net = random_qnet("cuba-lif", np.random.default_rng(4))
    net.layers[0].state_lo, net.layers[0].state_hi = -4 * fx.THETA, 4 * fx.THETA
    path = write_network(tmp_path / "net.h5", net)
    back = read_network(path)
    assert (back.layers[0].state_lo, back.layers[0].state_hi) == (-4 * fx.THETA, 4 * fx.THETA)
    with h5py.File(path, "r") as f:
        assert int(f["layer/1/neuron/stateMin"][()]) == -4 * fx.THETA
        assert "stateMin" not in f["layer/3/neuron"]  # the readout is never clamped
    with h5py.File(path, "r+") as f:
        for k in (1, 2):
            del f[f"layer/{k}/neuron/stateMin"], f[f"layer/{k}/neuron/stateMax"]
    old = read_network(path)
    assert all((l.state_lo, l.state_hi) == (-fx.STATE_MAX, fx.STATE_MAX) for l in old.hidden)
    for lo, hi in ((5, 5), (-fx.STATE_MAX - 1, 0), (0, fx.STATE_MAX + 1)):
        net.layers[0].state_lo, net.layers[0].state_hi = lo, hi
        with pytest.raises(InputError, match="layer 1: state bounds"):
            write_network(tmp_path / "bad.h5", net)


def test_reader_rejects_truncated_foreign_and_stock_netx_files(tmp_path):
    good = write_network(tmp_path / "net.h5", random_qnet("lif", np.random.default_rng(2)))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["spikes/times"] = np.arange(3.0)
    stock = tmp_path / "stock.h5"  # a netx file as slayer writes it: no format attribute
    with h5py.File(stock, "w") as f:
        f.create_dataset("layer/0/type", (1,), "S10", [b"input"])
    text = tmp_path / "text.h5"
    text.write_text("hello")
    for path, message in ((truncated, "cannot be read"), (foreign, "not a spikaudio-netx file"),
                          (stock, "not a spikaudio-netx file"), (text, "not an HDF5 file"),
                          (tmp_path / "missing.h5", "no such file")):
        with pytest.raises(InputError, match=message):
            read_network(path)


def test_writer_refuses_what_stock_netx_cannot_hold(tmp_path):
    rng = np.random.default_rng(0)
    net = random_qnet("lava-cuba", rng, netx=True)
    net.layers[0].rec.exp = 0 if net.layers[0].ff.exp == 1 else 1  # two exponents in one layer
    with pytest.raises(InputError, match="one weight exponent"):
        write_network(tmp_path / "a.h5", net, netx_compatible=True)
    with pytest.raises(InputError, match="no stock netx neuron"):
        write_network(tmp_path / "b.h5", random_qnet("cuba-lif", rng), netx_compatible=True)
    assert list(tmp_path.iterdir()) == []


# ---- Loihi 2 limits ------------------------------------------------------------------------------

def _shape_net(kind, sizes, n_classes=10):
    """A network of the given shapes without memory (broadcast zero weights): for resource estimates."""
    z = lambda n, m: Synapse(np.broadcast_to(np.int64(0), (n, m)), 0)
    layers = [QLayer(kind, z(n, m), z(n, n), ff_z=z(n, m) if kind == "spikgru" else None,
                     rec_z=z(n, n) if kind == "spikgru" else None)
              for m, n in zip(sizes[:-1], sizes[1:])]
    return QNetwork(layers + [QLayer("readout", z(n_classes, sizes[-1]))])


def test_resource_estimate_counts_cores_neurons_and_bytes():
    res = resources.estimate(_shape_net("cuba-lif", [700, 128, 128], 20))
    assert [u.neurons for u in res.layers] == [128, 128, 20]
    assert [u.synapse_bytes for u in res.layers] == [128 * 828, 128 * 256, 20 * 128]
    assert [u.cores for u in res.layers] == [1, 1, 1] and res.cores == 3
    assert res.neurons == 276 and res.synapse_bytes == 128 * 828 + 128 * 256 + 20 * 128
    # a layer too big for one core's synapse memory is split: SpikGRU's two dendrites over 700 + 1000 inputs
    # are 3400 bytes per neuron -> 38 neurons per core -> 27 cores
    spik = resources.estimate(_shape_net("spikgru", [700, 1000], 20))
    assert spik.layers[0].synapses_per_neuron == 2 * 1700 and spik.layers[0].cores == -(-1000 // (131072 // 3400))
    with pytest.raises(InputError, match="fan-in 4200 exceeds 4096"):
        resources.estimate(_shape_net("lif", [4000, 200]))
    big = _shape_net("lif", [2000, 2000, 2000, 2000])  # 3 x 63 cores
    with pytest.raises(InputError, match=r"needs \d+ cores, 1 Loihi 2 chip\(s\) have 128"):
        resources.estimate(big)
    assert resources.estimate(big, chips=2).cores > 128
    total = [l for l in resources.format_resources(res).splitlines() if l.strip().startswith("total")][0].split()
    assert total[1:] == [str(res.neurons), str(res.cores), f"{res.synapse_bytes:,}"]


def test_bit_width_check_names_the_value():
    net = random_qnet("cuba-lif", np.random.default_rng(0))
    assert resources.check_bit_widths(net) == []
    net.layers[0].ff.weight[0, 0] = 200
    net.layers[1].i_decay[0] = 4096
    problems = resources.check_bit_widths(net)
    assert len(problems) == 2 and "ff weight mantissa (8-bit) holds 200" in problems[0] and "i_decay" in problems[1]


def test_warmup_spikes_are_counted():
    net = random_qnet("lava-cuba", np.random.default_rng(0), netx=True, bias_hi=100)
    assert netx_warmup_spikes(net) == []
    net.layers[1].bias_mant[:3] = 2000  # 2000 << 6 > THETA / 2: spikes within the layer's 2 warm-up steps
    assert netx_warmup_spikes(net) == [(1, 3)]


# ---- stock netx runs the netx-compatible file -------------------------------------------------------

def _run_stock_netx(path: Path, counts: np.ndarray, n_layers: int, steps: int):
    """Runs a file in stock lava-dl netx on Lava's CPU fixed-point models; returns per-layer spikes and readout v."""
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    T, C = counts.shape
    total = T + n_layers + 1  # one step per netx layer, one from the source
    net = Network(str(path), input_message_bits=8, reset_interval=steps, reset_offset=1)
    data = np.zeros((C, total), dtype=np.int32)
    data[:, :T] = counts.T
    src = RingBuffer(data=data)
    src.s_out.connect(net.inp)
    monitors = []
    for layer in net.layers[:-1]:
        monitors.append(Monitor())
        monitors[-1].probe(layer.out, total)
    monitors.append(Monitor())
    monitors[-1].probe(net.layers[-1].neuron.v, total)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        traces = [next(iter(next(iter(m.get_data().values())).values())) for m in monitors]
    finally:
        net.stop()
    # netx layer k (0-based) at Lava step t + 2 + k (Monitor row t + 1 + k) is model step t
    return [np.asarray(tr[1 + k: 1 + k + T]).astype(np.int64) for k, tr in enumerate(traces)]


def test_netx_compatible_file_runs_in_stock_netx(tmp_path, lava_cuba_run):
    rng = np.random.default_rng(7)
    # a random 2-layer network (so the per-layer delay is exercised) with biases too small to fire unaided
    net = random_qnet("lava-cuba", rng, sizes=(10, 12, 9), netx=True, bias_hi=300)
    assert netx_warmup_spikes(net) == []
    counts = rng.integers(0, 4, (30, 10))
    # and the file `cli.py export --netx-compatible` writes from a trained checkpoint
    out = tmp_path / "trained.h5"
    res = _cli("export", lava_cuba_run, "--target", "loihi2", "--out", out, "--netx-compatible")
    assert res.exit_code == 0, res.output
    trained = read_network(out)
    counts2 = rng.poisson(0.3, (25, 700))
    for path, qnet, x in ((write_network(tmp_path / "random.h5", net, True), net, counts), (out, trained, counts2)):
        ref = run_network(qnet, x)
        assert sum(int(s.sum()) for s in ref["spikes"]) > 20  # the comparison means something
        got = _run_stock_netx(path, x, len(qnet.layers), steps=len(x))
        for k, spikes in enumerate(ref["spikes"]):
            np.testing.assert_array_equal(got[k], spikes, err_msg=f"{path.name} layer {k} spikes")
        np.testing.assert_array_equal(got[-1], ref["readout"], err_msg=f"{path.name} readout")


# ---- the export command -----------------------------------------------------------------------

def test_export_cli_writes_file_and_prints_resources(tmp_path):
    ckpt = make_ckpt(tmp_path / "s.pt", "spikgru", layers=2, hidden=8)
    out = tmp_path / "net.h5"
    res = _cli("export", ckpt, "--out", out)
    assert res.exit_code == 0, res.output
    assert "Loihi 2 resource estimate" in res.output and "total" in res.output
    net = read_network(out)
    assert [l.kind for l in net.layers] == ["spikgru", "spikgru", "readout"]
    assert net.meta["model"] == "spikgru" and net.meta["channels"] == 12 and net.meta["steps"] == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.h5", "s.pt"]


def test_export_cli_warns_on_saturation(tmp_path):
    path = make_ckpt(tmp_path / "c.pt", "lif")
    ckpt = torch.load(path, weights_only=False)
    # beyond 127 * 2**7 / 64 = 254 thresholds, the most the lowest threshold mantissa (fixed_point.VTH_MIN) holds
    ckpt["state_dict"]["hidden_layers.0.W"][0, :3] = 10000.0
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    res = _cli("export", path, "--out", tmp_path / "net.h5")
    assert res.exit_code == 0, res.output
    warning = [l for l in res.output.splitlines() if l.startswith("warning:")]
    assert len(warning) == 1 and "layer 0 W: 3 value(s) saturated" in warning[0]
    assert "worst relative error 97.5 %" in warning[0]  # (10000 - 254) / 10000
    assert (tmp_path / "net.h5").exists()


def _mutated(tmp_path, kind="cuba-lif", options=None, **change):
    path = make_ckpt(tmp_path / "m.pt", kind, options)
    ckpt = torch.load(path, weights_only=False)
    for key, fn in change.items():
        fn(ckpt)
    torch.save(ckpt, path)
    return path


def _nan(c):
    c["state_dict"]["hidden_layers.0.U"][1, 2] = float("nan")


def _inf(c):
    c["state_dict"]["readout.b"][0] = float("inf")


def _kind(c):
    c["model"]["kind"] = "transformer"


def _no_state(c):
    del c["state_dict"]


def _no_n_in(c):
    del c["model"]["n_in"]


def _extra_field(c):
    c["model"]["colour"] = "blue"


def _wrong_shape(c):
    c["state_dict"]["hidden_layers.0.W"] = torch.zeros(8, 5)


BAD_CHECKPOINTS = {
    "nan": (dict(change=_nan), "holds NaN or inf"),
    "inf": (dict(change=_inf), "holds NaN or inf"),
    "unknown kind": (dict(change=_kind), "unknown model kind 'transformer'"),
    "missing state_dict": (dict(change=_no_state), "lacks state_dict"),
    "missing model field": (dict(change=_no_n_in), "lacks 'n_in'"),
    "unknown model field": (dict(change=_extra_field), "model config does not fit"),
    "wrong weight shape": (dict(change=_wrong_shape), "weights do not fit"),
    "gru": (dict(kind="gru"), "ANN baseline"),
    "rnn": (dict(kind="rnn"), "ANN baseline"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_export_cli_bad_checkpoint(tmp_path, case):
    spec, message = BAD_CHECKPOINTS[case]
    ckpt = _mutated(tmp_path, spec.get("kind", "cuba-lif"), **({"change": spec["change"]} if "change" in spec else {}))
    out = tmp_path / "net.h5"
    line = _one_line_error(_cli("export", ckpt, "--target", "loihi2", "--out", out))
    assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no output, no temp file


def test_export_cli_bad_files_and_options(tmp_path):
    good = make_ckpt(tmp_path / "c.pt", "cuba-lif")
    h5 = write_network(tmp_path / "other.h5", random_qnet("lif", np.random.default_rng(0)))
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    out = tmp_path / "net.h5"
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [((truncated,), "not a readable checkpoint"), ((foreign,), "not a readable checkpoint"),
             ((h5,), "not a readable checkpoint"), ((tmp_path / "none.pt",), "no such checkpoint"),
             ((good, "--target", "loihi1"), "loihi1"), ((good, "--netx-compatible"), "--lava-cuba"),
             ((good, "--chips", "0"), "--chips must be at least 1")]
    for args, message in cases:
        line = _one_line_error(_cli("export", *args, "--out", out))
        assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # an existing output is replaced only by a complete file: a failed export leaves it as it was
    out.write_bytes(b"previous")
    _one_line_error(_cli("export", tmp_path / "none.pt", "--out", out))
    assert out.read_bytes() == b"previous"
