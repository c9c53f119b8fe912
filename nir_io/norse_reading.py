"""An independent reading of a NIR file: Norse 1.1.0's importer (forward Euler at dt), step by step.

Used by the tests and benchmarks/nir_braille.py to check our import against another framework. nirtorch's
executor (under Norse) leaves a recurrent edge's output out of the first step, since nothing is cached yet: a
recurrent Affine's bias is then missing at t = 0, where snnTorch, which trained the Braille graphs, adds it
(RSynaptic applies recurrent(spk = 0) from the first step). `run_norse` seeds that cache with each recurrent
synapse's output for zero spikes, its bias, which is also what the graph's equations give at t = 0.
"""
from __future__ import annotations

from pathlib import Path

import nir
import torch

from nir_io.graph import layers_of


def run_norse(path: str | Path, dt: float, reset: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spikes (or, for the readout, the value) of every neuron node, {node name: [B, T, n]}, for inputs x [B, T, C]."""
    import norse.torch as norse
    from nirtorch.graph_executor import GraphExecutorState
    from norse.torch.functional.reset import reset_subtract, reset_value

    graph = nir.read(path, type_check=False)
    net = norse.from_nir(graph, dt=dt, reset_method=reset_value if reset == "zero" else reset_subtract)
    _, layers = layers_of(nir.read(path, type_check=False))
    key = lambda name: name.replace(".", "_")  # nirtorch's module names
    seed = {key(l.rec.name): torch.as_tensor(l.rec.bias, dtype=torch.float32)[None] for l in layers if l.rec is not None}
    out = {l.name: [] for l in layers}
    last = layers[-1].name
    with torch.no_grad():
        for b in range(x.shape[0]):
            state = GraphExecutorState(state={}, cache=dict(seed))
            steps = {name: [] for name in out}
            for t in range(x.shape[1]):
                y, state = net(x[b, t][None], state)
                for name in steps:  # the last node feeds the Output: its value is the network's output
                    steps[name].append((state.cache[key(name)] if name != last else y)[0].clone())
            for name in out:
                out[name].append(torch.stack(steps[name]))
    return {name: torch.stack(v) for name, v in out.items()}

