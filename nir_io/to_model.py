"""`cli.py import-nir`: a NIR graph -> a checkpoint of this toolchain's models (eval, export, simulate, compare).

The mapping (docs/nir.md). NIR's neurons are ODEs; a graph does not carry its time step, so the caller gives
dt and each node is discretized by forward Euler, as snnTorch (which wrote the Braille graphs), Norse and the
NIR reference read them: for a neuron j with a = dt / tau (a in [0, 1])

  CubaLIF  I_t = (1 - a_syn) I + a_syn w_in x;  v_t = (1 - a_mem) v + a_mem (v_leak + r I_t);  spike v_t > v_th
  LIF      v_t = (1 - a) v + a (v_leak + r x)
  LI       o_t = (1 - a) o + a (v_leak + r x)
  CubaLI   I as CubaLIF; o_t = (1 - a_mem) o + a_mem (v_leak + r I_t)

and x = W s + b summed over the neuron's synapses (feed-forward, and its own recurrent one from the previous
step). Ours, in threshold units: Cuba-LIF i' = r I / v_th, v' = v / v_th, so alpha = 1 - a_syn, beta = 1 - a_mem
and every row of W, U and b is scaled by a_syn w_in r / v_th (LIF: a r / v_th; LI: a r; CubaLI: a_syn w_in r).
v_leak must be 0 and, for a reset to zero, v_reset 0: anything else is refused. The reset is the same-step one
NIR defines (to v_reset, or by subtracting v_th when the caller says the graph was trained that way: the file
cannot say, snnTorch writes both alike).

A graph whose last neuron spikes (the Braille graphs' CubaLIF output) is classified by its spike count: its
layer becomes our last hidden layer and the readout counts its spikes (train.models COUNT_SCALE), so the class
with the most output spikes wins, in float, in fixed point and in Lava alike (ties: the lowest class).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import nir
import numpy as np
import torch

from common.atomic import atomic_path, check_output
from common.errors import InputError
from common.rundir import run_lock
from nir_io.graph import READOUTS, Layer, numbers_of, layers_of
from train.checkpoint import save_checkpoint
from train.models import ModelConfig, build_model

KINDS = {nir.LIF: "lif", nir.CubaLIF: "cuba-lif"}
IMPORT_RESETS = ("zero", "subtract")  # NIR's resets happen in the step of the spike


def read_graph(path: str | Path) -> nir.NIRGraph:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such NIR file")
    try:  # NIR's own type inference rejects some valid graphs (docs/nir.md); the layer walker checks shapes itself
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # h5py and nir raise many types for a file that is not a NIR graph
        raise InputError(f"{path}: not a readable NIR graph ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise InputError(f"{path}: holds a single {type(graph).__name__} node, not a graph")
    return graph


def per_neuron(layer: Layer, attr: str, n: int) -> np.ndarray:
    """A neuron parameter as [n] float64 (NIR allows a scalar or one value per neuron)."""
    value = getattr(layer.neuron, attr, None)
    arr = numbers_of(layer.name, attr, 1.0 if value is None else value).ravel()
    if arr.size == 1:
        return np.full(n, arr[0])
    if arr.size != n:
        raise InputError(f"node '{layer.name}': '{attr}' has {arr.size} values for {n} neurons")
    return arr


def euler_factor(layer: Layer, attr: str, dt: float, n: int) -> np.ndarray:
    """dt / tau per neuron, checked to lie in [0, 1] (beyond 1 forward Euler overshoots: no decay represents it)."""
    tau = per_neuron(layer, attr, n)
    if np.any(tau <= 0) or np.any(np.isnan(tau)):
        raise InputError(f"node '{layer.name}': '{attr}' must be positive, found {tau.min():g}")
    a = dt / tau
    if np.any(a > 1):
        raise InputError(f"node '{layer.name}': dt = {dt:g} exceeds '{attr}' = {tau.min():g}: forward Euler "
                         "overshoots; give the dt the graph was trained with (--dt)")
    return a


def _zero(layer: Layer, attr: str, n: int, why: str) -> None:
    value = per_neuron(layer, attr, n) if getattr(layer.neuron, attr, None) is not None else np.zeros(n)
    if np.any(value != 0):
        raise InputError(f"node '{layer.name}': {attr} = {value[value != 0][0]:g} is not supported ({why})")


def neuron_params(layer: Layer, dt: float, reset: str) -> dict:
    """Our decays and the per-row gain of the synapses into `layer` (see the module docstring)."""
    node, n = layer.neuron, layer.n
    _zero(layer, "v_leak", n, "our neurons leak towards 0")
    if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        a_syn, a_mem = euler_factor(layer, "tau_syn", dt, n), euler_factor(layer, "tau_mem", dt, n)
        p = {"alpha": 1 - a_syn, "beta": 1 - a_mem, "gain": a_syn * per_neuron(layer, "w_in", n) * per_neuron(layer, "r", n)}
    else:
        a = euler_factor(layer, "tau", dt, n)
        p = {"beta": 1 - a, "gain": a * per_neuron(layer, "r", n)}
    if isinstance(node, (nir.LIF, nir.CubaLIF)):
        th = per_neuron(layer, "v_threshold", n)
        if np.any(th <= 0):
            raise InputError(f"node '{layer.name}': v_threshold must be positive, found {th.min():g}")
        if reset == "zero":
            _zero(layer, "v_reset", n, "a reset to zero resets to 0; give --reset subtract if the graph subtracts")
        p["gain"] = p["gain"] / th
        p["threshold"] = th
    return p


def _weights(layer: Layer, gain: np.ndarray) -> dict:
    g = gain[:, None]
    bias = layer.ff.bias + (layer.rec.bias if layer.rec is not None else 0.0)
    out = {"W": g * layer.ff.weight, "b": gain * bias}
    if layer.rec is not None:
        out["U"] = g * layer.rec.weight
    return out


def graph_to_model(graph: nir.NIRGraph, dt: float, reset: str = "zero"):
    """(ModelConfig, state_dict, description) of a NIR graph."""
    if not dt > 0:
        raise InputError(f"--dt must be positive, got {dt}")
    if reset not in IMPORT_RESETS:
        raise InputError(f"--reset {reset!r}: NIR resets in the step of the spike; choose {' or '.join(IMPORT_RESETS)}")
    n_in, layers = layers_of(graph)
    readout = layers[-1] if isinstance(layers[-1].neuron, READOUTS) else None
    spiking = layers[:-1] if readout is not None else layers
    if not spiking:
        raise InputError("the graph has no spiking layer (LIF or CubaLIF) before its readout")
    kinds = {KINDS.get(type(l.neuron)) for l in spiking}
    if None in kinds:
        bad = next(l for l in spiking if type(l.neuron) not in KINDS)
        raise InputError(f"node '{bad.name}': a {type(bad.neuron).__name__} can only be the last layer (the readout)")
    if len(kinds) > 1:
        raise InputError("the graph mixes LIF and CubaLIF layers; this toolchain's models have one neuron kind")
    kind = kinds.pop()
    widths = [l.n for l in spiking]
    options = {"clip": None, "reset": reset}
    if readout is None:
        options["spike_count_readout"] = True
    elif isinstance(readout.neuron, nir.CubaLI):
        options["readout_current"] = True
    n_classes = widths[-1] if readout is None else readout.n
    cfg = ModelConfig(kind, n_in, n_classes, len(spiking), widths[0], options, widths,
                      [l.rec is not None for l in spiking])
    model = build_model(cfg)
    state = model.state_dict()
    described = []
    for k, layer in enumerate(spiking):
        p = neuron_params(layer, dt, reset)
        for name, value in {**_weights(layer, p["gain"]), "beta": p["beta"], **({"alpha": p["alpha"]} if kind == "cuba-lif" else {})}.items():
            state[f"hidden_layers.{k}.{name}"] = torch.as_tensor(value, dtype=torch.float32)
        described.append(_describe(layer, kind, p))
    if readout is not None:
        if readout.rec is not None:
            raise InputError(f"readout '{readout.name}' has a recurrent synapse; a readout has none here")
        p = neuron_params(readout, dt, reset)
        w = _weights(readout, p["gain"])
        state["readout.W"], state["readout.b"] = (torch.as_tensor(w[k], dtype=torch.float32) for k in ("W", "b"))
        state["readout.beta"] = torch.as_tensor(p["beta"], dtype=torch.float32)
        if "alpha" in p:
            state["readout.alpha"] = torch.as_tensor(p["alpha"], dtype=torch.float32)
        described.append(_describe(readout, "readout", p))
    model.load_state_dict(state)
    rule = "spike count of the last layer" if readout is None else f"maximum over time of {type(readout.neuron).__name__} '{readout.name}'"
    return cfg, model.state_dict(), {"layers": described, "class_rule": rule, "dt": dt, "reset": reset}


def _describe(layer: Layer, kind: str, p: dict) -> dict:
    span = lambda a: [float(np.min(a)), float(np.max(a))]
    d = {"node": layer.name, "nir": type(layer.neuron).__name__, "kind": kind, "n": layer.n,
         "ff": layer.ff.name, "recurrent": layer.rec.name if layer.rec is not None else None,
         "beta": span(p["beta"]), "gain": span(p["gain"])}
    if "alpha" in p:
        d["alpha"] = span(p["alpha"])
    if "threshold" in p:
        d["threshold"] = span(p["threshold"])
    return d


def _metadata_dt(path: str | Path, meta: dict) -> float:
    """The graph's own time step (metadata 'dt'): one positive number of seconds."""
    if meta.get("dt") is None:
        raise InputError(f"{path}: the graph does not record its time step; give --dt (the Braille graphs: 1e-4)")
    value = np.asarray(meta["dt"])
    if value.dtype.kind not in "iuf" or value.size != 1 or not np.isfinite(value).all() or not float(value) > 0:
        raise InputError(f"{path}: metadata 'dt' is {meta['dt']!r}, not one positive number of seconds; give --dt")
    return float(value)


