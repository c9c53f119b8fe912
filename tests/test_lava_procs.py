"""Lava processes: each model equals an independent reference (fixed_pt exactly: the fast engine's neuron
updates, not the step functions the models call; floating_pt within float tolerance of train/neurons.py), counters equal brute-force counts, per-sample resets leave no state behind, bad
parameters are refused at construction, and no Lava runtime process outlives any test.

Lava runs cost about a second each, so every test batches its checks into one run.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source

from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse, run_network
from lava_procs import (NEURON_OPS, READOUT_UNSET, CountingDense, CubaLIF, LavaCubaLIF, LavaRunError, LIF, Readout,
                        SampleSource, SpikGRU, lava_session, run_steps, shutdown)
from lava_procs.models import PyLIFModelFixed
from train.ops import layer_ops
from sim.integer_net import scan_hidden, scan_readout
from sim.lava_net import build_lava_network

KINDS = ("lif", "cuba-lif", "spikgru", "lava-cuba", "readout")
STATE_VARS = {"lif": ("v",), "cuba-lif": ("i", "v"), "spikgru": ("i", "v"), "lava-cuba": ("u", "v"),
              "readout": ("o",)}


pytestmark = pytest.mark.usefixtures("no_lava_process_left")


# ------------------------------------------------------------------------------- references
def random_params(rng: np.random.Generator, n: int) -> dict:
    """Integer parameters per kind; decays include both ends of the 12-bit range."""
    def decay():
        d = rng.integers(0, fx.DECAY_UNITY, n)
        d[:2] = (0, fx.DECAY_MAX)
        return d

    def bias():
        return rng.integers(-fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX + 1, n)

    return {
        # lif and spikgru clamp their states to a training clip; cuba-lif keeps the 24-bit range (default)
        "lif": dict(v_decay=decay(), bias_mant=bias(), bias_exp=2, state_lo=-fx.THETA // 2, state_hi=3 * fx.THETA // 2),
        "cuba-lif": dict(i_decay=decay(), v_decay=decay(), bias_mant=bias(), bias_exp=4),
        "spikgru": dict(i_decay=decay(), bias_mant=bias(), bias_exp=1, bias_z_mant=bias(), bias_z_exp=5,
                        state_lo=-fx.THETA, state_hi=2 * fx.THETA),
        "lava-cuba": dict(du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 4096)), bias_mant=bias(),
                          bias_exp=3),
        "readout": dict(v_decay=decay(), bias_mant=bias(), bias_exp=6),
    }


PROCESS = {"lif": LIF, "cuba-lif": CubaLIF, "spikgru": SpikGRU, "lava-cuba": LavaCubaLIF, "readout": Readout}


def fixed_reference(kind: str, p: dict, a: np.ndarray, az: np.ndarray) -> dict:
    """Traces [steps, n] from the zero state, computed by the fast engine's neuron updates (sim.integer_net.scan_hidden
    and scan_readout): its own implementation of docs/fixed_point.md, not the export.fixed_point step functions
    the Lava models call."""
    n = a.shape[1]
    bias = fx.bias_value(p["bias_mant"], p["bias_exp"]).astype(np.float64)
    zero = Synapse(np.zeros((n, n), dtype=np.int64), 0)
    layer = QLayer(kind, zero, None if kind == "readout" else zero, bias_mant=np.asarray(p["bias_mant"]),
                   bias_exp=p["bias_exp"], i_decay=np.asarray(p["i_decay"]) if "i_decay" in p else None, du=p.get("du"),
                   v_decay=np.asarray(p.get("v_decay", p.get("dv", 0))), state_lo=p.get("state_lo", -fx.STATE_MAX),
                   state_hi=p.get("state_hi", fx.STATE_MAX))
    C = np.asarray(a, dtype=np.float64)[:, None, :] * (1 << fx.ACT_SHIFT)
    if kind == "readout":
        return {"o": scan_readout(layer, C + bias)[:, 0].astype(np.int64)}
    if kind != "lava-cuba":
        C = C + bias
    G = None
    if kind == "spikgru":
        layer.bias_z_mant, layer.bias_z_exp = np.asarray(p["bias_z_mant"]), p["bias_z_exp"]
        G = (np.asarray(az, dtype=np.float64)[:, None, :] * (1 << fx.ACT_SHIFT)
             + fx.bias_value(p["bias_z_mant"], p["bias_z_exp"])).astype(np.float32)
    trace = {}
    S = scan_hidden(layer, C.astype(np.float32), trace=trace, G=G)
    out = {"s": S[:, 0].astype(np.int64)}
    names = {"lif": {"v": "v"}, "lava-cuba": {"u": "i", "v": "v"}}.get(kind, {"i": "i", "v": "v"})
    out.update({ours: trace[theirs][:, 0].astype(np.int64) for ours, theirs in names.items()})
    return out


def float_reference(kind: str, p: dict, a: np.ndarray, az: np.ndarray) -> dict:
    """Traces of train/neurons.py's float equations (torch, float64) from the zero state,
    with the float values the integer parameters stand for."""
    import torch
    from train import neurons as nr

    n = a.shape[1]
    f = lambda d: torch.tensor((fx.DECAY_UNITY - np.asarray(d, dtype=np.float64)) / fx.DECAY_UNITY)
    bias = torch.tensor(fx.bias_value(p["bias_mant"], p["bias_exp"]) / fx.THETA, dtype=torch.float64)
    eye, zero = torch.eye(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)
    opts = nr.SpikeOpts(clip=(p["state_lo"] / fx.THETA, p["state_hi"] / fx.THETA) if "state_lo" in p else None)
    z = torch.zeros(1, n, dtype=torch.float64)
    st = nr.ReadoutState(z, z) if kind == "readout" else nr.LIFState(z, z) if kind == "lif" else \
        nr.CubaLIFState(z, z, z)
    names = {"lif": ("s", "v"), "cuba-lif": ("s", "i", "v"), "spikgru": ("s", "i", "v"),
             "lava-cuba": ("s", "u", "v"), "readout": ("i", "o")}[kind]
    out = {k: [] for k in names}
    for t in range(len(a)):
        x = torch.tensor(a[t:t + 1], dtype=torch.float64)
        with torch.no_grad():
            if kind == "lif":
                _, st = nr.lif_step(x, st, nr.LIFParams(eye, zero, bias, f(p["v_decay"])), opts)
            elif kind == "cuba-lif":
                _, st = nr.cuba_lif_step(x, st, nr.CubaLIFParams(eye, zero, bias, f(p["i_decay"]),
                                                                 f(p["v_decay"])), opts)
            elif kind == "spikgru":
                xz = torch.cat([x, torch.tensor(az[t:t + 1], dtype=torch.float64)], dim=1)
                bz = torch.tensor(fx.bias_value(p["bias_z_mant"], p["bias_z_exp"]) / fx.THETA)
                prm = nr.SpikGRUParams(torch.cat([eye, zero], 1), zero, bias, torch.cat([zero, eye], 1), zero, bz,
                                       f(p["i_decay"]))
                _, st = nr.spikgru_step(xz, st, prm, opts)
            elif kind == "lava-cuba":
                prm = nr.CubaLIFParams(eye, zero, bias, f([p["du"] + 1]), f([p["dv"]]))
                _, st = nr.lava_cuba_step(x, st, prm, opts)
            else:
                _, st = nr.readout_step(x, st, nr.ReadoutParams(eye, bias, f(p["v_decay"])))
        for k, value in zip(names, st):
            out[k].append(value[0].numpy().copy())
    return {k: np.array(v) for k, v in out.items()}


def streamed(reference, kind, p, a, az, interval: int, offset: int) -> dict:
    """The reference with every sample run from the zero state: segments start at Lava step 0
    and at every step with (tau - offset) % interval == 0."""
    steps = len(a)
    starts = {0}
    if interval:
        starts |= {t for t in range(steps) if (t - offset) % interval == 0}
    bounds = sorted(starts) + [steps]
    pieces = [reference(kind, p, a[b0:b1], az[b0:b1]) for b0, b1 in zip(bounds[:-1], bounds[1:])]
    return {k: np.concatenate([pc[k] for pc in pieces]) for k in pieces[0]}


def counted(steps: int, interval: int, offset: int, n_samples, gap: int = 0) -> np.ndarray:
    """Boolean [steps]: the Lava steps on which counters count (not before the offset, not past the samples,
    not in the last `gap` steps of an interval)."""
    tau = np.arange(steps)
    ok = tau >= offset
    if interval and n_samples:
        ok &= tau < offset + n_samples * interval
    if interval:
        ok &= (tau - offset) % interval < interval - gap
    return ok


# ----------------------------------------------------------------------- neurons, one by one
def neuron_inputs(rng: np.random.Generator, steps: int, n: int, precision: str):
    """Dendritic inputs [steps, n] for a_in and a_gate: fixed_pt 16-bit integers (neuron 0 held at
    +32767 and neuron 1 at -32768 for a while so that states saturate), floating_pt threshold units."""
    if precision == "fixed_pt":
        a = rng.integers(-400, 1300, (steps, n))
        wild = rng.random((steps, n)) < 0.05
        a[wild] = rng.integers(fx.ACC_MIN, fx.ACC_MAX + 1, wild.sum())
        a[:60, 0], a[:60, 1] = fx.ACC_MAX, fx.ACC_MIN
        az = rng.integers(-2500, 2500, (steps, n))
        az[:20, 2], az[:20, 3] = fx.ACC_MAX, fx.ACC_MIN  # beyond both ends of the sigmoid table
        return a, az
    return rng.normal(0.25, 0.6, (steps, n)), rng.normal(0.0, 2.0, (steps, n))


def run_neurons_alone(precision: str, steps: int, chunks: list[int], reset: dict, seed: int):
    """Every neuron kind driven straight from random dendritic inputs in one Lava run (run in chunks,
    states read after each). Returns (params, inputs, per-kind results)."""
    rng = np.random.default_rng(seed)
    n = 6
    params = random_params(rng, n)
    a, az = neuron_inputs(rng, steps, n, precision)
    src, src_z = Source(data=a.T), Source(data=az.T)
    procs, sinks = {}, {}
    for kind in KINDS:
        procs[kind] = PROCESS[kind](shape=(n,), **params[kind], **reset)
        src.s_out.connect(procs[kind].a_in)
        sinks[kind] = Sink(shape=(n,), buffer=steps)
        (procs[kind].o_out if kind == "readout" else procs[kind].s_out).connect(sinks[kind].a_in)
    src_z.s_out.connect(procs["spikgru"].a_gate)
    results = {k: {"states": []} for k in KINDS}
    with lava_session(src):
        done = 0
        for chunk in chunks:
            run_steps(src, chunk, precision)
            done += chunk
            for kind in KINDS:
                results[kind]["states"].append((done, {v: getattr(procs[kind], v).get() for v in STATE_VARS[kind]}))
        for kind in KINDS:
            r = results[kind]
            r["trace"] = sinks[kind].data.get().T
            r["ops"] = procs[kind].neuron_ops.get()
            if kind == "readout":
                r["sample_max"] = procs[kind].sample_max.get()
                r["running_max"] = procs[kind].running_max.get()
            else:
                r["spikes"] = procs[kind].spikes.get()
    return params, (a, az), results


def check_neurons(precision, params, inputs, results, reset: dict, steps: int):
    a, az = inputs
    interval, offset = reset.get("reset_interval", 0), reset.get("reset_offset", 0)
    n_samples = reset.get("n_samples")
    reference = fixed_reference if precision == "fixed_pt" else float_reference
    window = counted(steps, interval, offset, n_samples, reset.get("gap", 0))
    for kind in KINDS:
        ref = streamed(reference, kind, params[kind], a, az, interval, offset)
        got = results[kind]
        if kind == "readout":
            trace, want = got["trace"], ref["o"]
        else:
            trace, want = got["trace"], ref["s"]
        if precision == "fixed_pt":
            np.testing.assert_array_equal(trace, want, err_msg=kind)
        elif kind == "readout":
            np.testing.assert_allclose(trace, want, rtol=1e-9, atol=1e-9, err_msg=kind)
        else:
            np.testing.assert_array_equal(trace, want, err_msg=kind)  # spikes: no near-threshold ties here
        for done, states in got["states"]:
            for name, value in states.items():
                if precision == "fixed_pt":
                    np.testing.assert_array_equal(value, ref[name][done - 1], err_msg=f"{kind}.{name} @ {done}")
                else:
                    np.testing.assert_allclose(value, ref[name][done - 1], rtol=1e-9, atol=1e-9,
                                               err_msg=f"{kind}.{name} @ {done}")
        # counters: brute force over the counted steps
        mac, ac, soft = NEURON_OPS[kind]
        n, n_counted = a.shape[1], int(window.sum())
        spikes = 0
        if kind != "readout":
            spikes = int(ref["s"][window].sum())
            np.testing.assert_array_equal(got["spikes"], ref["s"][window].sum(axis=0), err_msg=kind)
            assert 0 < spikes < n * n_counted, f"{kind}: test inputs should make some, not all, neurons spike"
        np.testing.assert_array_equal(got["ops"], [mac * n * n_counted, ac * n * n_counted + (spikes if soft else 0)],
                                      err_msg=kind)
    return window


@pytest.mark.parametrize("precision", ["fixed_pt", "floating_pt"])
def test_each_neuron_alone_equals_its_step_function(precision):
    steps = 120
    params, inputs, results = run_neurons_alone(precision, steps, [40, 41, 39], {}, seed=1)
    check_neurons(precision, params, inputs, results, {}, steps)
    if precision == "fixed_pt":  # the inputs drove states into saturation and past both ends of the table
        ref = fixed_reference("cuba-lif", params["cuba-lif"], *inputs)
        assert np.abs(ref["i"]).max() == fx.STATE_MAX
    reference = fixed_reference if precision == "fixed_pt" else float_reference
    for kind, names in (("lif", ("v",)), ("spikgru", ("i",))):  # the state clamp is reached at both ends
        p = params[kind]
        ref = reference(kind, p, *inputs)
        scale = 1 if precision == "fixed_pt" else fx.THETA
        for name in names:
            assert ref[name].min() == p["state_lo"] / scale and ref[name].max() == p["state_hi"] / scale, (kind, name)
    o = fixed_reference("readout", params["readout"], *inputs)["o"] if precision == "fixed_pt" else \
        float_reference("readout", params["readout"], *inputs)["o"]
    np.testing.assert_allclose(results["readout"]["sample_max"][0], o.max(axis=0), rtol=1e-9)
    np.testing.assert_allclose(results["readout"]["running_max"], o.max(axis=0), rtol=1e-9)


@pytest.mark.parametrize("precision", ["fixed_pt", "floating_pt"])
def test_resets_between_samples_leave_no_state_behind(precision):
    """4 samples of 22 steps and a gap of 5 at offset 3, then flush steps: every sample equals a fresh run from
    zero, counters count only the samples' 22 steps, the readout keeps one maximum per sample (its 22 steps)."""
    interval, gap, offset, n_samples, steps = 27, 5, 3, 4, 3 + 4 * 27 + 4
    reset = dict(reset_interval=interval, reset_offset=offset, n_samples=n_samples, gap=gap)
    params, inputs, results = run_neurons_alone(precision, steps, [steps], reset, seed=2)
    check_neurons(precision, params, inputs, results, reset, steps)
    ref = (fixed_reference if precision == "fixed_pt" else float_reference)
    got = results["readout"]["sample_max"]
    assert got.shape == (n_samples, 6)
    longer = []
    for j in range(n_samples):
        lo = offset + j * interval
        fresh = ref("readout", params["readout"], inputs[0][lo:lo + interval], inputs[1][lo:lo + interval])["o"]
        np.testing.assert_allclose(got[j], fresh[:interval - gap].max(axis=0), rtol=1e-9, err_msg=f"sample {j}")
        longer.append(not np.allclose(got[j], fresh.max(axis=0)))
    assert any(longer), "the gap's steps would change a maximum: the test tells them apart"
    # a reset really mattered: without it, sample 1's start would differ
    carried = ref("lif", params["lif"], inputs[0][offset:offset + 2 * interval], inputs[1][:2 * interval])["s"]
    fresh = ref("lif", params["lif"], inputs[0][offset + interval:offset + 2 * interval], inputs[1][:interval])["s"]
    assert not np.array_equal(carried[interval:], fresh)


