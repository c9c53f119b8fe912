#!/usr/bin/env python
"""Operation counts checked where two counts can disagree.

1. Exported networks in Lava (no NeuroBench needed). Each spiking model is exported to Loihi 2 fixed point
   (the file's integer weights, exact zeros included) and run in Lava with its spikes recorded. The Lava
   counters (what the connection processes count as they deliver each message, lava_procs.process) are
   checked against our own count from the file's weights and the recorded spikes (NeuroBench's definition,
   train.neurobench_defs.synaptic_ops: every nonzero input times the nonzero weights of its column) and
   against the fast engine's tally of its own run: they must be equal, connection by connection. With
   NeuroBench importable, NeuroBench's SynapticOperations on the same integer weights, fed the same recorded
   activity, is checked against the Lava counters too (less the recurrent messages of each sample's
   last-step spikes: NeuroBench counts samples apart, Lava's stream delivers them into the next sample).
2. Float models (NeuroBench needed): NeuroBench's count against the study's Table 2 (train.ops), after naming
   every definitional difference: Table 2 adds a bias AC per neuron per step and a reset AC per spike,
   counts a graded input of c spikes as c events (NeuroBench: one operation, a MAC because the input is not
   binary) and counts the ANNs densely (NeuroBench: Dense).

`make crosscheck` installs NeuroBench (pyproject's [crosscheck] extra, torch kept on the 2.3 line) and runs
this; without NeuroBench part 1 runs alone. Its last line: lava_vs_ours_max_diff=<ops> (part 1, must be 0)
neurobench_vs_lava_max_rel_diff=<x or n/a> neurobench_vs_table2_max_rel_diff=<x or n/a>.

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
from export.exporter import export_checkpoint  # noqa: E402
from export.netx_h5 import read_network  # noqa: E402
from export.qnet import QNetwork  # noqa: E402
from machine import announce_load  # noqa: E402  (benchmarks/machine.py)
from sim.lava_net import run_lava  # noqa: E402
from sim.stream import run_stream  # noqa: E402
from sim.tally import layer_names  # noqa: E402
from train.checkpoint import checkpoint_origin, load_checkpoint  # noqa: E402
from train.evaluate import run_split  # noqa: E402
from train.models import SPIKING, model_from_checkpoint  # noqa: E402
from train.neurobench_defs import CONNECTIONS, synaptic_ops  # noqa: E402
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


def neurobench_run(model, x: torch.Tensor, y: torch.Tensor, batch: int) -> dict:
    """NeuroBench's SynapticOperations and ActivationSparsity (per sample) of a wrapper module."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    nb_model = TorchModel(model)
    nb_model.add_activation_module(Spikes)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=False)
    bench = Benchmark(nb_model, loader, [], [lambda out: out.max(dim=1).values.argmax(dim=1)],
                      [[], [SynapticOperations, ActivationSparsity]])
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        res = bench.run(quiet=True)
    return {"ops": res["SynapticOperations"], "sparsity": res["ActivationSparsity"]}


def neurobench_available() -> bool:
    try:
        import neurobench  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- part 1: exported networks
def _sources(counts: np.ndarray, spikes: list[np.ndarray], k: int, syn_name: str) -> np.ndarray:
    """What connection `syn_name` of layer k receives: the input counts or the previous layer's spikes (feed-
    forward), or the layer's own spikes (recurrent), [N, T, m]."""
    return (spikes[k] if syn_name.startswith("rec") else ([counts] + spikes)[k])


def our_count(net: QNetwork, counts: np.ndarray, spikes: list[np.ndarray]) -> dict[str, int]:
    """Per connection '<layer>.<synapse>': the effective operations of the stream by NeuroBench's definition, from
    the network's integer weights and the recorded activity; every message counted, as the Lava counters do."""
    out = {}
    for k, (name, layer) in enumerate(zip(layer_names(net), net.layers)):
        for syn_name, syn in layer.connections().items():
            src = _sources(counts, spikes, k, syn_name)
            x = torch.from_numpy(np.asarray(src, dtype=np.float64).reshape(-1, src.shape[-1]))
            out[f"{name}.{syn_name}"] = synaptic_ops(x, torch.from_numpy(syn.weight.astype(np.float64)))[0]
    return out