def _metadata_reset(path: str | Path, meta: dict) -> str | None:
    """The graph's own reset (metadata 'reset'), if it records one."""
    value = meta.get("reset")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if value is not None and (not isinstance(value, str) or value not in IMPORT_RESETS):
        raise InputError(f"{path}: metadata 'reset' is {value!r}, not one of {', '.join(IMPORT_RESETS)}; give --reset")
    return value


def load_graph(path: str | Path, dt: float | None = None, reset: str | None = None):
    """graph_to_model of the NIR file at PATH, dt and reset from its metadata unless given; anything that cannot
    map is one InputError naming the file."""
    graph = read_graph(path)
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = _metadata_dt(path, meta) if dt is None else dt
    reset = reset or _metadata_reset(path, meta) or "zero"  # NIR's own definition: to v_reset
    try:
        return graph_to_model(graph, float(dt), reset)
    except InputError as exc:  # a node or parameter that cannot map: name the file too
        raise InputError(f"{path}: {exc}") from None


def import_nir(path: str | Path, out: str | Path, dt: float | None = None, reset: str | None = None,
               bin_hz: float | None = None, duration: float | None = None, classes: str | None = None,
               force: bool = False) -> dict:
    """Writes OUT/best.pt (a checkpoint) and OUT/import.json (what was mapped); returns the description.
    OUT is a directory of its own kind (common.atomic.check_output): an imported model is replaced only with
    --force, a training run or a study never, and the graph never."""
    out = check_output(out, [path], force, kind="import")
    cfg, state, desc = load_graph(path, dt, reset)
    names = [c.strip() for c in classes.split(",")] if classes else [str(k) for k in range(cfg.n_classes)]
    if len(names) != cfg.n_classes:
        raise InputError(f"--classes names {len(names)} classes, the graph has {cfg.n_classes} outputs")
    if bin_hz is not None and not bin_hz > 0 or duration is not None and not duration > 0:
        raise InputError("--bin-hz and --duration must be positive")
    with run_lock(out):
        check_output(out, [path], force, kind="import")
        target = out / "best.pt"
        spec = {"n_channels": cfg.n_in, "bin_hz": bin_hz, "duration": duration}
        payload = {"model": asdict(cfg), "state_dict": state, "epoch": 0,
                   "data": {"name": Path(path).stem, "spec": spec, "class_names": names, "frontend": None},
                   "nir": {"source": str(path), **desc}}
        save_checkpoint(target, payload)
        desc = {"checkpoint": str(target), "model": cfg.kind, "widths": cfg.sizes[1:], "n_in": cfg.n_in,
                "n_classes": cfg.n_classes, **desc}
        with atomic_path(out / "import.json") as tmp:
            tmp.write_text(json.dumps(desc, indent=2) + "\n")
    return desc


def format_import(desc: dict) -> str:
    lines = [f"{desc['checkpoint']}: {desc['model']} {' -> '.join(map(str, [desc['n_in'], *desc['widths']]))}, "
             f"{desc['n_classes']} classes; dt {desc['dt']:g}, reset {desc['reset']} (same step); "
             f"class = {desc['class_rule']}"]
    for d in desc["layers"]:
        extra = "".join(f", {k} {v[0]:.4g}..{v[1]:.4g}" for k, v in d.items() if k in ("alpha", "beta", "threshold", "gain"))
        rec = f" + recurrent '{d['recurrent']}'" if d["recurrent"] else ""
        lines.append(f"  {d['nir']} '{d['node']}' ({d['n']}) <- '{d['ff']}'{rec}: {d['kind']}{extra}")
    return "\n".join(lines)