# ------------------------------------------------------------------- connection and source
@pytest.mark.parametrize("precision", ["fixed_pt", "floating_pt"])
def test_counting_dense_and_sample_source(precision):
    """Source streams clipped counts with a gap of silent steps after each sample, then zeros; CountingDense
    delivers dendrite() one step late (16-bit saturation, floor shifts), whatever its reset config (it never
    resets: the network tests show the carry); syn_events = fan-out x payload sum over the counted steps."""
    rng = np.random.default_rng(3)
    n_samples, T, gap, C, steps = 3, 40, 4, 7, 135
    P = T + gap
    counts = rng.poisson(1.0, (n_samples, T, C))
    counts[rng.random(counts.shape) < 0.03] = 400  # clips to 255
    counts[0, 0, 0] = 255
    wa, wb = rng.integers(-128, 128, (5, C)), rng.integers(-128, 128, (4, C))
    src = SampleSource(counts=counts, gap=gap)
    dense_a = CountingDense(weights=wa, weight_exp=-3, num_message_bits=8, reset_interval=P, gap=gap, n_samples=2)
    dense_b = CountingDense(weights=wb, weight_exp=2, num_message_bits=8, reset_interval=P, reset_offset=0)
    sinks = [Sink(shape=(C,), buffer=steps), Sink(shape=(5,), buffer=steps), Sink(shape=(4,), buffer=steps)]
    src.s_out.connect([dense_a.s_in, dense_b.s_in, sinks[0].a_in])
    dense_a.a_out.connect(sinks[1].a_in)
    dense_b.a_out.connect(sinks[2].a_in)
    with lava_session(src):
        run_steps(src, steps, precision)
        sent, out_a, out_b = (s.data.get().T for s in sinks)
        events = dense_a.syn_events.get()[0], dense_b.syn_events.get()[0]
    stream = np.zeros((n_samples, P, C), dtype=np.int64)
    stream[:, :T] = np.minimum(counts, 255)
    x = np.zeros((steps, C), dtype=np.int64)
    x[:n_samples * P] = stream.reshape(-1, C)
    np.testing.assert_array_equal(sent, x)
    if precision == "fixed_pt":
        want_a = np.vstack([np.zeros((1, 5)), fx.dendrite(wa, -3, x[:-1])])
        want_b = np.vstack([np.zeros((1, 4)), fx.dendrite(wb, 2, x[:-1])])
        assert (np.abs(want_b) >= 32767).any() and (want_a < 0).any()  # saturation and negative floor shifts hit
    else:
        want_a = np.vstack([np.zeros((1, 5)), x[:-1] @ fx.dequantize_weight(wa, -3).T])
        want_b = np.vstack([np.zeros((1, 4)), x[:-1] @ fx.dequantize_weight(wb, 2).T])
    np.testing.assert_allclose(out_a, want_a, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out_b, want_b, rtol=1e-12, atol=0)
    assert events == (5 * x[:2 * P].sum(), 4 * x.sum())


