"""Neuron layers: fused kernels = plain loop = DESIGN's equations written out here."""
import copy

import numpy as np
import pytest
import torch

from train.layers import (LAVA_CUBA_INIT, CubaLIFRecurrent, GRUStack, LeakyReadout, LIFRecurrent,
                          RNNRecurrent, SpikGRURecurrent)
from audio.binning import BinSpec, EventBatch
from train.neurons import SpikeOpts, spike

B, T, N_IN, N = 4, 30, 20, 16
NARROW = (-1.5, 1.5)  # tight enough that test inputs hit the clip bounds

CASES = {
    'lif': lambda clip: LIFRecurrent(N_IN, N, clip=clip),
    'cuba-lif': lambda clip: CubaLIFRecurrent(N_IN, N, clip=clip),
    'lava-cuba': lambda clip: CubaLIFRecurrent(N_IN, N, clip=clip, lava_cuba=True),
    'spikgru': lambda clip: SpikGRURecurrent(N_IN, N, clip=clip, surrogate_scale=0.7,
                                             surrogate_width=0.6),
    'rnn': lambda clip: RNNRecurrent(N_IN, N),
    'readout': lambda clip: LeakyReadout(N_IN, N),
}
SPIKING = ('lif', 'cuba-lif', 'lava-cuba', 'spikgru')


@pytest.fixture(autouse=True)
def seeded():
    """Layers draw their initial weights from the global generator: fix it."""
    torch.manual_seed(0)


def randomized(layer, seed=0, gain=4.0):
    """Random parameters: weights scaled up so that neurons fire and clip, decays in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    if getattr(layer, 'lava_cuba', False):
        gain /= LAVA_CUBA_INIT  # its weights start at LAVA_CUBA_INIT of the study's range
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ('alpha', 'beta'):
                p.copy_(torch.rand(p.shape, generator=g))
            elif name == 'U' and layer.kind == 'rnn':  # 0.5 I: make it asymmetric, stay stable
                p.add_(0.2 * torch.rand(p.shape, generator=g) - 0.1)
            else:
                p.mul_(gain)
    return layer.double()


def spikes_in(seed=1, density=0.1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_IN, generator=g) < density).double()


def run(layer, x):
    """Output and gradients (input, every parameter) of a random linear function of it.
    The output is returned after backward: backward must leave it alone."""
    x = x.clone().requires_grad_()
    y = layer(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    (y * weights).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}


@pytest.mark.parametrize('case, clip', [(case, clip) for case in SPIKING for clip in (None, NARROW)]
                         + [('rnn', None), ('readout', None)])
def test_kernel_matches_plain_loop(case, clip):
    fused = randomized(CASES[case](clip))
    loop = copy.deepcopy(fused)
    loop.fused = False
    x = spikes_in()
    y, gx, grads = run(fused, x)
    y_ref, gx_ref, grads_ref = run(loop, x)
    if case in SPIKING:  # the comparison means something only if some neurons spike
        assert 0.02 < y.mean() < 0.9
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-9, atol=1e-9)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize('case', SPIKING + ('rnn',))
def test_kernel_on_several_threads_matches_plain_loop(case, monkeypatch):
    """The batch cut into chunks run side by side: the same outputs, the parameter gradients summed."""
    from train import kernels
    monkeypatch.setattr(kernels, 'MIN_CHUNK', 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        fused = randomized(CASES[case](NARROW))
        loop = copy.deepcopy(fused)
        loop.fused = False
        x = spikes_in()
        y, gx, grads = run(fused, x)
        assert kernels._pool[1] == 3  # the chunked path ran
    finally:
        torch.set_num_threads(threads)
    y_ref, gx_ref, grads_ref = run(loop, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-9, atol=1e-9)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-9, atol=1e-9, msg=name)


def counts_in(seed=3, density=0.1):
    """Spike counts 0..3 at `density`, as a dense float64 batch and as the loader's EventBatch."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, T, N_IN, generator=g) < density) * torch.randint(1, 4, (B, T, N_IN), generator=g)
    b, t, c = x.nonzero(as_tuple=True)
    flat, owner = np.repeat((t * N_IN + c).numpy(), x[b, t, c].numpy()), np.repeat(b.numpy(), x[b, t, c].numpy())
    return x.double(), EventBatch.from_events(flat, owner, B, BinSpec(T, 1.0, N_IN))


