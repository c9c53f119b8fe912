#!/usr/bin/env python
"""NeuroBench (the real package) against this project's operation counts, on the same float models and samples.

For every model kind it runs NeuroBench's SynapticOperations and ActivationSparsity on a wrapper that exposes
the model's synapses as nn.Linear modules (the spiking models; their neurons as activation modules) or as
torch recurrent cells (GRU: nn.GRUCell, RNN: nn.RNNCell, with the model's own weights), and compares with:

* ours, NeuroBench's definitions (train.neurobench_defs, what `eval --json` prints): must agree exactly;
* the study's Table 2 (train.ops), after naming every definitional difference: Table 2 adds a bias AC per
  neuron per step and a reset AC per spike, counts a graded input of c spikes as c events (NeuroBench: one
  operation, a MAC because the input is not binary) and counts the ANNs densely (NeuroBench: Dense).

Needs NeuroBench: `make crosscheck` installs it (pyproject's [crosscheck] extra, torch kept on the 2.3 line) and
runs this. Its last line: neurobench_max_rel_diff=<x> sparse_over_dense=<y> (the largest relative difference
over all compared numbers, and the spiking models' effective operations over their dense count).

    .venv/bin/python benchmarks/ops_crosscheck.py [--data builtin] [--samples 32] [--epochs 2]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from audio.datasets import eval_set_for  # noqa: E402
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)
from train.checkpoint import checkpoint_origin, load_checkpoint  # noqa: E402
from train.evaluate import run_split  # noqa: E402
from train.models import SPIKING, model_from_checkpoint  # noqa: E402
from train.neurobench_defs import CONNECTIONS  # noqa: E402
from train.ops import model_ops  # noqa: E402
from train.trainer import config_from_options, train  # noqa: E402

MODELS = [("lif", 2), ("cuba-lif", 2), ("spikgru", 1), ("rnn", 1), ("gru", 2)]


class Spikes(nn.Module):
    """An activation module NeuroBench hooks: passes a layer's recorded outputs through."""

    def forward(self, s):
        return s


def _linear(w: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w.detach().clone()
    return lin


class SpikingWrapper(nn.Module):
    """The model's synapses as nn.Linear children, fed with the activity of the model's own run."""

    def __init__(self, model, kind: str):
        super().__init__()
        object.__setattr__(self, "model", model)  # not a child: NeuroBench must not walk into it
        self.kind = kind
        self.synapses = nn.ModuleList(nn.ModuleList(_linear(getattr(block, name)) for name, _ in CONNECTIONS[kind])
                                      for block in model.hidden_layers)
        self.neurons = nn.ModuleList(Spikes() for _ in model.hidden_layers)
        self.readout = _linear(model.readout.W)

    def forward(self, x):
        out, hidden = self.model(x, return_hidden=True)
        inputs = [x] + hidden
        for l, syns in enumerate(self.synapses):
            for lin, (_, recurrent) in zip(syns, CONNECTIONS[self.kind]):
                src = inputs[l + 1] if recurrent else inputs[l]
                if recurrent:
                    src = torch.cat([torch.zeros_like(src[:, :1]), src[:, :-1]], dim=1)
                lin(src)
            self.neurons[l](hidden[l])
        self.readout(hidden[-1])
        return out


class CellWrapper(nn.Module):
    """GRU / RNN run step by step through torch's cells, with the model's weights (NeuroBench supports cells)."""

    def __init__(self, model, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "gru":
            g = model.net.gru
            self.cells = nn.ModuleList()
            for l in range(g.num_layers):
                cell = nn.GRUCell(getattr(g, f"weight_ih_l{l}").shape[1], g.hidden_size)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).data = getattr(g, f"{name}_l{l}").detach().clone()
                self.cells.append(cell)
            self.readout = model.net.readout
        else:
            self.cells = nn.ModuleList()
            for block in model.hidden_layers:
                cell = nn.RNNCell(block.W.shape[1], block.W.shape[0], nonlinearity="relu")
                cell.weight_ih.data, cell.weight_hh.data = block.W.detach().clone(), block.U.detach().clone()
                cell.bias_ih.data, cell.bias_hh.data = block.b.detach().clone(), torch.zeros_like(block.b)
                self.cells.append(cell)
            self.ro_lin = _linear(model.readout.W)
            self.ro_beta, self.ro_b = model.readout.beta.detach(), model.readout.b.detach()
        self.act = nn.ModuleList(Spikes() for _ in self.cells)

    def forward(self, x):
        B, T, _ = x.shape
        h = [torch.zeros(B, c.hidden_size) for c in self.cells]
        outs, o = [], torch.zeros(B, (self.readout.out_features if self.kind == "gru" else self.ro_lin.out_features))
        for t in range(T):
            inp = x[:, t]
            for l, cell in enumerate(self.cells):
                h[l] = self.act[l](cell(inp, h[l]))
                inp = h[l]
            if self.kind == "gru":
                outs.append(self.readout(inp))
            else:
                o = self.ro_beta * o + self.ro_lin(inp) + self.ro_b
                outs.append(o)
        return torch.stack(outs, dim=1)


def neurobench_run(model, kind: str, x: torch.Tensor, y: torch.Tensor, batch: int) -> dict:
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    wrapper = SpikingWrapper(model, kind) if kind in SPIKING else CellWrapper(model, kind)
    nb_model = TorchModel(wrapper)
    nb_model.add_activation_module(Spikes)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=False)
    bench = Benchmark(nb_model, loader, [], [lambda out: out.max(dim=1).values.argmax(dim=1)],
                      [[], [SynapticOperations, ActivationSparsity]])
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        res = bench.run(quiet=True)
    return {"ops": res["SynapticOperations"], "sparsity": res["ActivationSparsity"]}