# ---------------------------------------------------------------------- a whole network
def random_network(rng: np.random.Generator, sizes: list[int], kinds: list[str]) -> QNetwork:
    """Integer network whose layers all fire: weights leaning positive, exponents sized to the fan-in."""
    def syn(n_out, n_in, exp):
        return Synapse(rng.integers(-70, 128, (n_out, n_in)), exp)

    def decay(n):
        return rng.integers(200, 2500, n)

    layers = []
    for k, kind in enumerate(kinds):
        m, n = sizes[k], sizes[k + 1]
        lay = QLayer(kind=kind, ff=syn(n, m, 1 if k == 0 else 2), bias_mant=rng.integers(-2000, 2000, n), bias_exp=2)
        if kind != "readout":
            lay.rec = syn(n, n, 1)
        if kind in ("cuba-lif", "spikgru"):
            lay.i_decay = decay(n)
        if kind in ("lif", "cuba-lif", "readout"):
            lay.v_decay = decay(n)
        if kind == "lava-cuba":
            lay.du, lay.v_decay = 900, np.array([600])
        if kind == "spikgru":
            lay.ff_z, lay.rec_z = syn(n, m, 1), syn(n, n, 1)
            lay.bias_z_mant, lay.bias_z_exp = rng.integers(-4096, 4096, n), 3
        layers.append(lay)
    return QNetwork(layers)


