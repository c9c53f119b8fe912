"""Test accuracy, activity rates and predicted ops of a checkpoint (`cli.py eval`).

Rates are averages over the split's samples and all timesteps: a_in of the first
layer is input events per channel per step (a spike count of 3 is 3 events);
every other a_in is the previous layer's spikes per neuron per step.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from train.checkpoint import load_checkpoint
from train.datasets import load_dataset
from train.errors import InputError
from train.loss import predict
from train.models import SPIKING, ModelConfig, model_from_checkpoint
from train.ops import model_ops, totals


@torch.no_grad()
def run_split(model: torch.nn.Module, split, batch: int = 256, limit: int | None = None) -> dict:
    """Predictions, accuracy and mean activity of each layer over a split."""
    n = len(split) if limit is None else min(limit, len(split))
    preds, event_sums, samples = [], None, 0
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        x = split.dense(idx)
        out, hidden = model(x, return_hidden=True)
        preds.append(predict(out))
        sums = [float(x.sum())] + [float(h.sum()) for h in hidden]
        event_sums = sums if event_sums is None else [a + b for a, b in zip(event_sums, sums)]
        samples += len(idx)
    pred = torch.cat(preds).numpy()
    steps = split.spec.n_steps
    widths = [split.spec.n_channels] + [h.shape[-1] for h in hidden]
    rates = [s / (samples * steps * w) for s, w in zip(event_sums, widths)]
    return {"pred": pred, "accuracy": float((pred == split.labels[:n]).mean()), "rates": rates, "samples": samples}


def evaluate(checkpoint: str, data: str | None = None, split: str = "test", limit: int | None = None) -> dict:
    """Everything `cli.py eval` prints, as a plain dict."""
    ckpt = load_checkpoint(checkpoint)
    cfg = ModelConfig(**ckpt["model"])
    tc = ckpt.get("train_config", {})
    spec = ckpt.get("data", {}).get("spec", {})
    dataset = load_dataset(data or tc.get("data", "builtin"), bin_hz=spec.get("bin_hz"),
                           duration=spec.get("duration"), n_channels=spec.get("n_channels"), seed=tc.get("seed", 0))
    if dataset.spec.n_channels != cfg.n_in:
        raise InputError(f"{data}: {dataset.spec.n_channels} channels, the model takes {cfg.n_in}")
    if dataset.n_classes != cfg.n_classes:
        raise InputError(f"{data}: {dataset.n_classes} classes, the model has {cfg.n_classes}")
    if split not in ("train", "valid", "test"):
        raise InputError(f"--split {split}: choose train, valid or test")
    model = model_from_checkpoint(ckpt)
    res = run_split(model, getattr(dataset, split), limit=limit)
    rates = res["rates"] if cfg.kind in SPIKING else res["rates"][:1]
    rows = model_ops(cfg.kind, cfg.sizes, cfg.n_classes, rates)
    return {
        "checkpoint": ckpt["path"], "model": cfg.kind, "layers": cfg.layers, "hidden": cfg.hidden,
        "data": dataset.name, "split": split, "samples": res["samples"], "epoch": ckpt["epoch"],
        "accuracy": res["accuracy"], "input_rate": res["rates"][0],
        "layer_rates": res["rates"][1:] if cfg.kind in SPIKING else [],
        "ops": [asdict(r) for r in rows], "ops_total": totals(rows),
    }


def format_eval(r: dict) -> str:
    lines = [f"{r['model']} {r['layers']}x{r['hidden']} (epoch {r['epoch']}) on {r['data']} {r['split']} "
             f"({r['samples']} samples): accuracy {100 * r['accuracy']:.2f} %",
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