def table2_in_neurobench_terms(kind: str, sizes: list[int], n_classes: int, rates: list[float],
                               input_msg_rate: float, steps: int, last_step_spikes: list[float]) -> dict:
    """Table 2 per sample with its definitional differences to NeuroBench taken out (see the module docstring)."""
    rows = model_ops(kind, sizes, n_classes, rates)
    if kind == "gru":  # Table 2's GRU MACs are dense (3mn + 3n^2 + 3n), its ACs the biases
        return {"Dense": steps * sum(r.mac for r in rows)}
    if kind == "rnn":  # dense W, U and the readout's W; Table 2's readout adds n leak MACs, its ACs are biases
        dense = sum(r.m * r.n + r.n * r.n for r in rows[:-1]) + rows[-1].m * rows[-1].n
        return {"Dense": steps * dense}
    gates = 2 if kind == "spikgru" else 1
    mac = ac = 0.0
    for l, r in enumerate(rows[:-1]):
        a_in = input_msg_rate if l == 0 else rates[l]  # graded input: one operation per message, not per event
        ff = gates * r.m * r.n * a_in
        # Table 2's (n^2 + n) a_out less the reset's n a_out, and less the spikes of a sample's last step, which
        # reach no recurrent synapse within the sample (NeuroBench sees the recurrent input one step late)
        rec = gates * r.n * (r.n * rates[l + 1] - last_step_spikes[l] / steps)
        mac, ac = (mac + ff, ac + rec) if l == 0 else (mac, ac + ff + rec)  # the graded input makes MACs
    ro = rows[-1]
    ac += ro.m * ro.n * ro.a_in  # readout: mn a_in, less its bias n
    return {"Effective_MACs": steps * mac, "Effective_ACs": steps * ac}


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--checkpoints", nargs="*", help="use these checkpoints instead of training small models")
    args = ap.parse_args()
    torch.set_num_threads(1)
    announce_load()
    tmp = Path(tempfile.mkdtemp(prefix="crosscheck-"))
    ckpts = args.checkpoints or []
    if not ckpts:
        for kind, layers in MODELS:
            run = tmp / f"{kind}-{layers}"
            train(config_from_options(model=kind, layers=layers, hidden=args.hidden, data=args.data, epochs=args.epochs,
                                      bin_hz=50), run, progress=False)
            ckpts.append(str(run / "best.pt"))
    worst, eff, dense = 0.0, 0.0, 0.0
    print(f"{'model':<14}{'metric':<28}{'NeuroBench':>16}{'ours (NB defs)':>16}{'Table 2, adj.':>16}")
    for path in ckpts:
        ckpt = load_checkpoint(path)
        kind, model = ckpt["model"]["kind"], model_from_checkpoint(ckpt)
        split = eval_set_for(checkpoint_origin(ckpt)).samples
        index = np.arange(min(args.samples, len(split)))
        x, y = split.dense(index), torch.from_numpy(np.asarray(split.labels)[index])
        nb = neurobench_run(model, kind, x, y, args.batch)
        ours = run_split(model, split, batch=args.batch, index=index, kind=kind)
        mine = ours["neurobench"]
        msg_rate = float((x != 0).sum()) / (x.shape[0] * x.shape[1] * x.shape[2])
        with torch.no_grad():
            last = [float(h[:, -1].sum()) / x.shape[0] for h in model(x, return_hidden=True)[1]]
        sizes = [x.shape[2]] + [ckpt["model"]["hidden"]] * ckpt["model"]["layers"]
        t2 = table2_in_neurobench_terms(kind, sizes, ckpt["model"]["n_classes"], ours["rates"], msg_rate, x.shape[1],
                                        last)
        name = f"{kind} {ckpt['model']['layers']}x{ckpt['model']['hidden']}"
        for key in ("Effective_MACs", "Effective_ACs", "Dense"):
            ours_v = mine["synaptic_operations"][key]
            if ours_v is None and key not in t2:
                continue
            nb_v = float(nb["ops"][key])
            cmp = [v for v in (ours_v, t2.get(key)) if v is not None]
            worst = max([worst] + [rel(v, nb_v) for v in cmp])
            print(f"{name:<14}{'synaptic_operations ' + key:<28}{nb_v:>16.1f}"
                  f"{'-' if ours_v is None else format(ours_v, '.1f'):>16}"
                  f"{'-' if key not in t2 else format(t2[key], '.1f'):>16}")
        if mine["activation_sparsity"] is not None:
            worst = max(worst, rel(mine["activation_sparsity"], nb["sparsity"]))
            print(f"{name:<14}{'activation_sparsity':<28}{nb['sparsity']:>16.6f}{mine['activation_sparsity']:>16.6f}")
        if kind in SPIKING:
            ops = mine["synaptic_operations"]
            eff += ops["Effective_MACs"] + ops["Effective_ACs"]
            dense += ops["Dense"]
    print("definitional differences taken out of Table 2 before comparing: its bias AC (n per layer per step), its "
          "reset AC (n per spike), the recurrent ops of a sample's last-step spikes (they reach the next step, "
          "outside the sample), its counting of a graded input of c spikes as c events (NeuroBench: one MAC per "
          "nonzero input), its readout bias; the ANNs compare dense (NeuroBench's Dense; Table 2's MACs without the "
          "RNN readout's leak). Recurrent weights and the readout are counted by both.")
    print(f"neurobench_max_rel_diff={worst:.3g} sparse_over_dense={eff / max(dense, 1):.4g}")


if __name__ == "__main__":
    main()
