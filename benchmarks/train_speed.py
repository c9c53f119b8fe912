"""Training-step speed of 2x128 networks: fused kernels (dense and event-driven input projection) vs the plain loop
vs slayer, the GRU's three forms, and what that makes the nested held-out study cost on this machine.

One training step = forward, max-over-time cross-entropy, backward, Adam step,
decay clamp. Networks: 700 inputs -> two recurrent layers of 128 -> leaky readout
to 20 classes, 250 steps, Bernoulli input at --density (default 2 %, the share of nonzero
inputs of the real data). Compared:
  dense  - train.layers with the fused kernels (fused=True), the input projection one matmul
  sparse - the same, fed an audio.binning.EventBatch: the event-driven input projection (train.projection)
  loop   - the plain loop a user would write: the input projection W x + b of all steps hoisted
           into one matmul, then a per-timestep autograd loop of the recurrence and the neuron
           (HoistedLoop; for Cuba-LIF and SpikGRU alike)
  slayer - lava-dl slayer block.cuba.Recurrent x2 + block.cuba.Affine readout
           (Cuba-LIF only; slayer works on [N, C, T]).
  GRU    - a dense batch through torch's nn.GRU (`dense`, what training runs), through the fused GRU kernel
           (`fused`, for the record), and events through the fused kernel (`sparse`).
Also checks that both of our paths and the step-function loop (fused=False, the tests' ground truth) give the same
gradients on the same batch (in float64, where a rounding difference cannot flip a spike), and times the first
layer's projection alone (forward + weight gradient): the dense matmul, embedding_bag's own autograd, ours.

The study line estimates the wall time of the nested held-out study (train/nested.py): per kind, candidates x
C(5, 2) speaker pairs x 2 seeds inner runs on --inner-samples each and 5 outer folds x 2 seeds on --outer-samples
each, --epochs each, --jobs one-thread runs at a time, at each kind's measured samples/s of its best path (training
steps only).
The last line is `ratio_vs_loop=<x> ratio_vs_slayer=<y>` (Cuba-LIF samples/s ratios, ours on its best path).

One intra-op thread by default (--threads to change; run it with 1 and with 2): on a machine
shared with other work, a second thread makes each of the thousands of small per-step ops wait
for a busy core, and the figures of all three swing widely. It prints the load first.

    .venv/bin/python benchmarks/train_speed.py [--quick] [--threads N] [--density D]
"""
import argparse
import copy
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)
from audio.binning import BinSpec, EventBatch  # noqa: E402
from train.layers import CubaLIFRecurrent, GRUStack, LeakyReadout, SpikGRURecurrent  # noqa: E402
from train.neurons import VTH, clip, spike  # noqa: E402
from train.projection import project  # noqa: E402

N_IN, HIDDEN, CLASSES, STEPS = 700, 128, 20, 250
GRAD_TOLERANCE = 1e-9  # relative, in float64
RECURRENT = {'cuba-lif': CubaLIFRecurrent, 'spikgru': SpikGRURecurrent}
STUDY_KINDS = ('gru', 'cuba-lif', 'spikgru')
SPEAKERS, OUTER_FOLDS, SEEDS = 5, 5, 2


def ours(kind: str, fused: bool) -> nn.Sequential:
    rec = RECURRENT[kind]
    return nn.Sequential(rec(N_IN, HIDDEN, fused=fused), rec(HIDDEN, HIDDEN, fused=fused),
                         LeakyReadout(HIDDEN, CLASSES, fused=fused))