def test_network_streams_samples_with_offsets_and_counts_table2():
    """A mixed network (SpikGRU, Cuba-LIF, LIF, Lava CUBA, readout) streams 3 samples, 3 silent steps after
    each, through one fixed_pt run: layer k's spikes on Lava step k + j P + t equal the fast engine's account
    of the stream (sim.stream.run_stream: sample j step t, the busy layers' last spikes carried into the next
    sample), and run_network's where nothing was carried; the readout's per-sample maxima equal the stream's;
    the counters equal brute-force counts of the samples' steps and, summed per layer, the study's Table 2."""
    from sim.stream import run_stream
    rng = np.random.default_rng(4)
    sizes, kinds = [10, 8, 7, 6, 6, 3], ["spikgru", "cuba-lif", "lif", "lava-cuba", "readout"]
    net = random_network(rng, sizes, kinds)
    n_samples, T, gap = 3, 35, 3
    P = T + gap
    counts = rng.poisson(0.4, (n_samples, T, sizes[0]))
    stream = run_stream(net, counts, gap, keep_traces=True)
    alone = run_network(net, counts)
    assert stream.carried.tolist() == [1, 2]  # busy layers: their last spikes reach the next sample
    ref = {"spikes": [s[:, :T] for s in stream.spikes]}
    np.testing.assert_array_equal(ref["spikes"][0][0], alone["spikes"][0][0])
    L = len(net.hidden)
    steps = n_samples * P + L + 1
    lnet = build_lava_network(net, counts, record=True, gap=gap)  # sim's builder: the offset convention in use
    src, neurons, conns, sinks = lnet.source, lnet.neurons, lnet.conns, lnet.sinks
    with lava_session(src):
        run_steps(src, steps, "fixed_pt")
        traces = [s.data.get().T for s in sinks]
        sample_max = neurons[-1].sample_max.get()
        spikes = [p.spikes.get() for p in neurons[:-1]]
        ops = [p.neuron_ops.get() for p in neurons]
        events = [{name: c.syn_events.get()[0] for name, c in lc.items()} for lc in conns]
    # spikes per step at the layer's offset; the test network is busy enough to be a real check
    for k in range(1, L + 1):
        got = traces[k - 1][k:k + n_samples * P].reshape(n_samples, P, -1)
        np.testing.assert_array_equal(got, stream.spikes[k - 1], err_msg=f"layer {k} ({kinds[k - 1]})")
        rate = ref["spikes"][k - 1].mean()
        assert 0.05 < rate < 0.8, f"layer {k} rate {rate}"
    np.testing.assert_array_equal(sample_max, stream.sample_max)
    # counters against a brute-force count from the reference
    x = np.clip(counts, 0, 255)
    inputs = [x] + [s.astype(np.int64) for s in ref["spikes"]]
    for k, lay in enumerate(net.layers):
        n, m = lay.n_out, lay.n_in
        n_in_events = int(inputs[k].sum())
        for name in lay.synapses():
            want = n * (int(inputs[k + 1].sum()) if name.startswith("rec") else n_in_events)
            assert events[k][name] == want, (k, name)
        mac, ac, soft = NEURON_OPS[lay.kind]
        out_spikes = int(inputs[k + 1].sum()) if lay.kind != "readout" else 0
        np.testing.assert_array_equal(ops[k], [mac * n * n_samples * T,
                                               ac * n * n_samples * T + (out_spikes if soft else 0)])
        if lay.kind != "readout":
            np.testing.assert_array_equal(spikes[k], inputs[k + 1].sum(axis=(0, 1)))
        if lay.kind in ("lif", "cuba-lif", "spikgru", "readout"):  # the study's Table 2, per step per sample
            steps_counted = n_samples * T
            a_in = n_in_events / (m * steps_counted)
            a_out = out_spikes / (n * steps_counted)
            t_mac, t_ac = layer_ops(lay.kind, m, n, a_in, a_out)
            measured_ac = (sum(events[k].values()) + ops[k][1]) / steps_counted
            assert ops[k][0] / steps_counted == pytest.approx(t_mac)
            assert measured_ac == pytest.approx(t_ac, rel=1e-12), lay.kind


