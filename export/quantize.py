"""Float checkpoint -> QNetwork, following docs/fixed_point.md.

Each connection gets the smallest exponent whose 8-bit mantissa holds its largest
weight, so weights saturate only when that exponent would pass EXP_MAX; decays
become 12-bit, biases 13-bit mantissas with an exponent. Everything that had to be
clipped is counted in the report, with the worst relative error it caused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError
from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse
from train.checkpoint import checkpoint_origin
from train.models import SPIKING, ModelConfig, model_from_checkpoint
from train.neurons import DEFAULT_CLIP


def options_clamp(options: dict, theta: int = fx.THETA) -> tuple[int, int]:
    """The state clamp of the study's neurons from a model config's options (docs/fixed_point.md):
    'clip' absent -> train.neurons.DEFAULT_CLIP, None -> the 24-bit range (-STATE_MAX, STATE_MAX),
    (lo, hi) -> (round(lo * theta), round(hi * theta)) limited to the 24-bit range."""
    clip = options.get("clip", DEFAULT_CLIP)
    try:
        return fx.clip_bounds(clip, theta)
    except (ValueError, TypeError) as exc:
        raise InputError(f"model option clip={clip!r}: {exc}") from None


@dataclass
class QuantReport:
    """Per parameter: exponent, entries clipped, worst error relative to the parameter's range."""

    rows: list[dict] = field(default_factory=list)
    # per hidden layer: {"layer", "clip" (thresholds or None), "state_lo", "state_hi" (state units)}
    state_bounds: list[dict] = field(default_factory=list)

    @property
    def saturated(self) -> int:
        return sum(r["saturated"] for r in self.rows)

    def add(self, layer: int, name: str, exp: int, saturated: int, w: np.ndarray, wq: np.ndarray) -> None:
        scale = float(np.max(np.abs(w))) or 1.0
        err = np.abs(wq - w)
        self.rows.append({"layer": layer, "param": name, "exp": exp, "saturated": saturated,
                          "max_abs_err": float(err.max()) if err.size else 0.0,
                          "worst_rel_err": float(err.max() / scale) if err.size else 0.0})


def _quantized(w: np.ndarray, vth_mant: int) -> Synapse:
    exp = fx.weight_exponent(w, vth_mant)
    return Synapse(fx.quantize_weight(w, exp, vth_mant)[0], exp)


def _synapse(w: np.ndarray, layer: int, name: str, report: QuantReport, vth_mant: int = fx.VTH_MANT,
             split: bool = False) -> Synapse:
    """The 8-bit connection of w; split: plus a second one holding what the first leaves (the residual)."""
    exp = fx.weight_exponent(w, vth_mant)
    mant, sat = fx.quantize_weight(w, exp, vth_mant)
    syn = Synapse(mant, exp)
    if split:
        residual = np.asarray(w, dtype=np.float64) - syn.to_float(vth_mant)
        if np.any(residual != 0):
            syn.fine = _quantized(residual, vth_mant)
    report.add(layer, name, exp, sat, w, syn.to_float(vth_mant))
    return syn


def _bias(b: np.ndarray, layer: int, name: str, report: QuantReport, theta: int = fx.THETA) -> tuple[np.ndarray, int]:
    mant, exp, sat = fx.quantize_bias(b, theta)
    report.add(layer, name, exp, sat, b, fx.bias_value(mant, exp) / theta)
    return mant, exp


def block_vth(kind: str, p: dict[str, np.ndarray]) -> int:
    """The layer's threshold mantissa (fixed_point.vth_for); SpikGRU and Lava's CUBA keep VTH_MANT."""
    if kind not in ("lif", "cuba-lif", "readout"):
        return fx.VTH_MANT
    peak = lambda *names: max((float(np.max(np.abs(p[n]))) for n in names if n in p and np.size(p[n])), default=0.0)
    return fx.vth_for(peak("W", "U"), peak("b"))


