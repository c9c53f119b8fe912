"""`cli.py compare`: predicted vs measured operations, accuracy and energy of an exported network.

On the same N samples of a split (N = --limit, small because Lava runs them; spread over the classes as eval and
simulate take them, audio.datasets.limit_index):
  * predicted (float):  Table 2 (train.ops.model_ops) at the float model's activity (its checkpoint);
  * predicted (fixed):  Table 2 at the fixed-point network's activity (fast engine spikes);
  * measured (Lava):    the Lava run's event counters (sim.lava_net);
  * measured (fast):    the fast engine's counts of the same stream (sim.stream);
  * stock netx (--netx-compatible files): the file in lava-dl's own netx layers (the route onto Loihi 2), its
    predictions against the fast engine's (they have no counters).
Lava (ours and stock netx) runs the samples as one stream with a gap after each (sim.simulate.stream_gap);
"fixed point" accuracies are each sample's answer alone, and the stream check says where they differ.
MAC and AC are per timestep per sample, per layer and in total; differences in %. Accuracies of the
float model, the fixed-point network and Lava on those samples (and float / fixed on the whole
split). Energy = MAC * e_mac + AC * e_ac (per-op energies in pJ, defaults from Horowitz, ISSCC 2014,
45 nm: a 32-bit float multiply-add about 4.6 pJ (3.7 pJ mul + 0.9 pJ add), a 32-bit float add 0.9 pJ,
the figures the SNN-vs-ANN energy comparisons of the study's kind use).

The last line is ``measured_vs_predicted_fixed=<x>``: the largest relative difference between the
measured counts (Lava's, or the fast engine's where Lava has none) and Table 2 at the fixed-point
activity of the same run, over every layer's MAC and AC and the totals. It is 0 when the counters
and the formulas agree (they do for LIF, Cuba-LIF and SpikGRU; Lava's own CUBA, a --lava-cuba
model, is not in Table 2: 2n MAC and no reset AC, so it differs there by design).
"""
from __future__ import annotations

# Lava first: it fixes multiprocessing's start method when imported (see tests/conftest.py)
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401  isort: skip

from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.errors import InputError
from export.resources import estimate
from sim.engine import run_fast
from sim.hardware import LOIHI_SOURCE, explain, hardware_ops, loihi_energy_pj
from audio.datasets import limit_index
from sim.simulate import (LAVA_DEFAULT_LIMIT, format_stream, load_net, load_split, run_engine, stream_gap,
                          stream_report)
from sim.tally import counted_ops, layer_names
from train.ops import model_ops

E_MAC_PJ = 4.6  # Horowitz 2014, 45 nm, 32-bit float: mult 3.7 + add 0.9
E_AC_PJ = 0.9  # Horowitz 2014, 45 nm, 32-bit float add
EXACT = 1e-9  # relative differences below this are rounding of the per-step division: 0


def _table2_kind(kind: str) -> str:
    return "cuba-lif" if kind == "lava-cuba" else kind


def predicted(net, rates: list[float]) -> list[dict]:
    """Table 2 per layer of a QNetwork as dicts with name, mac, ac (rates: input events per channel per step,
    then spikes per neuron per step of each hidden layer)."""
    sizes = [net.layers[0].n_in] + [l.n_out for l in net.hidden]
    readout = "current-readout" if net.readout.i_decay is not None else None
    rows = model_ops(_table2_kind(net.layers[0].kind), sizes, net.readout.n_out, rates,
                     [l.rec is not None for l in net.hidden], readout)
    return [asdict(r) for r in rows]


def _rel(a: float | None, b: float | None) -> float | None:
    """(a - b) / b; None where either is missing."""
    if a is None or b is None:
        return None
    if b == 0:
        return 0.0 if a == 0 else float("inf")
    d = (a - b) / b
    return 0.0 if abs(d) < EXACT else d


