"""Samples back to back, as Loihi 2 runs them unattended: each sample followed by `gap` silent steps, every
layer's u and v zeroed at its sample's first step (netx's ``reset_interval``/``reset_offset``, our neurons'
reset), nothing written from the host. The fast engine's exact account of such a stream, the gap that makes
its samples independent, and the check that they are.

Why a gap, and how long. Time is model time: layer k's step t of a sample uses layer k - 1's step t (netx and
our Lava wiring stagger the layers' resets by one step per layer, exactly the one-step delay of each
feed-forward synapse), so nothing that crosses a feed-forward synapse ever mixes two samples, whatever the layer
count. A synapse is never reset (neither Lava's Dense nor a Loihi 2 synapse has a reset), and it delivers one
step after it receives: on a layer's reset step its *recurrent* synapse delivers the layer's own spikes of the
step before, i.e. of the previous period's last step. The reset zeroes u and v before that input is added, so
spikes of any earlier step are wiped, and those of the last step are the only way one sample reaches the next
(the readout has no recurrence, and its maximum is taken over the sample's T steps). Hence, exactly:

    a sample runs as it runs alone if and only if the recurrent input on its first step is zero; it is when no
    hidden neuron with a recurrent weight (``senders``) spikes on the last step of the period before it (step
    T + gap - 1 of the previous sample, counted from that sample's first), or, for the first sample, on the
    last step of the pipeline's warm-up (the layers running on their biases before their first reset,
    ``warmup_spikes``).

With no gap that is the sample's own last step, where a trained network usually spikes. Input stops with the
sample, but a layer goes on spiking from its current (decaying over ~10 steps), its recurrence or its bias, so
the gap it needs depends on how fast the trained network falls silent: ``quiet_gap`` measures it on a
calibration split (never the split being scored): the smallest gap after which every calibration sample stays
silent, ``max(0, last sender spike step + 2 - T)``; one step less and the worst sample's last spike lands on
its successor's reset step. A network that does not fall silent (a neuron driven by its bias or its own
recurrence) has no such gap: ``quiet_gap`` says so.

``run_stream`` runs the stream itself: every sample alone (batched, from the zero state, T + gap steps), then,
in stream order, each sample that the step before it reached (the previous sample's spikes on its last gap
step, or the warm-up's) again, with those spikes through the recurrent synapses on its first step. That is what
Lava does (tests/test_sim.py: our processes and stock netx, spike for spike), for any gap, and it reports every
sample whose answer differs from its answer alone: a stream is never silently wrong.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from export.qnet import QNetwork
from sim.engine import batch_size, input_batches, map_batches
from sim.integer_net import Inputs, run_batch, run_hidden
from sim.tally import Tally, tally_batch


def warmup_spikes(net: QNetwork) -> list[np.ndarray]:
    """Each hidden layer's spikes [n] on the step before its first reset: the pipeline's warm-up, silent input.

    Layer k (0-based) runs k + 1 steps before its first sample's first step (netx: time steps 1 .. k + 1, our
    processes: tau 0 .. k), from the zero state on its bias and the layer below's warm-up spikes."""
    out = []
    x = np.zeros((1, 1, net.layers[0].n_in), dtype=np.int64)
    for layer in net.hidden:
        S = run_hidden(layer, Inputs.from_dense(x)).S[:, 0]  # [k + 1, n]
        out.append(S[-1].copy())
        x = np.concatenate([np.zeros((1, layer.n_out), dtype=np.int64), S.astype(np.int64)])[None]
    return out


def senders(net: QNetwork) -> list[np.ndarray]:
    """Per hidden layer, the neurons [n] bool with a nonzero recurrent weight: the only ones whose spikes can cross
    into the next sample (through the recurrent synapses, rec and SpikGRU's rec_z)."""
    out = []
    for layer in net.hidden:
        mask = np.zeros(layer.n_out, dtype=bool)
        for name, syn in layer.connections().items():
            if name.startswith("rec"):
                mask |= np.any(syn.weight != 0, axis=0)
        out.append(mask)
    return out


