"""A Lava network from an exported QNetwork: build it, stream samples through it, read predictions and counters.

Wiring follows the offset convention of ``lava_procs.process`` (read its docstring): the
``SampleSource`` streams the N samples back to back, each followed by ``gap`` silent steps
(period P = T + gap; model step m of the stream on Lava step m); hidden layer k (1-based) runs
at offset k, the readout at offset L + 1; each connection (``CountingDense``) carries the offset
of the process that feeds it: feed-forward out of layer k - 1 has offset k - 1, the recurrent
ones of layer k offset k. Neurons reset at their sample's first step; connections never do (as on
the chip). SpikGRU's gate connections (Wz from below, Uz recurrent) feed the neuron's ``a_gate``
port. A run is N * P + L + 1 Lava steps; layer k's spikes of sample j, step t are those of Lava
step tau = k + j * P + t. The stream is sim.stream's: the fast engine's ``run_stream`` gives the
same spikes, counts and maxima for any gap, and the samples are independent when the gap is long
enough (sim.stream's docstring).

Every run goes through ``lava_procs.run_steps`` inside ``lava_session``: on any failure the
runtime is shut down, no Lava process is left behind, and ``LavaRunError`` is raised (the
caller presents no partial result).

Stock netx (``--netx-compatible`` files): ``run_stock_netx`` runs the file with lava-dl's own
``lava.lib.dl.netx.hdf5.Network`` (stock CUBA layers) on the same gapped stream, with netx's own
reset (``reset_interval`` = P) and nothing written into the network during the run. Those layers
have no event counters, so the counts of such a run come from the fast engine on the same samples
(``Tally.source`` says so).
"""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import contextlib
import importlib
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lava.magma.core.run_configs import Loihi2SimCfg, RunConfig
from lava.proc.io.sink import RingBuffer as Sink

from common.errors import InputError
from common.progress import progress_bar
from export.qnet import QLayer, QNetwork
from lava_procs import (LIF, CountingDense, CubaLIF, LavaCubaLIF, LavaRunError, Readout, SampleSource, SpikGRU,
                        lava_session, run_steps)
from sim.tally import Tally, layer_names

BACKENDS = ("sim", "loihi2")
# lava-loihi's packages: the Loihi 2 compiler and the NeuroCore ProcessModels (not on PyPI)
LOIHI_MODULES = ("lava.magma.core.model.nc.model", "lava.magma.compiler.subcompilers.nc.ncproc_compiler")


# ------------------------------------------------------------------------------------------ run configs
def loihi2_available() -> tuple[bool, str]:
    """(True, '') when Intel's lava-loihi is importable, else (False, why)."""
    for name in LOIHI_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or lava-loihi present but broken
            return False, f"{name} ({type(exc).__name__})"
    return True, ""


def run_config(backend: str = "sim") -> RunConfig:
    """Loihi2SimCfg (fixed_pt models on the CPU) or, with lava-loihi installed, Loihi2HwCfg.

    On hardware, stock netx layers map to NeuroCores; this project's own neurons have CPU
    (PyProcessModel) models only, which Loihi2HwCfg runs on the host."""
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "sim":
        return Loihi2SimCfg(select_tag="fixed_pt")
    ok, why = loihi2_available()
    if not ok:
        raise InputError(f"--backend loihi2 needs Intel's lava-loihi, which is not installed here (cannot import "
                         f"{why}); use --backend sim")
    from lava.magma.core.run_configs import Loihi2HwCfg
    return Loihi2HwCfg(select_tag="fixed_pt")


# ------------------------------------------------------------------------------------------ building
@dataclass
class LavaNetwork:
    """The processes of one streamed run."""

    net: QNetwork
    source: SampleSource
    neurons: list  # per layer: hidden layers, then the readout
    conns: list[dict[str, CountingDense]]  # per layer: {'ff', 'rec', 'ff_z', 'rec_z'} present in the QLayer
    sinks: list | None  # per hidden layer: a RingBuffer of its spikes (record=True)
    n_samples: int
    steps: int
    gap: int = 0

    @property
    def n_hidden(self) -> int:
        return len(self.net.hidden)

    @property
    def period(self) -> int:
        """Steps per sample in the stream: T + gap."""
        return self.steps + self.gap

    @property
    def total_steps(self) -> int:
        """N * P + L + 1: the readout's last gap step is the run's last step."""
        return self.n_samples * self.period + self.n_hidden + 1

    def offset(self, k: int) -> int:
        """Lava offset of layer k (0-based; the readout is k = L): k + 1."""
        return k + 1


