"""`cli.py export CKPT --target nir`: a LIF or Cuba-LIF checkpoint as a NIR graph that other frameworks run.

The inverse of nir_io.to_model's mapping at a chosen dt (default: the checkpoint's bin width), with r, w_in and
v_threshold picked so that the weights stay ours:

  Cuba-LIF  CubaLIF  tau_syn = dt / (1 - alpha), w_in = 1 / (1 - alpha), tau_mem = dt / (1 - beta), r = 1, v_th = 1
  LIF       LIF      tau = dt / (1 - beta), r = 1 / (1 - beta), v_th = 1
  readout   LI       tau = dt / (1 - beta), r = 1 / (1 - beta)   (with a current stage: CubaLI, r = 1)
  W, b      Affine (the bias rides the feed-forward synapse, as ours does); U: Linear, neuron -> U -> neuron.

NIR's neurons reset in the step of the spike. A model trained with --reset subtract or zero maps exactly. The
study's late reset (subtract vth one step later) maps exactly for LIF: with w = v - s the same-step state,
v_t = beta w_{t-1} + x_t - (1 - beta) s_{t-1}, so the LIF becomes a same-step-subtract LIF with
-(1 - beta) added to U's diagonal. For Cuba-LIF the late reset acts on v, past the current's filter, where no
NIR synapse reaches: refused (train with --reset subtract or zero). A spike-count readout (an imported NIR graph
whose output layer spikes) is left out again: the last spiking layer feeds the Output. The reset mode and dt are
stored in the graph's metadata, which nir_io.to_model reads back.
"""
from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from common.atomic import atomic_path, check_output, claimed
from common.errors import InputError
from train.checkpoint import load_checkpoint
from train.models import ModelConfig, model_from_checkpoint


def _param(state: dict, key: str) -> np.ndarray:
    return state[key].detach().cpu().numpy().astype(np.float64)


def _no_unit_decay(decay: np.ndarray, what: str, name: str) -> None:
    if np.any(decay >= 1.0):
        raise InputError(f"{name}: {what} = 1 for {int(np.sum(decay >= 1))} neuron(s) (no leak): forward Euler "
                         f"needs tau = dt / (1 - {what}) finite, NIR cannot express it")


def _neuron(kind: str, p: dict, dt: float, name: str, reset: str):
    n = p["W"].shape[0]
    beta = np.broadcast_to(p["beta"], (n,)).astype(np.float64)
    meta = {"reset": reset}
    if kind == "cuba-lif":
        alpha = np.broadcast_to(p["alpha"], (n,)).astype(np.float64)
        _no_unit_decay(alpha, "alpha", name)
        with np.errstate(divide="ignore"):
            tau_mem = dt / (1 - beta)
        return nir.CubaLIF(tau_syn=dt / (1 - alpha), tau_mem=tau_mem, r=np.ones(n), v_leak=np.zeros(n),
                           v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=1 / (1 - alpha), metadata=meta)
    _no_unit_decay(beta, "beta", name)
    return nir.LIF(tau=dt / (1 - beta), r=1 / (1 - beta), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n), metadata=meta)


def _readout(p: dict, dt: float):
    n = p["W"].shape[0]
    beta = np.broadcast_to(p["beta"], (n,)).astype(np.float64)
    if "alpha" in p:
        alpha = p["alpha"]
        _no_unit_decay(alpha, "alpha", "readout")
        with np.errstate(divide="ignore"):
            tau_mem = dt / (1 - beta)
        return nir.CubaLI(tau_syn=dt / (1 - alpha), tau_mem=tau_mem, r=np.ones(n), v_leak=np.zeros(n),
                          w_in=1 / (1 - alpha))
    _no_unit_decay(beta, "beta", "readout")
    return nir.LI(tau=dt / (1 - beta), r=1 / (1 - beta), v_leak=np.zeros(n))


