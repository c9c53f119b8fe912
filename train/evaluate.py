"""Test accuracy, activity rates and predicted ops of a checkpoint (`cli.py eval`).

Rates are averages over the split's samples and all timesteps: a_in of the first
layer is input events per channel per step (a spike count of 3 is 3 events);
every other a_in is the previous layer's spikes per neuron per step.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from audio.datasets import eval_set_for, limit_index
from common.errors import InputError
from train.checkpoint import checkpoint_origin, load_checkpoint
from train.distributed import resolve_device
from train.loss import predict
from train.models import SPIKING, ModelConfig, model_from_checkpoint
from train.neurobench_defs import Accumulator
from train.ops import config_ops, totals


@torch.no_grad()
def run_split(model: torch.nn.Module, split, batch: int = 256, limit: int | None = None,
              index: np.ndarray | None = None, kind: str | None = None, device: torch.device | str = "cpu") -> dict:
    """Predictions, accuracy and mean activity of each layer over a split (`limit` samples spread over the classes,
    audio.datasets.limit_index, or those of `index`); with the model's `kind`, also NeuroBench's metrics of the same
    run (train.neurobench_defs)."""
    if index is None:
        index = limit_index(split.labels, limit)
    index = np.asarray(index, dtype=np.int64)
    preds, event_sums, widths = [], None, []
    workload = Accumulator(model, kind) if kind else None
    for start in range(0, len(index), batch):
        x = split.dense(index[start:start + batch]).to(device)
        out, hidden = model(x, return_hidden=True)
        preds.append(predict(out).cpu())
        sums = [float(x.sum())] + [float(h.sum()) for h in hidden]
        event_sums = sums if event_sums is None else [a + b for a, b in zip(event_sums, sums)]
        widths = [x.shape[-1]] + [h.shape[-1] for h in hidden]
        if workload is not None:
            workload.add(x, hidden)
    pred = torch.cat(preds).numpy()
    per = len(index) * split.spec.n_steps
    rates = [s / (per * w) for s, w in zip(event_sums, widths)]
    return {"pred": pred, "accuracy": float((pred == np.asarray(split.labels)[index]).mean()), "rates": rates,
            "samples": len(index), "index": index, "neurobench": workload.result() if workload else None}


def evaluate(checkpoint: str, data: str | None = None, split: str | None = None, limit: int | None = None,
             device: str = "cpu") -> dict:
    """Everything `cli.py eval` prints, as a plain dict.

    data: a file (every sample of it unless `split`) or a dataset (its `split`, default test); without it the
    model's own test set (its held-out speaker, for a speaker-held-out run)."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    ckpt = load_checkpoint(checkpoint)
    cfg = ModelConfig(**ckpt["model"])
    ev = eval_set_for(checkpoint_origin(ckpt), data, split, cfg.n_in)
    where = data or ckpt.get("train_config", {}).get("data", "its dataset")
    if ev.samples.spec.n_channels != cfg.n_in:
        raise InputError(f"{where}: {ev.samples.spec.n_channels} channels, the model takes {cfg.n_in}")
    if ev.n_classes != cfg.n_classes:
        raise InputError(f"{where}: {ev.n_classes} classes, the model has {cfg.n_classes}")
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    res = run_split(model, ev.samples, limit=limit, kind=cfg.kind, device=dev)
    rates = list(res["rates"]) + [0.0] * (len(cfg.sizes) - len(res["rates"]))  # ANNs: rates unused, padded
    rows = config_ops(cfg, rates)
    return {
        "checkpoint": ckpt["path"], "model": cfg.kind, "layers": cfg.layers, "hidden": cfg.hidden,
        "data": ev.name, "split": ev.split, "evaluated_on": ev.what, "protocol": ev.protocol,
        "samples": res["samples"], "set_samples": len(ev.samples), "index": res["index"].tolist(),
        "epoch": ckpt["epoch"], "qat": bool(ckpt.get("qat")), "accuracy": res["accuracy"], "input_rate": res["rates"][0],
        "layer_rates": res["rates"][1:] if cfg.kind in SPIKING else [],
        "ops": [asdict(r) for r in rows], "ops_total": totals(rows), **res["neurobench"],
    }


def format_eval(r: dict) -> str:
    lines = [f"{r['model']} {r['layers']}x{r['hidden']} (epoch {r['epoch']}) on {r['data']}, {r['evaluated_on']}"
             + (f", {r['samples']} of them spread over the classes" if r["samples"] < r["set_samples"] else "") + f": accuracy {100 * r['accuracy']:.2f} %",
             f"input events per channel per step: {r['input_rate']:.4f}"]
    for l, rate in enumerate(r["layer_rates"], 1):
        lines.append(f"layer{l} spikes per neuron per step: {rate:.4f}")
    lines.append(f"{'layer':<9}{'kind':<16}{'m':>6}{'n':>6}{'a_in':>9}{'a_out':>9}{'MAC/step':>13}{'AC/step':>13}")
    for o in r["ops"]:
        lines.append(f"{o['name']:<9}{o['kind']:<16}{o['m']:>6}{o['n']:>6}{o['a_in']:>9.4f}{o['a_out']:>9.4f}"
                     f"{o['mac']:>13.1f}{o['ac']:>13.1f}")
    t = r["ops_total"]
    lines.append(f"{'total':<55}{t['mac']:>13.1f}{t['ac']:>13.1f}   (MAC+AC {t['ops']:.1f} per step per sample)")
    return "\n".join(lines)