def _neuron(layer: QLayer, k: int, reset: dict):
    n = (layer.n_out,)
    common = dict(shape=n, bias_mant=layer.bias_mant, bias_exp=layer.bias_exp, reset_offset=k + 1,
                  name=f"{'readout' if layer.kind == 'readout' else f'layer{k + 1}'}", **reset)
    if layer.kind == "readout":
        return Readout(v_decay=layer.v_decay, i_decay=layer.i_decay, vth_mant=layer.vth_mant, **common)
    bounds = dict(state_lo=layer.state_lo, state_hi=layer.state_hi)  # the state clamp (docs/fixed_point.md)
    spiking = dict(reset=layer.reset, vth_mant=layer.vth_mant)
    if layer.kind == "lif":
        return LIF(v_decay=layer.v_decay, **spiking, **bounds, **common)
    if layer.kind == "cuba-lif":
        return CubaLIF(i_decay=layer.i_decay, v_decay=layer.v_decay, **spiking, **bounds, **common)
    if layer.kind == "spikgru":
        return SpikGRU(i_decay=layer.i_decay, bias_z_mant=layer.bias_z_mant, bias_z_exp=layer.bias_z_exp,
                       **bounds, **common)
    if layer.kind == "lava-cuba":
        return LavaCubaLIF(du=layer.du, dv=int(np.ravel(layer.v_decay)[0]), **common)
    raise InputError(f"layer {k + 1}: no Lava process for neuron kind {layer.kind!r}")


def build_lava_network(net: QNetwork, counts: np.ndarray, record: bool = False, gap: int = 0) -> LavaNetwork:
    """Processes for streaming counts [N, T, C] through `net`, `gap` silent steps after each sample (the module
    docstring's wiring).

    record: also connect a spike recorder (RingBuffer sink) to every hidden layer."""
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise ValueError(f"counts must be [N, T, C], got shape {counts.shape}")
    n_samples, steps, channels = counts.shape
    if channels != net.layers[0].n_in:
        raise InputError(f"the samples have {channels} channels, the network takes {net.layers[0].n_in}")
    src = SampleSource(counts=counts, gap=gap, name="source")
    reset = dict(reset_interval=steps + gap, gap=gap, n_samples=n_samples)
    total = n_samples * (steps + gap) + len(net.hidden) + 1
    prev, prev_off, prev_bits = src.s_out, 0, SampleSource.num_message_bits
    neurons, conns, sinks = [], [], []
    names = layer_names(net)
    for k, layer in enumerate(net.layers):
        neuron = _neuron(layer, k, reset)
        layer_conns = {}
        for syn_name, syn in layer.connections().items():
            recurrent = syn_name.startswith("rec")
            c = CountingDense(weights=syn.weight, weight_exp=syn.exp, num_message_bits=0 if recurrent else prev_bits,
                              reset_offset=k + 1 if recurrent else prev_off, name=f"{names[k]}.{syn_name}", **reset)
            (neuron.s_out if recurrent else prev).connect(c.s_in)
            c.a_out.connect(neuron.a_gate if syn_name.endswith("_z") else neuron.a_in)
            layer_conns[syn_name] = c
        neurons.append(neuron)
        conns.append(layer_conns)
        if layer.kind != "readout":
            if record:
                sink = Sink(shape=(layer.n_out,), buffer=total)
                neuron.s_out.connect(sink.a_in)
                sinks.append(sink)
            prev, prev_off, prev_bits = neuron.s_out, k + 1, 0
    return LavaNetwork(net, src, neurons, conns, sinks if record else None, n_samples, steps, gap)