def quantize_block(kind: str, p: dict[str, np.ndarray], index: int, report: QuantReport, split: bool = False) -> QLayer:
    """One block's float parameters (its export_params()) -> QLayer (split: residual connections, see _synapse)."""
    vth = block_vth(kind, p)
    ff = _synapse(p["W"], index, "W", report, vth, split)
    bias_mant, bias_exp = _bias(p["b"], index, "b", report, fx.theta_of(vth))
    if kind == "readout":
        v_decay = np.broadcast_to(fx.decay_to_int(p["beta"]), np.shape(p["b"])).copy()  # a shared beta: per unit
        i_decay = fx.decay_to_int(p["alpha"]) if "alpha" in p else None
        return QLayer("readout", ff, bias_mant=bias_mant, bias_exp=bias_exp, v_decay=v_decay, i_decay=i_decay,
                      vth_mant=vth)
    rec = _synapse(p["U"], index, "U", report, vth, split) if "U" in p else None  # no U: no recurrence
    layer = QLayer(kind, ff, rec, bias_mant=bias_mant, bias_exp=bias_exp, vth_mant=vth)
    if kind == "lif":
        layer.v_decay = fx.decay_to_int(p["beta"])
    elif kind == "cuba-lif":
        layer.i_decay, layer.v_decay = fx.decay_to_int(p["alpha"]), fx.decay_to_int(p["beta"])
    elif kind == "lava-cuba":
        layer.du = int(np.ravel(fx.lava_du(fx.decay_to_int(p["alpha"])))[0])
        layer.v_decay = fx.decay_to_int(p["beta"])
    elif kind == "spikgru":
        layer.i_decay = fx.decay_to_int(p["alpha"])
        layer.ff_z = _synapse(p["Wz"], index, "Wz", report)
        layer.rec_z = _synapse(p["Uz"], index, "Uz", report)
        layer.bias_z_mant, layer.bias_z_exp = _bias(p["bz"], index, "bz", report)
    else:
        raise InputError(f"cannot quantize a {kind} layer")
    return layer


def quantize_model(model, cfg: ModelConfig, meta: dict | None = None,
                   split_weights: bool = False) -> tuple[QNetwork, QuantReport]:
    if cfg.kind not in SPIKING:
        raise InputError(f"a {cfg.kind} model is an ANN baseline: only lif, cuba-lif and spikgru export to Loihi 2")
    report = QuantReport()
    kind = "lava-cuba" if cfg.options.get("lava_cuba") else cfg.kind
    if split_weights and kind not in ("lif", "cuba-lif"):
        raise InputError(f"--split-weights applies to lif and cuba-lif models, not {kind}")
    layers = [quantize_block(kind, block.export_params(), l, report, split_weights)
              for l, block in enumerate(model.hidden_layers)]
    if kind in ("lif", "cuba-lif"):
        for layer in layers:
            layer.reset = cfg.options.get("reset", "late")
    if kind != "lava-cuba":  # Lava's CUBA keeps its own arithmetic (no clamp; docs/fixed_point.md)
        clip = cfg.options.get("clip", DEFAULT_CLIP)
        for l, layer in enumerate(layers):
            lo, hi = options_clamp(cfg.options, layer.theta)
            layer.state_lo, layer.state_hi = lo, hi
            report.state_bounds.append({"layer": l, "clip": None if clip is None else tuple(clip),
                                        "state_lo": lo, "state_hi": hi})
    layers.append(quantize_block("readout", model.readout.export_params(), len(layers), report, split_weights))
    return QNetwork(layers, dict(meta or {})), report


def quantize_checkpoint(ckpt: dict, split_weights: bool = False) -> tuple[QNetwork, QuantReport]:
    """A loaded checkpoint (train.checkpoint.load_checkpoint) -> (QNetwork, report); meta from its config."""
    cfg = ModelConfig(**ckpt["model"])
    if cfg.kind not in SPIKING:
        raise InputError(f"{ckpt.get('path', 'checkpoint')}: a {cfg.kind} model is an ANN baseline; "
                         "only lif, cuba-lif and spikgru export to Loihi 2")
    model = model_from_checkpoint(ckpt)
    data = ckpt.get("data", {})
    spec = data.get("spec", {})
    meta = {"model": cfg.kind, "layers": cfg.layers, "hidden": cfg.hidden, "widths": cfg.sizes[1:], "n_in": cfg.n_in,
            "n_classes": cfg.n_classes, "options": dict(cfg.options), "dataset": data.get("name", ""),
            "channels": spec.get("n_channels", cfg.n_in), "bin_hz": spec.get("bin_hz"),
            "duration": spec.get("duration"),
            "steps": int(round(spec["duration"] * spec["bin_hz"])) if spec.get("bin_hz") else None,
            "class_names": data.get("class_names", []), "checkpoint": ckpt.get("path", ""),
            "origin": checkpoint_origin(ckpt), "frontend": data.get("frontend")}
    return quantize_model(model, cfg, meta, split_weights)
