"""Training-step speed of 2x128 spiking networks: fused kernels vs the plain loop vs slayer.

One training step = forward, max-over-time cross-entropy, backward, Adam step,
decay clamp. Networks: 700 inputs -> two recurrent layers of 128 -> leaky readout
to 20 classes, 250 steps, Bernoulli input at 5 % density. Compared:
  ours  - train.layers with the fused kernels (fused=True)
  loop  - the plain loop a user would write: the input projection W x + b of all steps hoisted
          into one matmul, then a per-timestep autograd loop of the recurrence and the neuron
          (HoistedLoop; for Cuba-LIF and SpikGRU alike)
  slayer- lava-dl slayer block.cuba.Recurrent x2 + block.cuba.Affine readout
          (Cuba-LIF only; slayer works on [N, C, T]).
Also checks that ours and the step-function loop (fused=False, the tests' ground truth) give the same
gradients on the same batch (in float64, where a rounding difference cannot flip a spike).
The last line is `ratio_vs_loop=<x> ratio_vs_slayer=<y>` (Cuba-LIF samples/s ratios).

One intra-op thread by default (--threads to change; run it with 1 and with 2): on a machine
shared with other work, a second thread makes each of the thousands of small per-step ops wait
for a busy core, and the figures of all three swing widely. It prints the load first.

    .venv/bin/python benchmarks/train_speed.py [--quick] [--threads N]
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)
from train.layers import CubaLIFRecurrent, LeakyReadout, SpikGRURecurrent  # noqa: E402
from train.neurons import VTH, clip, spike  # noqa: E402

N_IN, HIDDEN, CLASSES, STEPS, DENSITY = 700, 128, 20, 250, 0.05
GRAD_TOLERANCE = 1e-9  # relative, in float64
RECURRENT = {'cuba-lif': CubaLIFRecurrent, 'spikgru': SpikGRURecurrent}


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


def max_over_time_loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(o.amax(1), y)


def train_step(net: nn.Module, opt, x, y) -> None:
    opt.zero_grad()
    max_over_time_loss(net(x), y).backward()
    opt.step()
    for m in net.modules():  # slayer blocks keep their decays in range themselves
        if hasattr(m, 'clamp_'):
            m.clamp_()


def samples_per_s(nets: dict, x, y, iters: int) -> dict:
    """Median samples/s of each net; iterations interleave across nets so that load
    from other processes on a shared machine hits every net alike."""
    opts = {name: torch.optim.Adam(net.parameters(), lr=1e-3) for name, net in nets.items()}
    times = {name: [] for name in nets}
    for it in range(iters + 1):  # iteration 0 warms up (TorchScript profiling, allocator)
        for name, net in nets.items():
            start = time.perf_counter()
            train_step(net, opts[name], x, y)
            if it:
                times[name].append(time.perf_counter() - start)
    return {name: len(x) / statistics.median(t) for name, t in times.items()}


def grad_difference(kind: str, x, y) -> float:
    """Largest |grad ours - grad loop| / max |grad| over all parameters, float64."""
    fused = ours(kind, True).double()
    loop = copy.deepcopy(fused)
    for m in loop.modules():
        if hasattr(m, 'fused'):
            m.fused = False
    worst = 0.0
    for net in (fused, loop):
        max_over_time_loss(net(x.double()), y).backward()
    for a, b in zip(fused.parameters(), loop.parameters()):
        worst = max(worst, ((a.grad - b.grad).abs().max() / a.grad.abs().max()).item())
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='batch 16, two timed iterations')
    ap.add_argument('--batch', type=int, default=None)
    ap.add_argument('--iters', type=int, default=None)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    batch = args.batch or (16 if args.quick else 128)
    iters = args.iters or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    announce_load(f"{args.threads} intra-op thread(s)")
    torch.manual_seed(0)
    x = (torch.rand(batch, STEPS, N_IN) < DENSITY).float()
    y = torch.randint(CLASSES, (batch,))
    print(f'batch {batch}, {STEPS} steps, {N_IN}-{HIDDEN}-{HIDDEN}-{CLASSES}, '
          f'{iters} timed iterations, {args.threads} threads')

    speed = {}
    for kind in RECURRENT:
        nets = {'ours': ours(kind, True), 'loop': HoistedLoop(kind)}
        if kind == 'cuba-lif':
            nets['slayer'] = SlayerCuba()
        for name, rate in samples_per_s(nets, x, y, iters).items():
            speed[kind, name] = rate
            print(f'{kind:9s} {name:7s} {rate:8.1f} samples/s', flush=True)
        diff = grad_difference(kind, x, y)
        verdict = 'ok' if diff < GRAD_TOLERANCE else 'MISMATCH'
        print(f'{kind:9s} grad ours vs loop (float64, same batch): max relative difference '
              f'{diff:.2e} ({verdict}, tolerance {GRAD_TOLERANCE:g})', flush=True)
    ours_cuba = speed['cuba-lif', 'ours']
    print(f'ratio_vs_loop={ours_cuba / speed["cuba-lif", "loop"]:.2f} '
          f'ratio_vs_slayer={ours_cuba / speed["cuba-lif", "slayer"]:.2f}')


if __name__ == '__main__':
    main()