# ------------------------------------------------------------------------------ bad input
GOOD = dict(shape=(3,), v_decay=100)


@pytest.mark.parametrize("make, param", [
    (lambda: LIF(shape=(3, 2), v_decay=1), "shape"),
    (lambda: LIF(shape=(0,), v_decay=1), "shape"),
    (lambda: LIF(shape=(3,), v_decay=4096), "v_decay"),
    (lambda: LIF(shape=(3,), v_decay=[1, 2]), "v_decay"),
    (lambda: LIF(shape=(3,), v_decay=0.5), "v_decay"),
    (lambda: LIF(**GOOD, bias_mant=4096), "bias_mant"),
    (lambda: LIF(**GOOD, bias_mant=[1, 2, 3, 4]), "bias_mant"),
    (lambda: LIF(**GOOD, bias_exp=8), "bias_exp"),
    (lambda: LIF(**GOOD, reset_interval=-1), "reset_interval"),
    (lambda: LIF(**GOOD, reset_offset=-2), "reset_offset"),
    (lambda: LIF(**GOOD, n_samples=0), "n_samples"),
    (lambda: CubaLIF(shape=(3,), i_decay=-1, v_decay=1), "i_decay"),
    (lambda: CubaLIF(shape=(3,), i_decay=np.nan, v_decay=1), "i_decay"),
    (lambda: SpikGRU(shape=(3,), i_decay=1, bias_z_mant=-4097), "bias_z_mant"),
    (lambda: SpikGRU(shape=(3,), i_decay=1, bias_z_exp=[1, 2]), "bias_z_exp"),
    (lambda: LIF(**GOOD, state_lo=-fx.STATE_MAX - 1), "state_lo"),
    (lambda: LIF(**GOOD, state_hi=fx.STATE_MAX + 1), "state_hi"),
    (lambda: CubaLIF(shape=(3,), i_decay=1, v_decay=1, state_lo=5, state_hi=5), "state_lo"),
    (lambda: SpikGRU(shape=(3,), i_decay=1, state_lo=0.5), "state_lo"),
    (lambda: SpikGRU(shape=(3,), i_decay=1, state_hi=[1, 2]), "state_hi"),
    (lambda: LavaCubaLIF(shape=(3,), du=[1, 2, 3], dv=1), "du"),
    (lambda: LavaCubaLIF(shape=(3,), du=1, dv=5000), "dv"),
    (lambda: Readout(shape=(3,), v_decay="x"), "v_decay"),
    (lambda: CountingDense(weights=np.zeros(4)), "weights"),
    (lambda: CountingDense(weights=[[128, 0]]), "weights"),
    (lambda: CountingDense(weights=[[0.5, 0]]), "weights"),
    (lambda: CountingDense(weights=[[1, 0]], weight_exp=8), "weight_exp"),
    (lambda: CountingDense(weights=[[1, 0]], weight_exp=-9), "weight_exp"),
    (lambda: CountingDense(weights=[[1, 0]], num_message_bits=25), "num_message_bits"),
    (lambda: CountingDense(weights=[[1, 0]], reset_interval=5, gap=5), "gap"),
    (lambda: LIF(**GOOD, gap=1), "gap"),
    (lambda: SampleSource(counts=np.zeros(5)), "counts"),
    (lambda: SampleSource(counts=np.ones((1, 2, 3)), gap=-1), "gap"),
    (lambda: SampleSource(counts=-np.ones((1, 2, 3))), "counts"),
    (lambda: SampleSource(counts=np.full((1, 2, 3), 1.5)), "counts"),
])
def test_bad_parameters_are_refused_at_construction(make, param):
    with pytest.raises(ValueError, match=f"'{param}'"):
        make()