def model_to_graph(ckpt: dict, dt: float | None = None) -> tuple[nir.NIRGraph, list[str]]:
    """(graph, notes) of a loaded checkpoint."""
    cfg = ModelConfig(**ckpt["model"])
    where = ckpt.get("path", "checkpoint")
    if cfg.kind not in ("lif", "cuba-lif"):
        raise InputError(f"{where}: a {cfg.kind} model has no NIR form (NIR has no primitive for "
                         f"{'the SpikGRU gate' if cfg.kind == 'spikgru' else 'ANN cells'}); lif and cuba-lif export")
    if cfg.options.get("lava_cuba"):
        raise InputError(f"{where}: a --lava-cuba model resets Lava's way (to zero, the step after the spike), "
                         "which NIR's neurons cannot express")
    reset = cfg.options.get("reset", "late")
    if reset == "late" and cfg.kind == "cuba-lif":
        raise InputError(f"{where}: the study's late reset of a Cuba-LIF acts on v past the current's filter, where "
                         "no NIR edge reaches; train with --reset subtract or zero to export to NIR")
    if dt is None:
        bin_hz = ckpt.get("data", {}).get("spec", {}).get("bin_hz")
        dt = ckpt.get("nir", {}).get("dt") or (1.0 / bin_hz if bin_hz else None)
        if dt is None:
            raise InputError(f"{where}: records no bin rate; give --dt")
    if not dt > 0:
        raise InputError(f"--dt must be positive, got {dt}")
    model = model_from_checkpoint(ckpt)
    state = model.state_dict()
    notes = []
    clip = cfg.options.get("clip", (-4.0, 4.0))
    if clip is not None:
        notes.append(f"the training clip {tuple(clip)} of i and v has no NIR form: the graph runs unclipped "
                     "(equal where the clip is never reached)")
    nodes = {"input": nir.Input(input_type={"input": np.array([cfg.n_in])}),
             "output": nir.Output(output_type={"output": np.array([cfg.n_classes])})}
    edges, src = [], "input"
    for k in range(cfg.layers):
        name = f"layer{k + 1}"
        p = {key: _param(state, f"hidden_layers.{k}.{key}") for key in ("W", "b", "beta", "alpha", "U")
             if f"hidden_layers.{k}.{key}" in state}
        nodes[f"{name}.ff"] = nir.Affine(weight=p["W"], bias=p["b"])
        nodes[name] = _neuron(cfg.kind, p, dt, name, "subtract" if reset == "late" else reset)
        edges += [(src, f"{name}.ff"), (f"{name}.ff", name)]
        U = p["U"] if cfg.is_recurrent(k) else None
        if reset == "late":  # LIF: the late reset is the same-step one with -(1 - beta) on U's diagonal
            U = (np.zeros((p["W"].shape[0],) * 2) if U is None else U) - np.diag(1 - p["beta"])
        if U is not None:
            nodes[f"{name}.rec"] = nir.Linear(weight=U)
            edges += [(name, f"{name}.rec"), (f"{name}.rec", name)]
        src = name
    if cfg.options.get("spike_count_readout"):
        edges.append((src, "output"))
        notes.append("the spike-count readout is left out: the last layer's spikes are the output (count them)")
    else:
        p = {key: _param(state, f"readout.{key}") for key in ("W", "b", "beta", "alpha") if f"readout.{key}" in state}
        nodes["readout.ff"] = nir.Affine(weight=p["W"], bias=p["b"])
        nodes["readout"] = _readout(p, dt)
        edges += [(src, "readout.ff"), ("readout.ff", "readout"), ("readout", "output")]
    if reset == "late":
        notes.append("the late reset became a same-step subtraction with -(1 - beta) on each neuron's own "
                     "recurrent weight (exact)")
    meta = {"dt": float(dt), "reset": "subtract" if reset == "late" else reset, "source": "spikaudio",
            "class_rule": "spike count" if cfg.options.get("spike_count_readout") else "max over time of the readout"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True), notes


def export_nir(checkpoint: str | Path, out: str | Path, dt: float | None = None, force: bool = False) -> dict:
    """Writes the graph atomically (temp file, read back by nir.read with type checking, then renamed)."""
    ckpt = load_checkpoint(checkpoint)
    out = check_output(out, [ckpt["path"]], force)
    graph, notes = model_to_graph(ckpt, dt)
    with claimed(out, [ckpt["path"]], force), atomic_path(out) as tmp:
        nir.write(tmp, graph)
        back = nir.read(tmp, type_check=True)
        if set(back.nodes) != set(graph.nodes):
            raise InputError(f"{out}: the written graph did not read back whole")
    return {"out": str(out), "nodes": len(graph.nodes), "edges": len(graph.edges), "dt": graph.metadata["dt"],
            "reset": graph.metadata["reset"], "notes": notes}


def format_nir_export(r: dict) -> str:
    return (f"{r['out']}: NIR graph, {r['nodes']} nodes, {r['edges']} edges; dt {r['dt']:g} s, reset {r['reset']} "
            "(same step); nir.read loads it with type checking")