def last_step_recurrent(net: QNetwork, spikes: list[np.ndarray]) -> int:
    """The recurrent operations of each sample's last-step spikes: in Lava's stream they reach the next sample's
    first step; NeuroBench, counting samples apart, never delivers them."""
    total = 0
    for k, layer in enumerate(net.hidden):
        for syn_name, syn in layer.connections().items():
            if syn_name.startswith("rec"):
                total += int((spikes[k][:, -1, :] != 0).sum(axis=0) @ np.count_nonzero(syn.weight, axis=0))
    return total


class Replay(nn.Module):
    """An exported network's connections as nn.Linear modules holding its integer weights (zeros kept), fed the
    activity Lava recorded: what NeuroBench's hooks count. Recurrent inputs are the previous step's spikes."""

    def __init__(self, net: QNetwork, counts: np.ndarray, spikes: list[np.ndarray]):
        super().__init__()
        self.links, self.plan = nn.ModuleList(), []
        for k, layer in enumerate(net.layers):
            for syn_name, syn in layer.connections().items():
                self.links.append(_linear(torch.from_numpy(syn.weight.astype(np.float32))))
                self.plan.append((k, syn_name))
        self.counts, self.spikes = counts, spikes

    def forward(self, x):
        for lin, (k, syn_name) in zip(self.links, self.plan):
            src = torch.from_numpy(_sources(self.counts, self.spikes, k, syn_name).astype(np.float32))
            if syn_name.startswith("rec"):
                src = torch.cat([torch.zeros_like(src[:, :1]), src[:, :-1]], dim=1)
            lin(src)
        return torch.zeros(x.shape[0], x.shape[1], 1)


def crosscheck_exported(net: QNetwork, counts: np.ndarray, lava) -> dict:
    """Per connection: the Lava counters, our count from the weights and Lava's recorded spikes, and the fast
    engine's tally of its own run of the same stream; and the dense count (every message times the fan-out)."""
    ours = our_count(net, counts, lava.spikes)
    fast = run_stream(net, counts, 0).tally
    rows = {key: {"lava": lava.tally.syn_ops_nz[key], "ours": ours[key], "fast": fast.syn_ops_nz[key],
                  "dense": lava.tally.messages[key] * _fan_out(net, key)} for key in ours}
    return {"rows": rows, "last_step_recurrent": last_step_recurrent(net, lava.spikes),
            "samples": counts.shape[0]}


def _fan_out(net: QNetwork, key: str) -> int:
    layer, syn_name = key.split(".", 1)
    return net.layers[layer_names(net).index(layer)].connections()[syn_name].weight.shape[0]


def neurobench_on_exported(net: QNetwork, counts: np.ndarray, spikes: list[np.ndarray]) -> float:
    """NeuroBench's effective operations (MACs + ACs) of the whole stream on the Replay of the recorded run."""
    x = torch.from_numpy(counts.astype(np.float32))
    ops = neurobench_run(Replay(net, counts, spikes), x, torch.zeros(len(x), dtype=torch.long), len(x))["ops"]
    return (float(ops["Effective_MACs"]) + float(ops["Effective_ACs"])) * len(x)


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


