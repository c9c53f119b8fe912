"""`cli.py infer MODEL RECORDING.wav ...`: a recording through the front end its model was trained with, then the
model: a checkpoint (the float model) or an exported network (the fast engine, or Lava with engine='lava').

Printed per recording: the class, every class's score (the readout's maximum over time), the spikes of each
layer, the operations per step (the study's Table 2; for a network also what Loihi 2 would execute, counted)
and the energy (45 nm figures; for a network also the Loihi per-operation estimate). `plot`: the input
raster, the hidden spikes and the readout traces over time, one PNG per recording.
"""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

import contextlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from audio.binning import BinSpec, bin_spikes
from audio.frontend import Frontend, read_wav, spikes_of
from audio.spike_files import SpikeSet
from common.atomic import atomic_path, claimed
from common.errors import InputError

E_MAC_PJ, E_AC_PJ = 4.6, 0.9  # the study's 45 nm figures (sim.compare)


def _model(path: Path) -> dict:
    """{'kind': 'checkpoint'|'network', 'frontend', 'spec', 'class_names', ...} of a model file; one trained on
    spikes made elsewhere (no recorded front end) is an InputError."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        from sim.simulate import load_net
        net, _ = load_net(path)
        meta = net.meta or {}
        _require_frontend(path, meta.get("frontend"))
        spec = _spec(path, meta, net.layers[0].n_in)
        return {"kind": "network", "net": net, "frontend": meta.get("frontend"), "spec": spec,
                "class_names": meta.get("class_names") or [str(k) for k in range(net.readout.n_out)]}
    from train.checkpoint import load_checkpoint
    from train.models import model_from_checkpoint
    ckpt = load_checkpoint(path)
    data = ckpt.get("data", {})
    _require_frontend(path, data.get("frontend"))
    s = data.get("spec", {})
    spec = _spec(path, s, s.get("n_channels"))
    return {"kind": "checkpoint", "model": model_from_checkpoint(ckpt), "cfg": ckpt["model"],
            "frontend": data.get("frontend"), "spec": spec, "class_names": data.get("class_names", [])}


def _spec(path: Path, d: dict, n_channels) -> BinSpec:
    try:
        return BinSpec(float(d["bin_hz"]), float(d["duration"]), int(n_channels))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: records no bin rate, window or channel count ('bin_hz', 'duration', "
                         "'n_channels') for its input") from None


def _require_frontend(path: Path, frontend: dict | None) -> None:
    if not frontend:
        raise InputError(f"{path}: was trained on spikes made elsewhere (no recorded front end); infer needs a "
                         "model trained on `data convert` output, whose front end it applies to the recordings")


def _binned(recording: Path, fe: Frontend, spec: BinSpec):
    times, units = spikes_of(read_wav(recording, fe.rate, fe.max_seconds), fe)
    if len(times) == 0:
        raise InputError(f"{recording}: produced no spikes (silent?)")
    s = SpikeSet(times.astype(np.float64), units.astype(np.int64), np.array([0, len(times)]), np.zeros(1, np.int64),
                 None, ["?"], spec.n_channels, str(recording))
    return bin_spikes(s, spec)


def _run_checkpoint(m: dict, binned) -> dict:
    from train.models import ModelConfig
    from train.ops import config_ops, totals
    x = binned.dense(np.arange(1))
    with torch.no_grad():
        out, hidden = m["model"](x, return_hidden=True)
    cfg = m["cfg"]
    steps = x.shape[1]
    rates = [float(x.sum()) / (steps * x.shape[2])] + [float(h.sum()) / (steps * h.shape[-1]) for h in hidden]
    rows = config_ops(ModelConfig(**cfg), rates + [0.0] * (cfg["layers"] + 1 - len(rates)))
    t = totals(rows)
    return {"readout": out[0].numpy().astype(np.float64), "input": x[0].numpy(),
            "hidden": [h[0].numpy() for h in hidden], "ops_per_step": {"mac": t["mac"], "ac": t["ac"]},
            "energy_nj_45nm": (t["mac"] * E_MAC_PJ + t["ac"] * E_AC_PJ) * steps / 1000.0, "layers": [asdict(r) for r in rows]}


def _run_network(m: dict, binned, engine: str) -> dict:
    from export.resources import estimate
    from sim.hardware import hardware_ops, loihi_energy_pj
    from sim.integer_net import Inputs, run_batch
    from sim.tally import counted_ops, tally_batch
    net = m["net"]
    inputs = Inputs.from_split(binned, np.arange(1))
    steps = inputs.T
    if engine == "lava":
        from sim.lava_net import run_lava
        res = run_lava(net, inputs.dense(), record=True, progress=False)
        tally, spikes = res.tally, [s[0] for s in res.spikes]
        readout = np.asarray(res.sample_max, dtype=np.float64)  # Lava keeps the per-sample maxima, not the trace
    else:
        out = run_batch(net, inputs)
        tally, spikes = tally_batch(net, inputs, out["spikes"]), [s[0] for s in out["spikes"]]
        readout = out["readout"][0].astype(np.float64)
    rows = counted_ops(net, tally)
    mac, ac = sum(r["mac"] for r in rows), sum(r["ac"] for r in rows)
    hw = hardware_ops(net, tally, estimate(net, chips=1 << 20))
    return {"readout": readout, "input": inputs.dense()[0], "hidden": spikes, "ops_per_step": {"mac": mac, "ac": ac},
            "energy_nj_45nm": (mac * E_MAC_PJ + ac * E_AC_PJ) * steps / 1000.0,
            "loihi_ops_per_step": sum(r["syn_nonzero"] for r in hw),
            "energy_nj_loihi_estimate": loihi_energy_pj(hw) * steps / 1000.0, "layers": rows}


def plot_paths(plot: str | Path, n: int) -> list[Path]:
    """The figure of each of n recordings: PLOT itself for one, PLOT_<k>.png for several."""
    plot = Path(plot)
    if plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: name a .png file")
    return [plot] if n == 1 else [plot.with_name(f"{plot.stem}_{k}{plot.suffix}") for k in range(n)]


def infer(model_path: str | Path, recordings: list[str], engine: str = "fast", plot: str | Path | None = None,
          force: bool = False) -> dict:
    """Everything `cli.py infer` prints, as a plain dict. The figures (`plot`) go through the output check
    first: an existing one is replaced only with `force`, an input never."""
    if engine not in ("fast", "lava"):
        raise InputError(f"--engine {engine!r}: choose fast or lava")
    model_path = Path(model_path)
    if not model_path.exists():
        raise InputError(f"{model_path}: no such model (a checkpoint .pt or an exported network .h5)")
    with contextlib.ExitStack() as outputs:
        figures = [outputs.enter_context(claimed(p, [model_path, *recordings], force, "--plot"))
                   for p in (plot_paths(plot, len(recordings)) if plot else [])]
        return _infer(model_path, recordings, engine, figures)


def _infer(model_path: Path, recordings: list[str], engine: str, figures: list[Path]) -> dict:
    m = _model(model_path)
    if m["kind"] == "checkpoint" and engine == "lava":
        raise InputError("--engine lava runs an exported network (.h5); export the checkpoint first")
    try:
        fe = Frontend.from_dict(m["frontend"])
    except InputError as exc:
        raise InputError(f"{model_path}: {exc}") from None
    if fe.channels != m["spec"].n_channels:
        raise InputError(f"{model_path}: its front end has {fe.channels} channels, the model takes {m['spec'].n_channels}")
    results = []
    for k, rec in enumerate(recordings):
        rec = Path(rec)
        binned = _binned(rec, fe, m["spec"])
        r = _run_checkpoint(m, binned) if m["kind"] == "checkpoint" else _run_network(m, binned, engine)
        scores = r["readout"].max(axis=0) if r["readout"].ndim == 2 else r["readout"][0]
        pred = int(np.argmax(scores))
        names = m["class_names"] or [str(c) for c in range(len(scores))]
        item = {"recording": str(rec), "class": names[pred], "class_index": pred,
                "scores": {names[c]: float(v) for c, v in enumerate(scores)},
                "input_events": int(r["input"].sum()), "spikes": [int(h.sum()) for h in r["hidden"]],
                "steps": int(r["input"].shape[0]), "ops_per_step": r["ops_per_step"],
                "energy_nj_45nm": r["energy_nj_45nm"]}
        for key in ("loihi_ops_per_step", "energy_nj_loihi_estimate"):
            if key in r:
                item[key] = r[key]
        if figures:
            item["plot"] = str(_plot(r, item, names, figures[k]))
        results.append(item)
    return {"model": str(model_path), "engine": engine if m["kind"] == "network" else "float model",
            "frontend": fe.as_dict(), "recordings": results}


def _plot(r: dict, item: dict, names: list[str], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = len(r["hidden"])
    fig, axes = plt.subplots(2 + layers, 1, figsize=(8, 2.2 * (2 + layers)), sharex=True, dpi=100)
    t_in, c_in = np.nonzero(r["input"])
    axes[0].scatter(t_in, c_in, s=1, c="k", marker=".", linewidths=0)
    axes[0].set_ylabel("input channel")
    axes[0].set_title(f"{Path(item['recording']).name}: '{item['class']}'")
    for k, h in enumerate(r["hidden"]):
        t, n = np.nonzero(h)
        axes[1 + k].scatter(t, n, s=2, c="tab:blue", marker=".", linewidths=0)
        axes[1 + k].set_ylabel(f"layer {k + 1} neuron")
    ro = r["readout"]
    if ro.ndim == 2:
        for c in range(ro.shape[1]):
            axes[-1].plot(ro[:, c], lw=2 if c == item["class_index"] else 0.8, label=names[c])
        axes[-1].legend(fontsize=6, ncol=5)
    else:
        axes[-1].bar(range(ro.shape[-1]), ro.reshape(-1))
    axes[-1].set_ylabel("readout")
    axes[-1].set_xlabel("time step")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def format_infer(r: dict) -> str:
    lines = [f"{r['model']} ({r['engine']}); front end {r['frontend']['name']} with {r['frontend']['channels']} channels"]
    for item in r["recordings"]:
        scores = ", ".join(f"{k} {v:.3g}" for k, v in item["scores"].items())
        lines.append(f"{item['recording']}: '{item['class']}'")
        lines.append(f"  scores (readout maximum over time): {scores}")
        lines.append(f"  input events {item['input_events']} over {item['steps']} steps; spikes per layer "
                     + ", ".join(str(s) for s in item["spikes"]))
        o = item["ops_per_step"]
        lines.append(f"  operations per step (Table 2): MAC {o['mac']:.0f}, AC {o['ac']:.0f}; energy "
                     f"{item['energy_nj_45nm']:.1f} nJ (45 nm)")
        if "loihi_ops_per_step" in item:
            lines.append(f"  Loihi 2 would execute {item['loihi_ops_per_step']:.0f} synaptic ops per step; energy "
                         f"{item['energy_nj_loihi_estimate']:.1f} nJ (Loihi per-operation estimate)")
        if "plot" in item:
            lines.append(f"  wrote {item['plot']}")
    return "\n".join(lines)