class HoistedLoop(nn.Module):
    """The fair plain loop: the same blocks' parameters, W x + b for all steps in one matmul, then one autograd
    step at a time (i, v, the gate, the spike), and the readout's leak likewise."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.blocks = ours(kind, fused=False)

    def forward(self, x):
        for block in self.blocks[:-1]:
            a = F.linear(x, block.W, block.b)
            az = F.linear(x, block.Wz, block.bz) if self.kind == 'spikgru' else None
            s = i = v = a.new_zeros(a.shape[0], a.shape[2])
            out = []
            for t in range(a.shape[1]):
                i = clip(block.alpha * i + a[:, t] + F.linear(s, block.U), block.opts)
                decay = torch.sigmoid(az[:, t] + F.linear(s, block.Uz)) if az is not None else block.beta
                v = clip(decay * v + (1 - decay) * i - VTH * s, block.opts)
                s = spike(v, block.opts)
                out.append(s)
            x = torch.stack(out, 1)
        readout = self.blocks[-1]
        a = F.linear(x, readout.W, readout.b)
        o, out = a.new_zeros(a.shape[0], a.shape[2]), []
        for t in range(a.shape[1]):
            o = readout.beta * o + a[:, t]
            out.append(o)
        return torch.stack(out, 1)


class SlayerCuba(nn.Module):
    """The same Cuba-LIF topology from lava-dl slayer blocks (per-neuron trainable decays,
    slayer's own 8-bit weight quantization hook as shipped), batch-first in and out."""

    def __init__(self):
        super().__init__()
        from lava.lib.dl.slayer import block
        neuron = dict(threshold=1.0, current_decay=0.1, voltage_decay=0.1,
                      shared_param=False, requires_grad=True)
        self.blocks = nn.Sequential(block.cuba.Recurrent(neuron, N_IN, HIDDEN),
                                    block.cuba.Recurrent(neuron, HIDDEN, HIDDEN),
                                    block.cuba.Affine(neuron, HIDDEN, CLASSES))

    def forward(self, x):
        return self.blocks(x.transpose(1, 2).contiguous()).transpose(1, 2)


class FusedGRU(nn.Module):
    """The GRU baseline with the fused GRU kernel on a dense batch (GRUStack runs nn.GRU there)."""

    def __init__(self, net: GRUStack):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.readout(self.net.fused_recurrence(x))


def gru_net() -> GRUStack:
    return GRUStack(N_IN, CLASSES, hidden=HIDDEN, num_layers=2)


def as_events(x: torch.Tensor) -> EventBatch:
    """The 0/1 batch x as the loader's EventBatch."""
    b, t, c = x.nonzero(as_tuple=True)
    return EventBatch.from_events((t * N_IN + c).numpy(), b.numpy(), len(x), BinSpec(STEPS, 1.0, N_IN))


def max_over_time_loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(o.amax(1), y)


def train_step(net: nn.Module, opt, x, y) -> None:
    opt.zero_grad()
    max_over_time_loss(net(x), y).backward()
    opt.step()
    for m in net.modules():  # slayer blocks keep their decays in range themselves
        if hasattr(m, 'clamp_'):
            m.clamp_()


def samples_per_s(runs: dict, y, iters: int) -> dict:
    """Median samples/s of each (net, input); iterations interleave across nets so that load
    from other processes on a shared machine hits every net alike."""
    opts = {name: torch.optim.Adam(net.parameters(), lr=1e-3) for name, (net, _) in runs.items()}
    times = {name: [] for name in runs}
    for it in range(iters + 1):  # iteration 0 warms up (TorchScript profiling, allocator)
        for name, (net, x) in runs.items():
            start = time.perf_counter()
            train_step(net, opts[name], x, y)
            if it:
                times[name].append(time.perf_counter() - start)
    return {name: len(y) / statistics.median(t) for name, t in times.items()}


def grad_differences(reference: nn.Module, candidates: dict, x, y) -> dict:
    """Per candidate (name -> (net, input)): largest |grad - grad of reference on x| / max |grad|, float64."""
    max_over_time_loss(reference(x.double()), y).backward()
    worst = {}
    for name, (net, inp) in candidates.items():
        max_over_time_loss(net(inp), y).backward()
        worst[name] = max(((a.grad - b.grad).abs().max() / b.grad.abs().max()).item()
                          for a, b in zip(net.parameters(), reference.parameters()))
    return worst


def check_grads(kind: str, x, events: EventBatch, y) -> None:
    """Both of our paths against the step-function loop (the GRU: against nn.GRU), float64, same batch."""
    if kind == 'gru':
        reference = gru_net().double()
        fused = FusedGRU(copy.deepcopy(reference))
    else:
        fused = ours(kind, True).double()
        reference = copy.deepcopy(fused)
        for m in reference.modules():
            if hasattr(m, 'fused'):
                m.fused = False
    paths = {'fused' if kind == 'gru' else 'dense': (copy.deepcopy(fused), x.double()),
             'sparse': (copy.deepcopy(fused), events)}
    for name, diff in grad_differences(reference, paths, x, y).items():
        verdict = 'ok' if diff < GRAD_TOLERANCE else 'MISMATCH'
        print(f'{kind:9s} grad {name} vs {"nn.GRU" if kind == "gru" else "loop"} (float64, same batch): max relative '
              f'difference {diff:.2e} ({verdict}, tolerance {GRAD_TOLERANCE:g})', flush=True)


def projection_ms(x, events: EventBatch, iters: int) -> dict:
    """The first layer's projection alone, forward + weight gradient: median ms of each form."""
    W = torch.empty(HIDDEN, N_IN).uniform_(-0.04, 0.04).requires_grad_()
    b = torch.zeros(HIDDEN, requires_grad=True)
    grad = torch.randn(*x.shape[:2], HIDDEN)

    def own_autograd():
        a = F.embedding_bag(events.channel, W.t(), events.offsets, mode='sum', per_sample_weights=events.count)
        return (a + b).view_as(grad)

    forms = {'dense matmul': lambda: F.linear(x, W, b), "embedding_bag's autograd": own_autograd,
             'ours (events)': lambda: project(events, W, b)}
    times = {name: [] for name in forms}
    for it in range(iters + 1):
        for name, form in forms.items():
            start = time.perf_counter()
            form().backward(grad)
            if it:
                times[name].append(1e3 * (time.perf_counter() - start))
            W.grad = b.grad = None
    return {name: statistics.median(t) for name, t in times.items()}


def study_estimate(speed: dict, args) -> str:
    """The nested held-out study's training time at the measured samples/s (see the module docstring)."""
    inner_runs = args.candidates * math.comb(SPEAKERS, 2) * SEEDS
    outer_runs = OUTER_FOLDS * SEEDS
    samples = args.epochs * (inner_runs * args.inner_samples + outer_runs * args.outer_samples)
    hours = {kind: samples / speed[kind] / 3600 for kind in args.study_kinds}
    wall = sum(hours.values()) / args.jobs
    each = ', '.join(f'{kind} {h:.1f} h at {speed[kind]:.0f} samples/s' for kind, h in hours.items())
    return (f'study: {len(hours)} kinds x ({args.candidates} candidates x {math.comb(SPEAKERS, 2)} pairs x {SEEDS} '
            f'seeds on {args.inner_samples} samples + {OUTER_FOLDS} folds x {SEEDS} seeds on {args.outer_samples}), '
            f'{args.epochs} epochs: {len(hours) * (inner_runs + outer_runs)} trainings, {each}; '
            f'{args.jobs} one-thread jobs at a time: about {wall:.1f} h of wall time (training steps only)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='batch 16, two timed iterations')
    ap.add_argument('--batch', type=int, default=None)
    ap.add_argument('--iters', type=int, default=None)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--density', type=float, default=0.02, help='share of nonzero inputs')
    ap.add_argument('--candidates', type=int, default=6, help='study: recipe candidates per kind')
    ap.add_argument('--study-kinds', default=','.join(STUDY_KINDS), help='study: model kinds, comma-separated')
    ap.add_argument('--inner-samples', type=int, default=1350, help='study: training samples of an inner run')
    ap.add_argument('--outer-samples', type=int, default=1800, help='study: training samples of an outer run')
    ap.add_argument('--epochs', type=int, default=20, help='study: epochs per run')
    ap.add_argument('--jobs', type=int, default=2, help='study: one-thread runs at a time')
    args = ap.parse_args()
    args.study_kinds = [k.strip() for k in args.study_kinds.split(',') if k.strip()]
    unknown = set(args.study_kinds) - set(STUDY_KINDS)
    if unknown:
        ap.error(f"--study-kinds: {', '.join(sorted(unknown))} not measured here "
                 f"(choose from {', '.join(STUDY_KINDS)})")
    batch = args.batch or (16 if args.quick else 128)
    iters = args.iters or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    announce_load(f"{args.threads} intra-op thread(s)")
    torch.manual_seed(0)
    x = (torch.rand(batch, STEPS, N_IN) < args.density).float()
    events = as_events(x)
    y = torch.randint(CLASSES, (batch,))
    print(f'batch {batch}, {STEPS} steps, {N_IN}-{HIDDEN}-{HIDDEN}-{CLASSES}, {100 * args.density:g} % of inputs '
          f'nonzero, {iters} timed iterations, {args.threads} threads')

    for name, ms in projection_ms(x, events, iters).items():
        print(f'first-layer projection, forward + weight gradient: {name:25s} {ms:7.1f} ms', flush=True)
    speed, best = {}, {}
    for kind in (*RECURRENT, 'gru'):
        if kind == 'gru':
            net = gru_net()
            runs = {'dense': (net, x), 'fused': (FusedGRU(copy.deepcopy(net)), x),
                    'sparse': (copy.deepcopy(net), events)}
        else:
            net = ours(kind, True)
            runs = {'dense': (net, x), 'sparse': (copy.deepcopy(net), events), 'loop': (HoistedLoop(kind), x)}
            if kind == 'cuba-lif':
                runs['slayer'] = (SlayerCuba(), x)
        for name, rate in samples_per_s(runs, y, iters).items():
            speed[kind, name] = rate
            print(f'{kind:9s} {name:7s} {rate:8.1f} samples/s', flush=True)
        best[kind] = max(speed[kind, 'dense'], speed[kind, 'sparse'])
        check_grads(kind, x, events, y)
    print(study_estimate(best, args))
    ours_cuba = best['cuba-lif']
    print(f'ratio_vs_loop={ours_cuba / speed["cuba-lif", "loop"]:.2f} '
          f'ratio_vs_slayer={ours_cuba / speed["cuba-lif", "slayer"]:.2f}')


if __name__ == '__main__':
    main()