def exported_part(ckpts: list[str], samples: int, tmp: Path, with_nb: bool) -> tuple[int, float | None]:
    """Part 1 for every spiking checkpoint; returns (largest |Lava - ours| or |Lava - fast|, NeuroBench's largest
    relative difference to the Lava counters or None)."""
    worst, worst_nb = 0, None
    print(f"{'model':<16}{'connection':<16}{'Lava counters':>15}{'ours':>12}{'fast engine':>13}{'dense':>12}")
    for path in ckpts:
        ckpt = load_checkpoint(path)
        kind = ckpt["model"]["kind"]
        if kind not in SPIKING:
            continue
        h5 = tmp / f"{Path(path).parent.name}.h5"
        export_checkpoint(path, h5, force=True)
        net = read_network(h5)
        split = eval_set_for(checkpoint_origin(ckpt)).samples
        counts = split.dense(np.arange(min(samples, len(split)))).numpy().astype(np.int64)
        lava = run_lava(net, counts, record=True, progress=False)
        r = crosscheck_exported(net, counts, lava)
        name = f"{kind} {ckpt['model']['layers']}x{ckpt['model']['hidden']}"
        for key, row in r["rows"].items():
            worst = max(worst, abs(row["lava"] - row["ours"]), abs(row["lava"] - row["fast"]))
            print(f"{name:<16}{key:<16}{row['lava']:>15}{row['ours']:>12}{row['fast']:>13}{row['dense']:>12}")
        if with_nb:
            lava_total = sum(row["lava"] for row in r["rows"].values()) - r["last_step_recurrent"]
            nb = neurobench_on_exported(net, counts, lava.spikes)
            worst_nb = max(worst_nb or 0.0, rel(nb, lava_total))
            print(f"{name:<16}{'NeuroBench':<16}{lava_total:>15} (Lava, less {r['last_step_recurrent']} last-step "
                  f"recurrent ops){nb:>14.1f} (NeuroBench)")
    return worst, worst_nb


def float_part(ckpts: list[str], samples: int, batch: int) -> float:
    """Part 2: NeuroBench on the float models against Table 2 adjusted; returns the largest relative difference."""
    worst = 0.0
    print(f"{'model':<14}{'metric':<28}{'NeuroBench':>16}{'Table 2, adj.':>16}")
    for path in ckpts:
        ckpt = load_checkpoint(path)
        kind, model = ckpt["model"]["kind"], model_from_checkpoint(ckpt)
        split = eval_set_for(checkpoint_origin(ckpt)).samples
        index = np.arange(min(samples, len(split)))
        x, y = split.dense(index), torch.from_numpy(np.asarray(split.labels)[index])
        wrapper = SpikingWrapper(model, kind) if kind in SPIKING else CellWrapper(model, kind)
        nb = neurobench_run(wrapper, x, y, batch)
        ours = run_split(model, split, batch=batch, index=index, kind=kind)
        msg_rate = float((x != 0).sum()) / (x.shape[0] * x.shape[1] * x.shape[2])
        with torch.no_grad():
            last = [float(h[:, -1].sum()) / x.shape[0] for h in model(x, return_hidden=True)[1]]
        sizes = [x.shape[2]] + [ckpt["model"]["hidden"]] * ckpt["model"]["layers"]
        t2 = table2_in_neurobench_terms(kind, sizes, ckpt["model"]["n_classes"], ours["rates"], msg_rate, x.shape[1],
                                        last)
        name = f"{kind} {ckpt['model']['layers']}x{ckpt['model']['hidden']}"
        for key, value in t2.items():
            nb_v = float(nb["ops"][key])
            worst = max(worst, rel(value, nb_v))
            print(f"{name:<14}{'synaptic_operations ' + key:<28}{nb_v:>16.1f}{value:>16.1f}")
    print("definitional differences taken out of Table 2 before comparing: its bias AC (n per layer per step), its "
          "reset AC (n per spike), the recurrent ops of a sample's last-step spikes (they reach the next step, "
          "outside the sample), its counting of a graded input of c spikes as c events (NeuroBench: one MAC per "
          "nonzero input), its readout bias; the ANNs compare dense (NeuroBench's Dense; Table 2's MACs without the "
          "RNN readout's leak). Recurrent weights and the readout are counted by both.")
    return worst


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
                                      bin_hz=50, recipe_name="study"), run, progress=False)
            ckpts.append(str(run / "best.pt"))
    with_nb = neurobench_available()
    if not with_nb:
        print("NeuroBench is not installed (make crosscheck installs it): the exported networks' counts alone")
    worst, worst_nb = exported_part(ckpts, args.samples, tmp, with_nb)
    worst_t2 = float_part(ckpts, args.samples, args.batch) if with_nb else None
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"
    print(f"lava_vs_ours_max_diff={worst} neurobench_vs_lava_max_rel_diff={fmt(worst_nb)} "
          f"neurobench_vs_table2_max_rel_diff={fmt(worst_t2)}")


if __name__ == "__main__":
    main()
