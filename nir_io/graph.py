"""A NIR graph read as this toolchain's layered network: which node is which layer, or why it cannot be.

NIR (pip `nir`) describes a network as nodes and edges. This module flattens nested subgraphs, contracts their
Input/Output nodes, and walks the chain Input -> synapse -> neuron -> ... -> Output, finding each neuron's
feed-forward synapse (Affine or Linear) and its recurrent one (a synapse whose only source and target are the
neuron itself, the `lif1.lif -> lif1.w_rec -> lif1.lif` loop). Everything that does not fit is collected and
reported in one line (`InputError`), never half-mapped.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from common.errors import InputError

SYNAPSES = (nir.Affine, nir.Linear)
SPIKING = (nir.LIF, nir.CubaLIF)
READOUTS = (nir.LI, nir.CubaLI)
NEURONS = SPIKING + READOUTS
PORTS = (nir.Input, nir.Output)


@dataclass
class Synapse:
    """A weight [n_out, n_in] and its bias [n_out] (zeros for Linear), with the node's name."""
    name: str
    weight: np.ndarray
    bias: np.ndarray


@dataclass
class Layer:
    """One neuron node with its feed-forward synapse and, if it has one, its recurrent synapse."""
    name: str
    neuron: nir.NIRNode
    ff: Synapse
    rec: Synapse | None

    @property
    def n(self) -> int:
        return self.ff.weight.shape[0]