def read_tally(lnet: LavaNetwork) -> Tally:
    """The run's counters as engine.Tally (the same fields the fast engine fills)."""
    names = layer_names(lnet.net)
    c = Tally(samples=lnet.n_samples, steps=lnet.steps, source="lava")
    for k, layer in enumerate(lnet.net.layers):
        for syn_name, conn in lnet.conns[k].items():
            key = f"{names[k]}.{syn_name}"
            c.syn_events[key] = int(round(float(conn.syn_events.get()[0])))
            c.messages[key] = int(round(float(conn.messages.get()[0])))
            c.syn_ops_nz[key] = int(round(float(conn.syn_ops_nz.get()[0])))
        ops = np.rint(lnet.neurons[k].neuron_ops.get()).astype(np.int64)
        c.neuron_ops[names[k]] = (int(ops[0]), int(ops[1]))
        if layer.kind != "readout":
            c.spikes.append(int(np.rint(lnet.neurons[k].spikes.get()).sum()))
    # the input events and messages, as the first layer's feed-forward counter saw them (fan-out n_out each)
    c.input_events = c.syn_events[f"{names[0]}.ff"] // lnet.net.layers[0].n_out
    c.input_messages = c.messages[f"{names[0]}.ff"]
    return c


def read_spikes(lnet: LavaNetwork) -> list[np.ndarray]:
    """Recorded spikes per hidden layer, shifted by the layer's delay: [N, P, n] in model time (each sample's
    T steps, then its gap)."""
    if lnet.sinks is None:
        raise ValueError("the network was built without record=True")
    out = []
    N, P = lnet.n_samples, lnet.period
    for k, sink in enumerate(lnet.sinks):
        trace = np.rint(sink.data.get()).astype(np.int8).T  # [total_steps, n]
        d = lnet.offset(k)
        out.append(trace[d:d + N * P].reshape(N, P, -1))
    return out


# ------------------------------------------------------------------------------------------ running
@dataclass
class LavaResult:
    pred: np.ndarray
    sample_max: np.ndarray  # [N, K] readout maxima per sample
    tally: Tally
    spikes: list[np.ndarray] | None = None  # per hidden layer [N, T + gap, n], model time
    seconds: float = 0.0
    lava_steps: int = 0
    notes: list[str] = field(default_factory=list)