EVENT_CASES = dict(CASES, gru=lambda clip: GRUStack(N_IN, N, hidden=12, num_layers=2))


@pytest.mark.parametrize('threads', [1, 3])
@pytest.mark.parametrize('case', list(EVENT_CASES))
def test_event_input_matches_dense_input(case, threads, monkeypatch):
    """The event-driven input projection: the same outputs and parameter gradients as the dense one (float64),
    on one thread and with the batch in chunks."""
    from train import kernels
    monkeypatch.setattr(kernels, 'MIN_CHUNK', 1)
    layer = randomized(EVENT_CASES[case](NARROW))
    x, events = counts_in()
    assert x.max() > 1 and torch.equal(events.dense(torch.float64), x)
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for inp in (x, events):
            layer.zero_grad()
            y = layer(inp)
            (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)).sum().backward()
            results.append((y.detach(), {n: p.grad for n, p in layer.named_parameters()}))
        assert threads == 1 or kernels._pool[1] == threads  # the chunked path ran
    finally:
        torch.set_num_threads(default)
    (y, grads), (y_ev, grads_ev) = results
    if case in SPIKING:
        assert 0.02 < y.mean() < 0.9
    torch.testing.assert_close(y_ev, y, rtol=1e-10, atol=1e-10)
    assert grads.keys() == grads_ev.keys()
    for name in grads:
        assert grads[name].abs().sum() > 0, name
        torch.testing.assert_close(grads_ev[name], grads[name], rtol=1e-9, atol=1e-9, msg=name)


def test_plain_loop_takes_events():
    """A block on the plain loop (or a same-step reset) densifies an EventBatch itself."""
    layer = randomized(CubaLIFRecurrent(N_IN, N, reset='zero'))
    x, events = counts_in()
    assert not layer.uses_fused
    torch.testing.assert_close(layer(events), layer(x), rtol=0, atol=0)


@pytest.mark.parametrize('threads', [1, 3])
def test_fused_gru_matches_torch_gru(threads, monkeypatch):
    """GRUStack.fused_recurrence (kernels.gru): nn.GRU's outputs and gradients (input and every parameter) in
    float64, its dropout masks between layers included, on one thread and with the batch in chunks."""
    from train import kernels
    monkeypatch.setattr(kernels, 'MIN_CHUNK', 1)
    stack = GRUStack(N_IN, 5, hidden=N, num_layers=3).double()
    with torch.no_grad():
        for p in stack.parameters():
            p.mul_(3)
    x = spikes_in() + torch.randn(B, T, N_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(B, T, N, dtype=torch.float64)
    default = torch.get_num_threads()
    results = []
    for dropout in (0.0, 0.3):
        stack.gru.dropout = dropout
        for fused in (False, True):
            stack.zero_grad()
            xg = x.clone().requires_grad_()
            torch.manual_seed(7)
            torch.set_num_threads(threads if fused else 1)
            try:
                h = stack.fused_recurrence(xg) if fused else stack.recurrence(xg)
                (h * weights).sum().backward()
                assert not fused or threads == 1 or kernels._pool[1] == threads
            finally:
                torch.set_num_threads(default)
            results.append((h.detach(), xg.grad, {n: p.grad.clone() for n, p in stack.gru.named_parameters()}))
    torch_gru, fused_gru, torch_dropout, fused_dropout = results
    assert (torch_dropout[0] - torch_gru[0]).abs().max() > 0.1  # dropout did something
    for ref, got in ((torch_gru, fused_gru), (torch_dropout, fused_dropout)):
        torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got[1], ref[1], rtol=1e-9, atol=1e-9)
        assert ref[2].keys() == got[2].keys() and len(ref[2]) == 12
        for name in ref[2]:
            assert ref[2][name].abs().sum() > 0, name
            torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-9, msg=name)