def _float_activity(checkpoint, split, index: np.ndarray, net) -> tuple[dict | None, list[str]]:
    from train.checkpoint import load_checkpoint
    from train.evaluate import run_split
    from train.models import SPIKING, ModelConfig, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = ModelConfig(**ckpt["model"])
    if cfg.kind not in SPIKING:
        raise InputError(f"{ckpt['path']}: a {cfg.kind} checkpoint has no spiking activity to compare")
    if cfg.n_in != net.layers[0].n_in or cfg.sizes[1:] != [l.n_out for l in net.hidden] \
            or cfg.n_classes != net.readout.n_out:
        raise InputError(f"{ckpt['path']}: the checkpoint's sizes {cfg.sizes} + {cfg.n_classes} classes do not match "
                         "the network file")
    model = model_from_checkpoint(ckpt)
    model.eval()
    part = run_split(model, split, index=index)
    whole = run_split(model, split) if len(index) < len(split) else part
    return {"checkpoint": ckpt["path"], "rates": part["rates"], "pred": part["pred"], "accuracy": part["accuracy"],
            "split_accuracy": whole["accuracy"]}, []


def _checkpoint_file(path: str | Path) -> Path:
    """A checkpoint as a file (a run directory means its best.pt, as train.checkpoint.load_checkpoint reads it)."""
    path = Path(path)
    return (path / "best.pt" if path.is_dir() else path).resolve()


