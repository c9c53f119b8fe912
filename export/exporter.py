"""`cli.py export`: checkpoint -> quantize -> check Loihi 2 limits -> write the netx-style HDF5 atomically.

Nothing is written unless every check passes; the file is written to a temp file, read back
by the validating reader and only then renamed onto the output path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from export import fixed_point as fx
from export import resources
from export.netx_h5 import FORMAT, FORMAT_VERSION, write_network
from export.netx_stock import NETX_INPUT_MESSAGE_BITS, NETX_RESET_OFFSET, netx_warmup_spikes, quantize_for_netx
from export.qnet import QNetwork
from export.quantize import QuantReport, quantize_checkpoint

TARGETS = ("loihi2",)
ANN_KINDS = ("rnn", "gru")


@dataclass
class ExportResult:
    out: Path
    net: QNetwork
    report: QuantReport
    resources: resources.Resources
    netx_compatible: bool
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def saturation_warnings(report: QuantReport) -> list[str]:
    """One line per parameter with clipped entries: count and worst relative error."""
    return [f"layer {r['layer']} {r['param']}: {r['saturated']} value(s) saturated "
            f"(exponent {r['exp']}), worst relative error {100 * r['worst_rel_err']:.1f} % of its largest value"
            for r in report.rows if r["saturated"]]


def export_checkpoint(checkpoint: str | Path, out: str | Path, target: str = "loihi2", netx_compatible: bool = False,
                      chips: int = 1, force: bool = False, split_weights: bool = False) -> ExportResult:
    from common.atomic import check_output, claimed
    from train.checkpoint import load_checkpoint
    from train.models import MODEL_KINDS, ModelConfig

    if target not in TARGETS:
        raise InputError(f"--target {target!r}: only {', '.join(TARGETS)} is supported")
    ckpt = load_checkpoint(checkpoint)
    out = check_output(out, [ckpt["path"]], force)
    model = ckpt["model"]
    if not isinstance(model, dict) or model.get("kind") not in MODEL_KINDS:
        kind = model.get("kind") if isinstance(model, dict) else model
        raise InputError(f"{ckpt['path']}: unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    if model["kind"] in ANN_KINDS:
        raise InputError(f"{ckpt['path']}: a {model['kind']} model is an ANN baseline and has no spiking form for "
                         "Loihi 2; export a lif, cuba-lif or spikgru model")
    try:
        ModelConfig(**model)
    except TypeError as exc:  # unknown fields
        raise InputError(f"{ckpt['path']}: checkpoint model config does not fit this toolchain ({exc})") from None
    if netx_compatible and split_weights:
        raise InputError("--split-weights makes two connections per weight; stock netx reads one: drop one of them")
    if netx_compatible:
        net, report, notes = quantize_for_netx(ckpt)
    else:
        (net, report), notes = quantize_checkpoint(ckpt, split_weights), []
    for k, layer in enumerate(net.layers):
        if layer.vth_mant != fx.VTH_MANT:
            notes.append(f"layer {k}: threshold mantissa {layer.vth_mant} (not {fx.VTH_MANT}): its weights reach "
                         f"{max(float(np.abs(s.to_float(layer.vth_mant)).max()) for s in layer.synapses().values()):.1f} "
                         "thresholds, beyond 8-bit mantissas at the standard threshold")
    if not split_weights and ckpt.get("nir") and not netx_compatible:
        notes.append("an imported NIR graph's weights span a wide range: --split-weights (two 8-bit connections "
                     "per weight) keeps the fixed-point decisions closer to the float ones (docs/nir.md)")
    problems = resources.check_bit_widths(net)
    if problems:
        raise InputError(f"{ckpt['path']}: does not fit Loihi 2's bit widths: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    res = resources.estimate(net, chips)
    if netx_compatible:
        for layer, count in netx_warmup_spikes(net):
            notes.append(f"layer {layer}: {count} neuron(s) spike on their bias alone before their first input "
                         "in stock netx; there a netx run may differ from the fixed-point model")
    with claimed(out, [ckpt["path"]], force):  # the check again, under the output's lock
        write_network(out, net, netx_compatible)
    return ExportResult(out, net, report, res, netx_compatible, saturation_warnings(report), notes)


def _bounds_line(b: dict) -> str:
    why = "no training clip: the 24-bit range" if b["clip"] is None else f"training clip {list(b['clip'])}"
    return f"  layer {b['layer']}: i and v clamped to [{b['state_lo']}, {b['state_hi']}] state units ({why})"


def format_export(r: ExportResult) -> str:
    kinds = ", ".join(f"{l.kind} {l.n_in}->{l.n_out}" for l in r.net.layers)
    worst = max((row["worst_rel_err"] for row in r.report.rows), default=0.0)
    lines = [f"quantized {r.net.meta.get('model', '?')}: {kinds}; worst relative error {100 * worst:.2f} %"
             + (f", {r.report.saturated} value(s) saturated" if r.report.saturated else ""),
             *[_bounds_line(b) for b in r.report.state_bounds],
             *([f"  split weights: {sum(len(l.connections()) - len(l.synapses()) for l in r.net.layers)} residual "
                "connection(s), each weight the sum of two 8-bit ones"]
               if any(len(l.connections()) > len(l.synapses()) for l in r.net.layers) else []),
             f"wrote {r.out} ({FORMAT} v{FORMAT_VERSION}{', stock netx compatible' if r.netx_compatible else ''})"]
    if r.netx_compatible:
        steps = r.net.meta.get("steps") or "<steps per sample>"
        lines.append(f"  run in stock netx: Network('{r.out}', input_message_bits={NETX_INPUT_MESSAGE_BITS}, "
                     f"reset_interval={steps}, reset_offset={NETX_RESET_OFFSET}); read the readout from "
                     "layers[-1].neuron.v")
    lines.append(resources.format_resources(r.resources))
    return "\n".join(lines)