def test_clipping_is_exercised():
    layer = randomized(CubaLIFRecurrent(N_IN, N, clip=NARROW, fused=False))
    unclipped = copy.deepcopy(layer)
    unclipped.opts = unclipped.opts._replace(clip=None)
    x = spikes_in()
    assert not torch.equal(layer(x), unclipped(x))


def test_kernel_float32_matches_float64_loop():
    fused = randomized(CubaLIFRecurrent(N_IN, N)).float()
    loop = copy.deepcopy(fused).double()
    loop.fused = False
    x = spikes_in()
    torch.testing.assert_close(fused(x.float()).double(), loop(x), rtol=0, atol=0)


def hand_written_cuba_lif(layer, x, lo, hi):
    W, U, b, alpha, beta = (p.detach() for p in (layer.W, layer.U, layer.b, layer.alpha,
                                                 layer.beta))
    s, i, v = (torch.zeros(B, N, dtype=x.dtype) for _ in range(3))
    out = []
    for t in range(x.shape[1]):
        i = torch.clamp(alpha * i + x[:, t] @ W.T + s @ U.T + b, lo, hi)
        v = torch.clamp(beta * v + (1 - beta) * i - 1.0 * s, lo, hi)
        s = (v > 1.0).double()
        out.append(s)
    return torch.stack(out, 1)


def hand_written_spikgru(layer, x, lo, hi):
    W, U, b, Wz, Uz, bz, alpha = (p.detach() for p in (layer.W, layer.U, layer.b, layer.Wz,
                                                       layer.Uz, layer.bz, layer.alpha))
    s, i, v = (torch.zeros(B, N, dtype=x.dtype) for _ in range(3))
    out = []
    for t in range(x.shape[1]):
        i = torch.clamp(alpha * i + x[:, t] @ W.T + s @ U.T + b, lo, hi)
        z = torch.sigmoid(x[:, t] @ Wz.T + s @ Uz.T + bz)
        v = torch.clamp(z * v + (1 - z) * i - 1.0 * s, lo, hi)
        s = (v > 1.0).double()
        out.append(s)
    return torch.stack(out, 1)


def hand_written_lava_cuba(layer, x, lo, hi):
    W, U, b, alpha, beta = (p.detach() for p in (layer.W, layer.U, layer.b, layer.alpha,
                                                 layer.beta))
    s, i, v = (torch.zeros(B, N, dtype=x.dtype) for _ in range(3))
    out = []
    for t in range(x.shape[1]):
        i = torch.clamp(alpha * i + x[:, t] @ W.T + s @ U.T, lo, hi)
        v = torch.clamp(beta * torch.where(s > 0, 0.0, v) + i + b, lo, hi)
        s = (v >= 1.0).double()
        out.append(s)
    return torch.stack(out, 1)


def hand_written_readout(layer, x):
    o, out = torch.zeros(B, N, dtype=x.dtype), []
    for t in range(x.shape[1]):
        o = layer.beta.detach() * o + x[:, t] @ layer.W.detach().T + layer.b.detach()
        out.append(o)
    return torch.stack(out, 1)


@pytest.mark.parametrize('fused', [False, True], ids=['loop', 'kernel'])
@pytest.mark.parametrize('case, equations, clip', [
    ('cuba-lif', hand_written_cuba_lif, NARROW),
    ('spikgru', hand_written_spikgru, NARROW),
    ('lava-cuba', hand_written_lava_cuba, NARROW),
    ('lava-cuba', hand_written_lava_cuba, (-1.5, 1.0)),  # v clipped onto vth: >= matters
])
def test_layer_follows_design_equations(case, equations, clip, fused):
    layer = randomized(CASES[case](clip))
    layer.fused = fused
    x = spikes_in()
    with torch.no_grad():
        y = layer(x)
    assert 0.02 < y.mean() < 0.9
    torch.testing.assert_close(y, equations(layer, x, *clip), rtol=0, atol=0)