def last_spike_steps(spikes: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Per sample, the last step (from its first) on which a sender (`senders`) spikes; -1 for none.
    spikes [B, P, n] per hidden layer."""
    active = np.zeros(spikes[0].shape[:2], dtype=bool)
    for s, mask in zip(spikes, masks):
        active |= s[:, :, mask].any(axis=2)
    P = active.shape[1]
    return np.where(active.any(axis=1), P - 1 - np.argmax(active[:, ::-1], axis=1), -1)


@dataclass
class GapChoice:
    """quiet_gap's answer: the gap (None: the network does not fall silent), the silent steps looked at, each
    calibration sample's last spike step (from its first step; -1: none)."""

    gap: int | None
    horizon: int
    steps: int
    last: np.ndarray

    @property
    def tails(self) -> np.ndarray:
        """Per calibration sample, the steps it went on spiking after its input ended."""
        return np.maximum(0, self.last + 1 - self.steps)

    def describe(self, where: str) -> str:
        """One line on the choice, for notes."""
        n, tail = len(self.last), int(self.tails.max())
        if self.gap is not None:
            return (f"gap {self.gap}: the smallest after which every one of {n} {where} samples is silent (the last "
                    f"spike {tail} steps after the input ends; silent to the end of {self.horizon} steps looked at)")
        late = int(np.sum(self.tails > self.horizon // 2))
        return (f"the network does not fall silent: {late} of {n} {where} samples still spike more than "
                f"{self.horizon // 2} steps after their input ends (a self-sustained or bias-driven activity), "
                "so no gap makes back-to-back samples independent; a network trained with --quiet-tail 25 "
                "--quiet-reg 5 falls silent (docs/loihi2.md)")


def quiet_gap(net: QNetwork, samples, index: np.ndarray | None = None, horizon: int | None = None,
              threads: int = 1, progress: bool = False) -> GapChoice:
    """The smallest gap after which every sample of `samples` (a binned split or counts [N, T, C]; `index` of
    them) has no hidden spike up to `horizon` silent steps after its end (default T): max(0, last + 2 - T).

    A gap over horizon // 2 means the network still spikes late into the silence (a neuron driven by its
    bias or its own recurrence): no gap makes the samples independent, and the answer's gap is None."""
    T = samples.shape[1] if isinstance(samples, np.ndarray) else samples.spec.n_steps
    index = np.arange(len(samples)) if index is None else np.asarray(index, dtype=np.int64)
    H = T if horizon is None else int(horizon)
    batches = input_batches(samples, index, batch_size(len(index), 128, threads))
    masks = senders(net)
    parts = map_batches(lambda x: last_spike_steps(run_batch(net, x.padded(H))["spikes"], masks), batches,
                        len(index), progress, "gap calibration", threads)
    last = np.concatenate(parts)
    gap = int(max(0, last.max() + 2 - T))
    return GapChoice(gap if gap <= H // 2 else None, H, T, last)


@dataclass
class StreamResult:
    """The fast engine's account of a gapped stream (spikes and readout [N, T + gap, ...] when kept)."""

    gap: int
    sample_max: np.ndarray  # [N, K] readout maxima over each sample's T steps, in the stream
    alone_max: np.ndarray  # [N, K] the same, each sample alone (its answer)
    carried: np.ndarray  # samples whose first step got spikes from the step before (previous sample, warm-up)
    tally: Tally  # the samples' T steps, as the Lava counters count them
    gap_spikes: int  # hidden spikes during the gaps (no sample running)
    spikes: list[np.ndarray] | None = None
    readout: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def pred(self) -> np.ndarray:
        return self.sample_max.argmax(axis=1)

    @property
    def differs(self) -> np.ndarray:
        """Samples whose readout maxima in the stream differ from their answer alone."""
        return np.flatnonzero((self.sample_max != self.alone_max).any(axis=1))

    @property
    def pred_differs(self) -> np.ndarray:
        """Samples whose class in the stream differs from their class alone."""
        return np.flatnonzero(self.pred != self.alone_max.argmax(axis=1))


def run_stream(net: QNetwork, samples, gap: int, index: np.ndarray | None = None, threads: int = 1,
               keep_traces: bool = False, progress: bool = False, batch: int = 128) -> StreamResult:
    """`samples` (a binned split or counts [N, T, C]; `index` of them, in this order) back to back, `gap` silent
    steps after each: what Lava (our processes, stock netx) computes on that stream (module docstring)."""
    t0 = time.perf_counter()
    if gap < 0:
        raise InputError(f"--gap must be at least 0, got {gap}")
    index = np.arange(len(samples)) if index is None else np.asarray(index, dtype=np.int64)
    N = len(index)
    batches = input_batches(samples, index, batch_size(N, batch, threads))
    outs = map_batches(lambda x: run_batch(net, x.padded(gap)), batches, N, progress, "fast engine", threads)
    spikes = [np.concatenate([o["spikes"][k] for o in outs]) for k in range(len(net.hidden))]
    readout = np.concatenate([o["readout"] for o in outs])
    T = readout.shape[1] - gap
    alone = readout[:, :T].max(axis=1)
    masks = senders(net)
    carry, carried = warmup_spikes(net), []
    for j in range(N):
        if any((c[m]).any() for c, m in zip(carry, masks)):
            x = next(input_batches(samples, index[j:j + 1], 1)).padded(gap)
            out = run_batch(net, x, carry=[c[None] for c in carry])
            for k, s in enumerate(out["spikes"]):
                spikes[k][j] = s[0]
            readout[j] = out["readout"][0]
            carried.append(j)
        carry = [s[j, -1] for s in spikes]
    inputs = next(input_batches(samples, index, N))
    tally = tally_batch(net, inputs, [s[:, :T] for s in spikes])
    res = StreamResult(gap, readout[:, :T].max(axis=1), alone, np.asarray(carried, dtype=np.int64), tally,
                       int(sum(int(s[:, T:].sum()) for s in spikes)))
    if keep_traces:
        res.spikes, res.readout = spikes, readout
    res.seconds = time.perf_counter() - t0
    return res


def gap_cost(net: QNetwork, steps: int, gap: int) -> dict:
    """What the gap costs per sample: steps (T + gap), latency in ms at the network's time step (its bin width,
    None when the file does not say), and the neuron updates of the gap steps (every neuron updates every step)."""
    neurons = sum(l.n_out for l in net.layers)
    bin_hz = (net.meta or {}).get("bin_hz")
    step_ms = 1000.0 / float(bin_hz) if bin_hz else None
    return {"steps": steps, "gap": gap, "period": steps + gap, "step_ms": step_ms,
            "latency_ms": None if step_ms is None else (steps + gap) * step_ms,
            "pipeline_steps": len(net.hidden) + 1, "neurons": neurons,
            "extra_neuron_updates": gap * neurons, "extra_fraction": gap / steps}