def compare(path: str | Path, data: str | None = None, checkpoint: str | None = None, split: str = "test",
            limit: int | None = None, e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ, channels: int | None = None,
            progress: bool = True, gap: int | None = None) -> dict:
    """Everything `cli.py compare` prints, as a plain dict (gap: as sim.simulate.stream_gap)."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if e_mac < 0 or e_ac < 0:
        raise InputError("--e-mac and --e-ac are energies per operation in pJ and cannot be negative")
    net, netx = load_net(path)
    dataset, binned = load_split(net, data, split, channels, path)
    index = limit_index(binned.labels, limit or LAVA_DEFAULT_LIMIT)
    n = len(index)
    notes = []
    kind = net.layers[0].kind
    if kind == "lava-cuba":
        notes.append("Lava's CUBA (--lava-cuba) is not in Table 2: predictions use the Cuba-LIF row (3n MAC, a reset "
                     "AC per spike); Lava's CUBA counts 2n MAC and no reset, so measured and predicted differ there")
    # float model: --checkpoint, else the file's own checkpoint where it still exists
    ckpt = checkpoint
    meta_ckpt = net.meta.get("checkpoint")
    if ckpt is not None and meta_ckpt and _checkpoint_file(ckpt) != _checkpoint_file(meta_ckpt):
        notes.append(f"--checkpoint {ckpt} is not the checkpoint {path} was exported from ({meta_ckpt}): the float "
                     "columns describe another model's weights (a fine-tuned network's own float model is its "
                     "fine-tuned checkpoint; leave --checkpoint out to use it)")
    if ckpt is None:
        if meta_ckpt and Path(meta_ckpt).exists():
            ckpt = meta_ckpt
        else:
            where = f"the file's checkpoint {meta_ckpt} is not there" if meta_ckpt else "no checkpoint"
            notes.append(f"{where}: no float columns (--checkpoint CKPT to give one)")
    flt = _float_activity(ckpt, binned, index, net)[0] if ckpt else None
    # Lava's stream and the fast engine's account of it (the same samples), and the whole split sample by sample
    gap, how = stream_gap(net, gap, False, data, channels, path)
    lava = run_engine(net, binned, "lava", index, "sim", progress, path, gap=gap)
    stock = run_engine(net, binned, "lava", index, "sim", progress, path, stock_netx=True, netx=True,
                       gap=gap) if netx else None
    fast = lava["stream"]
    whole = run_fast(net, binned, progress=progress)
    fixed_rates = fast.tally.rates(net)
    pred_fixed = predicted(net, fixed_rates)
    pred_float = predicted(net, flt["rates"]) if flt else None
    meas_lava = counted_ops(net, lava["tally"])
    meas_fast = counted_ops(net, fast.tally)
    counts_equal = lava["tally"].equals(fast.tally)
    rows, worst = [], 0.0
    names = layer_names(net)
    for k, name in enumerate(names):
        row = {"name": name, "kind": net.layers[k].kind}
        for op in ("mac", "ac"):
            row[op] = {"float": pred_float[k][op] if pred_float else None, "fixed": pred_fixed[k][op],
                       "lava": meas_lava[k][op], "fast": meas_fast[k][op]}
        rows.append(row)
    total = {"name": "total", "kind": ""}
    for op in ("mac", "ac"):
        total[op] = {src: (sum(r[op][src] for r in rows) if all(r[op][src] is not None for r in rows) else None)
                     for src in ("float", "fixed", "lava", "fast")}
    for row in rows + [total]:
        for op in ("mac", "ac"):
            v = row[op]
            v["lava_vs_fixed"] = _rel(v["lava"], v["fixed"])
            v["fast_vs_lava"] = _rel(v["fast"], v["lava"])
            v["fixed_vs_float"] = _rel(v["fixed"], v["float"])
            worst = max(worst, abs(v["lava_vs_fixed"]))
    energy = {}
    for src in ("float", "fixed", "lava", "fast"):
        if total["mac"][src] is None:
            energy[src] = None
            continue
        per_step = total["mac"][src] * e_mac + total["ac"][src] * e_ac
        energy[src] = {"pj_per_step": per_step, "nj_per_sample": per_step * fast.tally.steps / 1000.0}
    hw = hardware_ops(net, lava["tally"], estimate(net, chips=1 << 20))
    hw_total = {key: sum(r[key] for r in hw) for key in ("syn_dense", "syn_nonzero", "messages_in", "core_messages_in",
                                                        "neuron_updates", "spikes")}
    hw_total["nonzero_vs_dense"] = _rel(hw_total["syn_nonzero"], hw_total["syn_dense"])
    loihi_pj = loihi_energy_pj(hw)
    energy["loihi_estimate"] = {"pj_per_step": loihi_pj, "nj_per_sample": loihi_pj * fast.tally.steps / 1000.0}
    labels = np.asarray(binned.labels)[index]
    alone = float(np.mean(fast.alone_max.argmax(axis=1) == labels))
    acc = {"float": flt["accuracy"] if flt else None, "fixed": alone, "stream": float(np.mean(fast.pred == labels)),
           "lava": float(np.mean(lava["pred"] == labels)),
           "stock_netx": float(np.mean(stock["pred"] == labels)) if stock else None,
           "float_split": flt["split_accuracy"] if flt else None, "fixed_split": whole.accuracy}
    return {"file": str(path), "model": net.meta.get("model", kind), "netx_compatible": netx, "data": dataset.name,
            "split": dataset.what, "samples": n, "split_samples": len(binned), "index": index.tolist(),
            "steps": fast.tally.steps,
            "checkpoint": flt["checkpoint"] if flt else None, "rows": rows, "total": total,
            "rates": {"float": flt["rates"] if flt else None, "fixed": fixed_rates},
            "accuracy": acc, "lava_equals_fast": {"predictions": bool(np.array_equal(lava["pred"], fast.pred)),
                                                  "counts": counts_equal},
            "stock_netx": None if stock is None else {
                "agree_with_fast": int(np.sum(stock["pred"] == fast.pred)), "pred": stock["pred"].tolist(),
                "accuracy_minus_fast_points": 100 * (acc["stock_netx"] - acc["stream"])},
            "stream": stream_report(net, fast, labels, fast.tally.steps, how),
            "energy": energy, "e_mac_pj": e_mac, "e_ac_pj": e_ac, "measured_vs_predicted_fixed": worst,
            "hardware": {"layers": hw, "total": hw_total, "why": explain(net, lava["tally"], hw),
                         "energy_source": LOIHI_SOURCE},
            "lava_seconds": lava["seconds"], "notes": notes + lava["notes"] + (stock["notes"][1:] if stock else [])}


def _f(x, width=12, prec=1) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{prec}f}"


def _pct(x, width=9) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{'inf':>{width}}" if not np.isfinite(x) else f"{100 * x:>+{width - 1}.2f}%"


def format_compare(r: dict) -> str:
    lines = [f"{r['file']}: {r['model']} on {r['data']}, {r['split']}: "
             + (f"{r['samples']} of them (spread over the classes)" if r['samples'] < r['split_samples'] else "all")
             + f" x {r['steps']} steps" + (f"; float model {r['checkpoint']}" if r["checkpoint"] else ""),
             "operations per timestep per sample: predicted by Table 2 from the float / fixed-point activity, "
             "measured by the Lava counters / the fast engine"]
    head = (f"{'layer':<9}{'op':<5}{'pred float':>12}{'pred fixed':>12}{'Lava':>12}{'fast':>12}"
            f"{'Lava/fixed':>11}{'fast/Lava':>11}{'fixed/float':>12}")
    lines.append(head)
    for row in r["rows"] + [r["total"]]:
        for op in ("mac", "ac"):
            v = row[op]
            lines.append(f"{row['name']:<9}{op.upper():<5}{_f(v['float'])}{_f(v['fixed'])}{_f(v['lava'])}{_f(v['fast'])}"
                         f"{_pct(v['lava_vs_fixed'], 11)}{_pct(v['fast_vs_lava'], 11)}{_pct(v['fixed_vs_float'], 12)}")
    rf = r["rates"]
    fmt_rates = lambda xs: "-" if xs is None else ", ".join(f"{x:.4f}" for x in xs)
    lines.append(f"activity (input events per channel, spikes per neuron, per step): float {fmt_rates(rf['float'])}; "
                 f"fixed {fmt_rates(rf['fixed'])}")
    a = r["accuracy"]
    pct = lambda x: "-" if x is None else f"{100 * x:.2f} %"
    lines.append(f"accuracy on these {r['samples']} samples: float {pct(a['float'])}, fixed point {pct(a['fixed'])}, "
                 f"Lava {pct(a['lava'])}" + (f", stock netx {pct(a['stock_netx'])}" if r["stock_netx"] else ""))
    if r["samples"] < r["split_samples"]:
        lines.append(f"accuracy on the whole split ({r['split_samples']}): float {pct(a['float_split'])}, "
                     f"fixed point {pct(a['fixed_split'])}")
    eq = r["lava_equals_fast"]
    lines.append(f"Lava vs fast engine on the same stream: predictions {'equal' if eq['predictions'] else 'DIFFER'}, "
                 f"counts {'equal' if eq['counts'] else 'DIFFER'}")
    if r["stock_netx"]:
        sn = r["stock_netx"]
        lines.append(f"stock netx (lava-dl's own layers, the route onto Loihi 2) vs fast engine: {sn['agree_with_fast']} "
                     f"of {r['samples']} predictions equal, accuracy {sn['accuracy_minus_fast_points']:+.2f} points")
    en = ", ".join(f"{src} {'-' if e is None else format(e['pj_per_step'], '.0f') + ' pJ/step (' + format(e['nj_per_sample'], '.1f') + ' nJ/sample)'}"
                   for src, e in r["energy"].items() if src != "loihi_estimate")
    lines.append(f"energy at {r['e_mac_pj']} pJ/MAC, {r['e_ac_pj']} pJ/AC (45 nm, the study's): {en}")
    hw = r["hardware"]
    lines.append("what Loihi 2 would execute (Lava counters), per timestep per sample: synaptic ops on nonzero synapses "
                 "with graded input as one message, vs Table 2's dense count")
    lines.append(f"{'layer':<9}{'Table 2 syn':>13}{'nonzero syn':>13}{'diff':>9}{'msgs in':>10}{'core msgs':>11}"
                 f"{'neuron upd':>12}")
    for row in hw["layers"] + [dict(hw["total"], name="total")]:
        lines.append(f"{row['name']:<9}{row['syn_dense']:>13.1f}{row['syn_nonzero']:>13.1f}"
                     f"{_pct(row['nonzero_vs_dense'], 9)}{row['messages_in']:>10.1f}{row['core_messages_in']:>11.1f}"
                     f"{row['neuron_updates']:>12.0f}")
    lines += [f"  why: {w}" for w in hw["why"]]
    le = r["energy"]["loihi_estimate"]
    lines.append(f"energy, Loihi per-operation estimate: {le['pj_per_step']:.0f} pJ/step ({le['nj_per_sample']:.1f} "
                 f"nJ/sample); {hw['energy_source']}")
    lines.append("which energy: the 45 nm figure prices Table 2's MAC and AC alike for every model (the study's "
                 "SNN-vs-ANN comparison on one conventional chip); the Loihi estimate is what this exported network "
                 "would cost on Loihi 2")
    lines += format_stream(r["stream"], r["samples"])
    lines += [f"note: {n}" for n in r["notes"]]
    x = r["measured_vs_predicted_fixed"]
    lines.append("last line: the largest relative difference between the measured counts and Table 2 at the same "
                 "fixed-point activity, over every layer's MAC and AC (0: the counters and the formulas agree)")
    lines.append(f"measured_vs_predicted_fixed={0 if x == 0 else format(x, '.6g')}")
    return "\n".join(lines)