def test_good_parameters_build_vars_and_ports():
    lif = LIF(shape=4, v_decay=[0, 1, 2, 4095], bias_mant=-4096, bias_exp=7)
    assert lif.a_in.shape == lif.s_out.shape == (4,)
    np.testing.assert_array_equal(lif.bias_mant.init, [-4096] * 4)
    gru = SpikGRU(shape=(2,), i_decay=3)
    assert gru.a_gate.shape == (2,)
    dense = CountingDense(weights=[[-128, 127, 0]], weight_exp=-8, num_message_bits=24)
    assert (dense.s_in.shape, dense.a_out.shape) == ((3,), (1,))
    src = SampleSource(counts=np.full((2, 3), 1000))  # one sample [T, C]; counts clip to 255
    assert src.counts.init.shape == (1, 2, 3) and src.counts.init.max() == 255
    readout = Readout(shape=(5,), v_decay=7, n_samples=9)
    assert readout.sample_max.shape == (9, 5) and readout.sample_max.init == READOUT_UNSET


# ------------------------------------------------------------------------------ failing runs
def test_failing_run_stops_the_runtime():
    """A payload that does not fit num_message_bits stops the run: LavaRunError carries the model's
    message and no Lava process is left (the autouse fixture checks)."""
    src = SampleSource(counts=np.full((1, 10, 4), 2))
    dense = CountingDense(weights=np.ones((3, 4)), num_message_bits=1, name="too-narrow")
    sink = Sink(shape=(3,), buffer=10)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(sink.a_in)
    with pytest.raises(LavaRunError, match=r"'too-narrow'.*payload 2 .*outside \[0, 1\]"):
        run_steps(dense, 10, "fixed_pt")
    shutdown(dense)  # idempotent