def test_readout_follows_design_equation():
    layer = randomized(LeakyReadout(N_IN, N, fused=False))
    x = spikes_in()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), hand_written_readout(layer, x))


@pytest.mark.parametrize('case', ['lif', 'cuba-lif', 'lava-cuba', 'spikgru', 'readout'])
def test_clamp_puts_decays_back_in_unit_interval(case):
    layer = CASES[case](None)
    names = [n for n in ('alpha', 'beta') if getattr(layer, n, None) is not None]
    assert names
    with torch.no_grad():
        for name in names:
            p = getattr(layer, name)
            p.copy_(torch.linspace(-2, 3, p.numel()))
    layer.clamp_()
    for name in names:
        p = getattr(layer, name).detach()
        assert p.min() >= 0 and p.max() <= 1
        expected = torch.linspace(-2, 3, p.numel()).clamp(0, 1)
        torch.testing.assert_close(p, expected)


def test_surrogate_is_a_triangle():
    opts = SpikeOpts(scale=2.0, width=0.5)
    v = torch.tensor([0.0, 0.5, 0.75, 0.875, 1.0, 1.125, 1.25, 1.5, 2.0], requires_grad=True)
    s = spike(v, opts)
    s.sum().backward()
    assert s.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]  # strictly above vth = 1
    torch.testing.assert_close(v.grad, torch.tensor([0, 0, 1.0, 1.5, 2.0, 1.5, 1.0, 0, 0]))
    v_default = torch.tensor([0.0, 0.5, 1.0, 1.5], requires_grad=True)
    spike(v_default).sum().backward()
    torch.testing.assert_close(v_default.grad, torch.tensor([0.0, 0.5, 1.0, 0.5]))
    assert spike(torch.tensor([1.0]), inclusive=True).item() == 1


def test_layer_interface_and_initialisation():
    x = torch.rand(2, 5, N_IN)
    for case, make in CASES.items():
        layer = make(None)
        assert layer(x).shape == (2, 5, N)
        params = layer.export_params()
        assert all(isinstance(a, np.ndarray) for a in params.values())
        assert params['W'].shape == (N, N_IN)
        assert np.abs(params['W']).max() <= 1 / np.sqrt(N_IN)
        for name in ('alpha', 'beta'):
            if name in params:
                assert np.all(params[name] == np.float32(0.9))
    assert np.array_equal(CASES['rnn'](None).export_params()['U'], 0.5 * np.eye(N))
    assert set(CASES['spikgru'](None).export_params()) == {'W', 'U', 'b', 'Wz', 'Uz', 'bz', 'alpha'}
    assert CASES['lava-cuba'](None).export_params()['alpha'].shape == (1,)
    kinds = {make(None).kind for make in CASES.values()}
    assert kinds == {'lif', 'cuba-lif', 'spikgru', 'rnn', 'readout'}
    gru = GRUStack(N_IN, 11, hidden=8, num_layers=2)
    assert gru.kind == 'gru' and gru(x).shape == (2, 5, 11)
    gru.clamp_()
    assert 'readout.weight' in gru.export_params()


def test_lava_cuba_blocks_start_at_the_study_neurons_drive():
    """CUBA adds the whole current to v, the study's Cuba-LIF (1 - beta) of it: a Lava-CUBA block's W, U and b start
    at (1 - 0.9) of the study's range, drawing the same random numbers."""
    torch.manual_seed(3)
    study = CubaLIFRecurrent(50, 40)
    torch.manual_seed(3)
    lava = CubaLIFRecurrent(50, 40, lava_cuba=True)
    for name in ("W", "U", "b"):
        assert torch.allclose(getattr(lava, name), 0.1 * getattr(study, name), atol=1e-7), name
    assert float(lava.W.abs().max()) <= 0.1 / 50 ** 0.5
