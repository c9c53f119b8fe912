"""Conformance: every form of the fixed-point arithmetic reproduces the same literal sequences.

export/fixed_point.py is the specification (docs/fixed_point.md); the other forms are the spec's network runner
(export.qnet.run_network), the fast engine (sim.integer_net), the PyTorch QAT forward (export.qat, plain loop and
fused kernel, from a float model that quantizes to this network) and the Lava fixed_pt ProcessModels. The expected
spikes and readout below were computed once and are written out here: a change to the spec, or to any one form,
fails this test for that form (the other tests only check the forms against each other).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sim.lava_net as lava_net  # first: Lava fixes multiprocessing's start method when imported
from export import fixed_point as fx
from export.qat import run_fixed_point
from export.qnet import QLayer, QNetwork, Synapse, run_network
from export.quantize import quantize_model
from sim.integer_net import run_batch
from train.models import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("no_lava_process_left")

COUNTS = np.array([[[6, 7, 0], [7, 4, 4], [5, 2, 8], [0, 2, 3], [5, 3, 1], [0, 0, 0], [1, 8, 1], [5, 6, 2],
                    [2, 3, 2], [8, 1, 8], [7, 7, 1], [3, 5, 4]]])

GOLDEN = {  # per kind: each neuron's spikes over the 12 steps, each readout unit's o over the 12 steps
    "lif": (["000000000000", "011111111111", "000000000000", "001000000000"],
            [[9248, 28600, 46831, 62513, 76664, 89433, 100955, 111352, 120733, 129198, 136837, 143730],
             [9216, 36468, 58808, 71531, 80526, 86886, 91383, 94562, 96810, 98399, 99523, 100317]]),
    "cuba-lif": (["000000000000", "000000100001", "000000000000", "000100000000"],
                 [[9248, 17592, 25122, 32684, 38740, 44204, 60143, 63517, 66562, 69309, 71788, 85033],
                  [9216, 15732, 20339, 26668, 28071, 29063, 50500, 44921, 40976, 38187, 36215, 55557]]),
    "spikgru": (["000000000000", "000010001000", "000000000000", "000100000000"],
                [[6848, 13027, 18602, 49489, 24112, 28605, 32659, 36317, 12226, 17880, 22981, 27584],
                 [3328, 5681, 7344, -14776, -11727, -4963, -180, 3201, 983, 4023, 6172, 7691]]),
    "lava-cuba": (["000000000000", "011111111111", "000000000000", "000000000000"],
                  [[9248, 28600, 46063, 61820, 76038, 88868, 100445, 110891, 120317, 128823, 136498, 143424],
                   [9216, 36468, 55736, 69359, 78990, 85800, 90615, 94019, 96426, 98128, 99331, 100182]]),
}
KINDS = list(GOLDEN)


def golden_net(kind: str) -> QNetwork:
    rng = np.random.default_rng(11)
    n_in, n, K = 3, 4, 2
    layer = QLayer(kind, Synapse(rng.integers(-128, 128, (n, n_in)), 2), Synapse(rng.integers(-128, 128, (n, n)), 3),
                   bias_mant=rng.integers(-500, 500, n), bias_exp=4)
    if kind == "lif":
        layer.v_decay = np.array([100, 700, 2000, 4000])
    if kind == "cuba-lif":
        layer.i_decay, layer.v_decay = np.array([300, 900, 1500, 3000]), np.array([100, 700, 2000, 4000])
    if kind == "spikgru":
        layer.i_decay = np.array([300, 900, 1500, 3000])
        layer.ff_z = Synapse(rng.integers(-128, 128, (n, n_in)), 1)
        layer.rec_z = Synapse(rng.integers(-128, 128, (n, n)), 0)
        layer.bias_z_mant, layer.bias_z_exp = rng.integers(-2000, 2000, n), 3
    if kind == "lava-cuba":
        layer.du, layer.v_decay = 511, np.array([1024])
    if kind != "lava-cuba":
        layer.state_lo, layer.state_hi = -3 * fx.THETA, 2 * fx.THETA
    readout = QLayer("readout", Synapse(rng.integers(-128, 128, (K, n)), 2), bias_mant=rng.integers(-300, 300, K),
                     bias_exp=5, v_decay=np.array([400, 1200]))
    return QNetwork([layer, readout])


def expected(kind: str) -> tuple[np.ndarray, np.ndarray]:
    spikes, readout = GOLDEN[kind]
    return np.array([[int(c) for c in row] for row in spikes]).T, np.array(readout).T  # [T, n], [T, K]


def float_model(net: QNetwork, kind: str):
    """A float model whose quantization is this network (the QAT forward starts from float parameters)."""
    layer, readout = net.layers
    options = {"lava_cuba": True} if kind == "lava-cuba" else {"clip": (-3.0, 2.0)}
    cfg = ModelConfig("cuba-lif" if kind == "lava-cuba" else kind, 3, 2, 1, 4, options)
    model = build_model(cfg)
    decay = lambda d: torch.tensor((fx.DECAY_UNITY - np.asarray(d, dtype=np.float64)) / fx.DECAY_UNITY)
    w = lambda syn: torch.tensor(syn.to_float())
    b = lambda mant, exp: torch.tensor(fx.bias_value(mant, exp) / fx.THETA)
    block = model.hidden_layers[0]
    with torch.no_grad():
        block.W.copy_(w(layer.ff)), block.U.copy_(w(layer.rec)), block.b.copy_(b(layer.bias_mant, layer.bias_exp))
        if kind in ("lif", "cuba-lif"):
            block.beta.copy_(decay(layer.v_decay))
        if kind in ("cuba-lif", "spikgru"):
            block.alpha.copy_(decay(layer.i_decay))
        if kind == "lava-cuba":
            block.alpha.copy_(decay(fx.lava_d([layer.du]))), block.beta.copy_(decay(layer.v_decay))
        if kind == "spikgru":
            block.Wz.copy_(w(layer.ff_z)), block.Uz.copy_(w(layer.rec_z))
            block.bz.copy_(b(layer.bias_z_mant, layer.bias_z_exp))
        model.readout.W.copy_(w(readout.ff)), model.readout.b.copy_(b(readout.bias_mant, readout.bias_exp))
        model.readout.beta.copy_(decay(readout.v_decay))
    return model.double(), cfg


@pytest.mark.parametrize("kind", KINDS)
def test_every_form_reproduces_the_golden_sequences(kind):
    net = golden_net(kind)
    want_s, want_o = expected(kind)
    assert 0 < want_s.sum() < want_s.size  # sequences with spikes and silences
    forms = {"spec (run_network)": run_network(net, COUNTS), "fast engine": run_batch(net, COUNTS)}
    model, cfg = float_model(net, kind)
    requantized = quantize_model(model, cfg)[0]
    assert np.array_equal(requantized.layers[0].ff.weight, net.layers[0].ff.weight)  # the premise of the QAT rows
    forms["spec of the requantized float model"] = run_network(requantized, COUNTS)
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    with torch.no_grad():
        for fused in (False, True):
            out = run_fixed_point(model, counts, fused=fused)
            forms[f"QAT forward ({'fused' if fused else 'loop'})"] = {
                "spikes": [s.numpy() for s in out["spikes"]], "readout": out["readout"].numpy()}
    for name, out in forms.items():
        np.testing.assert_array_equal(np.asarray(out["spikes"][0])[0].astype(np.int64), want_s, err_msg=name)
        np.testing.assert_array_equal(np.asarray(out["readout"])[0].astype(np.int64), want_o, err_msg=name)
    lava = lava_net.run_lava(net, COUNTS, record=True, progress=False)
    np.testing.assert_array_equal(lava.spikes[0][0], want_s, err_msg="Lava fixed_pt")
    np.testing.assert_array_equal(lava.sample_max[0], want_o.max(axis=0), err_msg="Lava fixed_pt readout")
