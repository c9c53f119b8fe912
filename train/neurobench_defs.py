"""NeuroBench's metrics (synaptic_operations, activation_sparsity, footprint, connection_sparsity), computed
with NeuroBench's own definitions from a float model's weights and activity, so that `eval --json` and the
report can give them without NeuroBench installed. benchmarks/ops_crosscheck.py runs NeuroBench itself on
the same samples and checks these numbers against it.

NeuroBench's definitions (neurobench 2.3):
* synaptic operations, per sample: for every connection layer (here W, U, Wz, Uz, the readout), every
  nonzero input times the nonzero weights of its column; an input that is only 0/1 is a spike and
  its operations are ACs, any other input (graded spike counts) makes MACs. Biases are not counted.
  Dense: every input, zero or not, times every weight.
* activation sparsity: the share of zero outputs of the neurons over layers, steps and samples.
* footprint: bytes of parameters and buffers. Connection sparsity: the share of zero weights.

Where they differ from the study's Table 2 (train.ops): Table 2 counts a graded input of c spikes as c
events (NeuroBench: one operation), adds a bias AC per neuron per step and a reset AC per spike, and for
the ANNs counts every input (NeuroBench's Dense does the same).
"""
from __future__ import annotations

import torch
from torch import nn

from train.models import SPIKING

CONNECTIONS = {"lif": (("W", False), ("U", True)), "cuba-lif": (("W", False), ("U", True)),
               "spikgru": (("W", False), ("U", True), ("Wz", False), ("Uz", True)), "rnn": (("W", False), ("U", True))}


def footprint(model: nn.Module) -> int:
    return int(sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())))


def connection_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices NeuroBench counts as connections (not biases, not decays)."""
    return [p for name, p in model.named_parameters()
            if p.dim() == 2 or name.split(".")[-1].startswith(("weight_ih", "weight_hh"))]


def connection_sparsity(model: nn.Module) -> float:
    ws = connection_weights(model)
    return float(sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws)))


def _binary(t: torch.Tensor) -> bool:
    """NeuroBench's test for spikes: every value is 0, 1 or -1."""
    return bool(((t == 0) | (t == 1) | (t == -1)).all())


def synaptic_ops(inp: torch.Tensor, w: torch.Tensor) -> tuple[int, int, bool]:
    """(effective, dense, spiking) operations of inputs [..., m] through weights [n, m]."""
    nz_col = (w != 0).sum(dim=0).to(torch.float64)
    nonzero = (inp != 0).reshape(-1, inp.shape[-1]).to(torch.float64)
    effective = int(round(float((nonzero @ nz_col).sum())))
    dense = int(nonzero.shape[0]) * w.numel()
    return effective, dense, _binary(inp)


class Accumulator:
    """NeuroBench's workload metrics of one model, accumulated over batches of (inputs, hidden outputs)."""

    def __init__(self, model: nn.Module, kind: str):
        self.model, self.kind = model, kind
        self.mac = self.ac = self.dense = 0
        self.zero = self.total = 0
        self.samples = 0

    def add(self, x: torch.Tensor, hidden: list[torch.Tensor]) -> None:
        """x [B, T, m] the inputs, hidden the outputs of each recurrent layer [B, T, n]."""
        self.samples += x.shape[0]
        steps = x.shape[0] * x.shape[1]
        if self.kind == "gru":  # torch's fused GRU: Dense only; a GRU cell's dense count has 3n elementwise products
            g = self.model.net.gru
            for layer in range(g.num_layers):
                w_ih, w_hh = getattr(g, f"weight_ih_l{layer}"), getattr(g, f"weight_hh_l{layer}")
                self.dense += steps * (w_ih.numel() + w_hh.numel() + g.hidden_size * 3)
            self.dense += steps * self.model.net.readout.weight.numel()
            return
        inputs = [x] + hidden
        for layer, block in enumerate(self.model.hidden_layers):
            for name, recurrent in CONNECTIONS[self.kind]:
                src = inputs[layer + 1] if recurrent else inputs[layer]
                if recurrent:  # the recurrent synapse sees the previous step's output
                    src = torch.cat([torch.zeros_like(src[:, :1]), src[:, :-1]], dim=1)
                if self.kind == "rnn":  # a cell, called once per step: that step's input decides AC or MAC for both
                    for t in range(x.shape[1]):
                        self._count(src[:, t], getattr(block, name), _binary(inputs[layer][:, t]))
                else:
                    self._count(src, getattr(block, name))
        self._count(inputs[-1], self.model.readout.W)
        for h in hidden:
            if self.kind in SPIKING or self.kind == "rnn":
                self.zero += int((h == 0).sum())
                self.total += h.numel()

    def _count(self, inp: torch.Tensor, w: torch.Tensor, spiking: bool | None = None) -> None:
        effective, dense, own = synaptic_ops(inp, w.detach())
        spiking = own if spiking is None else spiking
        self.dense += dense
        if spiking:
            self.ac += effective
        else:
            self.mac += effective

    def result(self) -> dict:
        per = max(1, self.samples)
        ops = {"Effective_MACs": None, "Effective_ACs": None, "Dense": self.dense / per} if self.kind == "gru" else \
            {"Effective_MACs": self.mac / per, "Effective_ACs": self.ac / per, "Dense": self.dense / per}
        return {"synaptic_operations": ops,
                "activation_sparsity": (self.zero / self.total) if self.total else None,
                "footprint": footprint(self.model), "connection_sparsity": connection_sparsity(self.model)}