def _chunks(total: int, steps: int) -> list[int]:
    """Lava steps per run call: about one sample each (the progress bar moves), the remainder last. Between two
    calls the run pauses; nothing is written into the network there, only read (the bar, and Vars at the end)."""
    size = max(steps, 1)
    out = [size] * (total // size)
    if total % size:
        out.append(total % size)
    return out


def _run_chunked(process, total: int, period: int, n_samples: int, delay: int, cfg: RunConfig, bar) -> int:
    """Runs `total` Lava steps in _chunks, moving the bar by the samples whose last step (at `delay`) has run.
    Returns the number of run calls (the read-only pauses are one fewer)."""
    done, calls = 0, 0
    for chunk in _chunks(total, period):
        run_steps(process, chunk, run_cfg=cfg if done == 0 else None)
        done += chunk
        calls += 1
        bar.update(min(n_samples, max(0, (done - delay) // period)) - bar.n)
    return calls


def run_lava(net: QNetwork, counts: np.ndarray, record: bool = False, progress: bool = True,
             run_cfg: RunConfig | None = None, desc: str = "lava", gap: int = 0) -> LavaResult:
    """Streams counts [N, T, C] through the Lava network in one run (fixed_pt models), `gap` silent steps after
    each sample; sim.stream.run_stream(net, counts, gap=gap) is its exact account.

    Raises LavaRunError (runtime already shut down) if Lava fails at any point; nothing partial
    is returned."""
    lnet = build_lava_network(net, counts, record, gap)
    total = lnet.total_steps
    cfg = run_cfg or Loihi2SimCfg(select_tag="fixed_pt")
    bar = progress_bar(lnet.n_samples, desc, progress)
    t0 = time.perf_counter()
    try:
        with lava_session(lnet.source):
            _run_chunked(lnet.source, total, lnet.period, lnet.n_samples, lnet.n_hidden + 1 - gap, cfg, bar)
            sample_max = np.asarray(lnet.neurons[-1].sample_max.get(), dtype=np.int64)
            tally = read_tally(lnet)
            spikes = read_spikes(lnet) if record else None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return LavaResult(sample_max.argmax(axis=1), sample_max, tally, spikes, seconds, total)


def netx_network_class():
    """lava-dl's netx Network, imported quietly: lava-dl prints notes about optional packages and torch's CUDA when
    imported ("No CUDA runtime is found", "Prophesee Dataset Toolbox could not be found"); none concerns netx."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lava.lib.dl.netx.hdf5 import Network
    return Network


def run_stock_netx(path: str | Path, net: QNetwork, counts: np.ndarray, record: bool = False,
                   progress: bool = True, run_cfg: RunConfig | None = None, gap: int = 0) -> LavaResult:
    """A --netx-compatible file in stock lava-dl netx (``Network(path, input_message_bits=8,
    reset_interval=T + gap, reset_offset=1)``), samples streamed back to back, `gap` silent steps after each.

    netx resets a layer's u and v at its sample's first step; nothing else is done to the network during the run
    (no Var is written: the run pauses once per sample for the progress bar and only reads). netx leaves the
    synapse buffers alone, so a layer's first step gets, through its recurrent synapse, its own spikes of the
    step before: the previous sample's last gap step (the step after netx's warm-up, for the first sample).
    sim.stream.run_stream(net, counts, gap=gap) gives the same readout maxima whatever the gap; with a gap after
    which the network is silent (sim.stream.quiet_gap) every sample equals its answer alone.

    The readout's voltage is probed (Monitor) and its maximum over each sample's T steps gives the class. Stock
    layers have no counters: the tally stays empty here (the caller takes the fast engine's)."""
    Network = netx_network_class()
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.monitor.process import Monitor

    from export.netx_stock import NETX_INPUT_MESSAGE_BITS, NETX_RESET_OFFSET

    counts = np.clip(np.asarray(counts, dtype=np.int64), 0, 255)
    N, T, C = counts.shape
    P = T + gap
    L = len(net.hidden)
    total = N * P + L + 2  # netx: one step per layer, one from the source
    stream = np.zeros((N, P, C), dtype=np.int32)
    stream[:, :T] = counts
    data = np.zeros((C, total), dtype=np.int32)
    data[:, :N * P] = stream.reshape(N * P, C).T
    nx = Network(str(path), input_message_bits=NETX_INPUT_MESSAGE_BITS, reset_interval=P,
                 reset_offset=NETX_RESET_OFFSET)
    if nx.inp.shape != (C,):
        raise InputError(f"the samples have {C} channels, the network takes {nx.inp.shape[0]}")
    src = Source(data=data)
    src.s_out.connect(nx.inp)
    probes = [nx.layers[-1].neuron.v] + ([layer.out for layer in nx.layers[:-1]] if record else [])
    monitors = []
    for p in probes:
        m = Monitor()
        m.probe(p, total)
        monitors.append(m)
    bar = progress_bar(N, "stock netx", progress)
    t0 = time.perf_counter()
    try:
        with lava_session(nx):
            calls = _run_chunked(nx, total, P, N, L + 2 - gap, run_cfg or Loihi2SimCfg(select_tag="fixed_pt"), bar)
            traces = [np.asarray(next(iter(next(iter(m.get_data().values())).values()))) for m in monitors]
    finally:
        bar.close()
    # netx layer k (0-based) at Lava step m + 2 + k (Monitor row m + 1 + k) is model step m of the stream
    readout = traces[0][1 + L:1 + L + N * P].reshape(N, P, -1)[:, :T].astype(np.int64)
    sample_max = readout.max(axis=1)
    spikes = None
    if record:
        spikes = [tr[1 + k:1 + k + N * P].reshape(N, P, -1).astype(np.int8) for k, tr in enumerate(traces[1:])]
    res = LavaResult(sample_max.argmax(axis=1), sample_max, Tally(samples=N, steps=T, source="none"), spikes,
                     time.perf_counter() - t0, total)
    res.notes.append("stock netx layers have no event counters: the counts are the fast engine's on the same samples")
    res.notes.append(f"stock netx ran unattended: netx's own reset every {P} steps, no Var written into the network; "
                     f"{calls - 1} read-only pauses (progress bar)")
    return res


__all__ = ["BACKENDS", "LavaNetwork", "LavaResult", "LavaRunError", "build_lava_network", "loihi2_available",
           "read_tally", "read_spikes", "run_config", "run_lava", "run_stock_netx"]