def numbers_of(name: str, field: str, value) -> np.ndarray:
    """A node's field as float64, finite: anything else is a one-line InputError naming the node and field."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"node '{name}': '{field}' is not numeric") from None
    if not np.isfinite(arr).all():
        raise InputError(f"node '{name}': '{field}' holds NaN or inf")
    return arr


def _synapse(name: str, node) -> Synapse:
    w = numbers_of(name, "weight", node.weight)
    if w.ndim != 2:
        raise InputError(f"node '{name}': a {type(node).__name__} weight of shape {w.shape}; only 2-D (dense) weights map")
    bias = getattr(node, "bias", None)
    b = np.zeros(w.shape[0]) if bias is None else numbers_of(name, "bias", bias).ravel()
    if b.size not in (1, w.shape[0]):
        raise InputError(f"node '{name}': 'bias' has {b.size} values for {w.shape[0]} outputs")
    return Synapse(name, w, np.broadcast_to(b, (w.shape[0],)).copy())


def flatten(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict, list]:
    """(nodes, edges) with every nested NIRGraph inlined under '<its name>.' and its Input/Output nodes kept as
    pass-through nodes (contracted by `contract`). An edge to or from a subgraph by its own name goes to its
    Input nodes / comes from its Output nodes; 'sub.node' names a node inside it."""
    nodes, edges, inner = {}, [], {}
    for key, node in graph.nodes.items():
        name = prefix + key
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = flatten(node, name + ".")
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
            inner[key] = ([name + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Input)],
                          [name + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Output)])
        else:
            nodes[name] = node
    for src, dst in graph.edges:
        srcs = _ends(src, inner, prefix, 1, nodes)
        dsts = _ends(dst, inner, prefix, 0, nodes)
        edges.extend((a, b) for a in srcs for b in dsts)
    return nodes, edges


def _ends(key: str, inner: dict, prefix: str, side: int, nodes: dict) -> list[str]:
    """The flattened node names an edge end `key` stands for (side 0: a target, the subgraph's inputs; 1: a
    source, its outputs)."""
    if key in inner:
        return inner[key][side]
    if prefix + key in nodes:
        return [prefix + key]
    head = key.split(".")[0]
    if head in inner:  # 'sub.node' written against the subgraph
        return [prefix + key]
    raise InputError(f"edge end '{key}' names no node of the graph")


def contract(nodes: dict, edges: list, keep: set) -> tuple[dict, list]:
    """Removes the pass-through Input/Output nodes not in `keep` (the top level's), joining their edges."""
    edges = list(dict.fromkeys(edges))
    for name in [k for k, n in nodes.items() if isinstance(n, PORTS) and k not in keep]:
        ins = [a for a, b in edges if b == name]
        outs = [b for a, b in edges if a == name]
        edges = [e for e in edges if name not in e] + [(a, b) for a in ins for b in outs]
        del nodes[name]
    return nodes, list(dict.fromkeys(edges))


def unsupported(nodes: dict) -> list[str]:
    """'Type name' of every node this toolchain cannot map."""
    ok = SYNAPSES + NEURONS + PORTS
    return [f"{type(n).__name__} '{k}'" for k, n in nodes.items() if not isinstance(n, ok)]


def layers_of(graph: nir.NIRGraph) -> tuple[int, list[Layer]]:
    """(input channels, layers in order) of a graph: Input -> (synapse -> neuron)+ -> Output."""
    top_in = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    top_out = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(top_in) != 1 or len(top_out) != 1:
        raise InputError(f"the graph has {len(top_in)} Input and {len(top_out)} Output nodes at its top level; "
                         "this toolchain maps one of each")
    nodes, edges = contract(*flatten(graph), keep={top_in[0], top_out[0]})
    bad = unsupported(nodes)
    if bad:
        raise InputError(f"cannot map {len(bad)} node(s): {', '.join(bad)} (supported: Input, Output, Affine, Linear, "
                         "LIF, CubaLIF, LI, CubaLI)")
    succ = {k: [b for a, b in edges if a == k] for k in nodes}
    pred = {k: [a for a, b in edges if b == k] for k in nodes}
    src, out = top_in[0], top_out[0]
    layers: list[Layer] = []
    seen = set()
    while True:
        rec = [s for s in succ[src] if isinstance(nodes[s], SYNAPSES) and succ[s] == [src] and pred[s] == [src]]
        forward = [s for s in succ[src] if s not in rec]
        if forward == [out]:
            if not layers:
                raise InputError("the Input is connected straight to the Output: no layer to map")
            return _channels(top_in[0], nodes[top_in[0]], layers), layers
        if len(forward) != 1:
            raise InputError(f"node '{src}' feeds {len(forward)} nodes ({', '.join(forward) or 'none'}); "
                             "this toolchain maps a chain of layers")
        syn = forward[0]
        if not isinstance(nodes[syn], SYNAPSES):
            raise InputError(f"node '{src}' feeds {type(nodes[syn]).__name__} '{syn}' directly; a layer's input "
                             "must pass through an Affine or Linear node")
        if len(succ[syn]) != 1 or len(pred[syn]) != 1:
            raise InputError(f"synapse '{syn}' has {len(pred[syn])} sources and {len(succ[syn])} targets; "
                             "expected one of each")
        neuron = succ[syn][0]
        if not isinstance(nodes[neuron], NEURONS):
            raise InputError(f"synapse '{syn}' feeds {type(nodes[neuron]).__name__} '{neuron}'; expected a neuron "
                             "(LIF, CubaLIF, LI or CubaLI)")
        if neuron in seen:
            raise InputError(f"neuron '{neuron}' is reached twice: a loop through more than one layer")
        seen.add(neuron)
        own_rec = [s for s in pred[neuron] if s != syn]
        if len(own_rec) > 1 or (own_rec and own_rec[0] not in succ[neuron]):
            raise InputError(f"neuron '{neuron}' has inputs other than '{syn}' and its own recurrent synapse: "
                             f"{', '.join(own_rec)}")
        if own_rec and len(pred[own_rec[0]]) != 1:
            raise InputError(f"recurrent synapse '{own_rec[0]}' has more than one source")
        layer = Layer(neuron, nodes[neuron], _synapse(syn, nodes[syn]),
                      _synapse(own_rec[0], nodes[own_rec[0]]) if own_rec else None)
        _check_shapes(layer, layers)
        layers.append(layer)
        src = neuron


def _channels(name: str, node: nir.Input, layers: list[Layer]) -> int:
    """The first synapse's inputs, checked against the Input node's declared shape."""
    n = layers[0].ff.weight.shape[1]
    declared = numbers_of(name, "input_type", next(iter(node.input_type.values()), [n])).ravel()
    if declared.size == 1 and int(declared[0]) != n:
        raise InputError(f"the Input declares {int(declared[0])} channels, synapse '{layers[0].ff.name}' takes {n}")
    return n


def _check_shapes(layer: Layer, before: list[Layer]) -> None:
    n_in = before[-1].n if before else layer.ff.weight.shape[1]
    if layer.ff.weight.shape[1] != n_in:
        raise InputError(f"synapse '{layer.ff.name}' takes {layer.ff.weight.shape[1]} inputs, "
                         f"'{before[-1].name}' has {n_in} neurons")
    if layer.rec is not None and layer.rec.weight.shape != (layer.n, layer.n):
        raise InputError(f"recurrent synapse '{layer.rec.name}' has shape {layer.rec.weight.shape}, "
                         f"expected {(layer.n, layer.n)}")