def test_failing_plain_lava_run_is_cleaned_up_by_shutdown():
    """Lava's own run() leaves its shared-memory manager behind and would hang in stop() after a model
    raised: lava_session / shutdown tear it down. A model missing for the tag fails at compile time."""
    src = SampleSource(counts=np.full((1, 10, 4), 3))
    dense = CountingDense(weights=np.ones((3, 4)), num_message_bits=0)
    src.s_out.connect(dense.s_in)
    with pytest.raises(RuntimeError):
        with lava_session(dense):
            dense.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    other = SampleSource(counts=np.ones((1, 3, 2)))
    with pytest.raises(LavaRunError, match="No ProcessModels found"):
        run_steps(other, 3, run_cfg=Loihi2SimCfg(select_tag="no_such_tag"))
    with pytest.raises(ValueError, match="select_tag"):
        run_steps(SampleSource(counts=np.ones((1, 3, 2))), 3, "fixed")


class _FaultyLIF(PyLIFModelFixed):
    """Raises on Lava step 5 before sending, while its sink waits for the spikes."""

    def update(self, a):
        if self.tau == 5:
            raise ArithmeticError("faulty neuron at step 5")
        return super().update(a)


def test_model_failing_while_others_wait_for_it_does_not_hang():
    """Lava's own blocking run waits forever here (the sink never answers its runtime service);
    run_steps notices the dead process, reports the model's error and tears everything down."""
    src, lif, sink = Source(data=np.ones((3, 20), dtype=int)), LIF(shape=(3,), v_decay=0), Sink(shape=(3,), buffer=20)
    src.s_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={LIF: _FaultyLIF})
    start = time.monotonic()
    with pytest.raises(LavaRunError, match="ArithmeticError: faulty neuron at step 5") as info:
        run_steps(lif, 20, run_cfg=cfg)
    assert time.monotonic() - start < 30
    assert any("faulty neuron" in tb for tb in info.value.errors)
