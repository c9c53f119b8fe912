"""`cli.py finetune`: quantization-aware fine-tuning of a float spiking checkpoint with the exact fixed-point
forward (export/qat.py's FixedPointNet) under train.trainer's loop."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from common.atomic import atomic_path, check_output
from common.errors import InputError
from common.rundir import run_lock
from export.qat import FixedPointNet
from train.checkpoint import load_checkpoint, save_checkpoint
from train.distributed import resolve_device
from train.models import SPIKING, ModelConfig, model_from_checkpoint
from train.trainer import TrainConfig, accuracy, load_data, model_config, train


def finetune(init_checkpoint: str | Path, out_dir: str | Path, epochs: int = 10, lr: float = 1e-4,
             data: str | None = None, batch: int | None = None, progress: bool = True, device: str = "cpu") -> dict:
    """Quantization-aware fine-tuning of a float spiking checkpoint with the fixed-point forward.

    Runs train.trainer.train (Adam, max-over-time loss, the study's recipe whatever the model was trained with,
    tqdm per epoch, atomic best.pt/last.pt, metrics.jsonl; the model's own data protocol, so a speaker-held-out
    model never sees its test speaker) on FixedPointNet(model) initialised from `init_checkpoint`, selecting on the
    fixed-point validation accuracy; the starting weights count as epoch 0, so best.pt is never
    worse on validation than the input. Checkpoints have the training format plus "qat": True and
    "qat_init". Returns float and fixed-point accuracies before and after (see format_finetune).
    """
    out_dir = Path(out_dir)
    ckpt = load_checkpoint(init_checkpoint)
    check_output(out_dir, [ckpt["path"]], kind="run", hint="pick another --out")
    with run_lock(out_dir):
        check_output(out_dir, [ckpt["path"]], kind="run", hint="pick another --out")
        return _finetune_locked(ckpt, out_dir, epochs, lr, data, batch, progress, device)


def _finetune_locked(ckpt: dict, out_dir: Path, epochs: int, lr: float, data: str | None, batch: int | None,
                     progress: bool, device: str) -> dict:
    mcfg = ModelConfig(**ckpt["model"])
    if mcfg.kind not in SPIKING:
        raise InputError(f"{ckpt['path']}: a {mcfg.kind} model is an ANN baseline; only lif, cuba-lif and "
                         "spikgru run in fixed point")
    spec = ckpt.get("data", {}).get("spec", {})
    try:
        base = TrainConfig(**ckpt["train_config"]) if "train_config" in ckpt else \
            TrainConfig(model=mcfg.kind, layers=mcfg.layers, hidden=mcfg.hidden, options=dict(mcfg.options))
    except TypeError as exc:
        raise InputError(f"{ckpt['path']}: unreadable train_config ({exc})") from None
    # the model's own config wins over its train_config; the binning is the one it was trained with
    cfg = replace(base, model=mcfg.kind, layers=mcfg.layers, hidden=mcfg.hidden, options=dict(mcfg.options),
                  epochs=epochs, lr=lr, data=data or base.data, batch=base.batch if batch is None else batch, recipe={},
                  device=device,
                  bin_hz=spec.get("bin_hz", base.bin_hz), duration=spec.get("duration", base.duration),
                  channels=spec.get("n_channels", base.channels))
    cfg.validate()
    dataset = load_data(cfg)
    have = model_config(cfg, dataset)
    if (have.n_in, have.n_classes) != (mcfg.n_in, mcfg.n_classes):
        raise InputError(f"{cfg.data}: {have.n_in} channels and {have.n_classes} classes, the model takes "
                         f"{mcfg.n_in} and has {mcfg.n_classes}")

    model = model_from_checkpoint(ckpt)
    fixed = FixedPointNet(model)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}

    dev = resolve_device(device)
    model.to(dev)
    acc = lambda m, split: accuracy(m, split, device=dev)

    def measure() -> dict:
        return {"float": {"valid": acc(model, dataset.valid), "test": acc(model, dataset.test)},
                "fixed": {"valid": acc(fixed, dataset.valid), "test": acc(fixed, dataset.test)}}

    before = measure()
    summary = train(cfg, out_dir, progress=progress, model=fixed)  # leaves best.pt's weights in `model`
    best = load_checkpoint(out_dir / "best.pt")
    if before["fixed"]["valid"] >= best["best_valid"]:  # fine-tuning did not beat the start: keep the start
        best.update(state_dict=init_state, epoch=0, best_valid=before["fixed"]["valid"])
        model.load_state_dict(init_state)
        after = before
    else:  # train() measured the fixed-point accuracies of best.pt already
        after = {"float": {"valid": acc(model, dataset.valid), "test": acc(model, dataset.test)},
                 "fixed": {"valid": best["best_valid"], "test": summary["test_acc"]}}
    marks = {"qat": True, "qat_init": str(ckpt["path"])}
    for name in ("last.pt", "best.pt"):
        payload = best if name == "best.pt" else load_checkpoint(out_dir / name)
        payload.pop("path", None)
        save_checkpoint(out_dir / name, {**payload, **marks})
    summary.update(best_epoch=best["epoch"], best_valid_acc=after["fixed"]["valid"], test_acc=after["fixed"]["test"],
                   qat=True, qat_init=str(ckpt["path"]), before=before, after=after)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def format_finetune(r: dict) -> str:
    """The side-by-side table of float and fixed-point accuracy before and after fine-tuning."""
    lines = [f"{r['model']} {r['layers']}x{r['hidden']} on {r['data']}: quantization-aware fine-tuning, "
             f"{r['epochs']} epoch(s), best epoch {r['best_epoch']} (0 = the starting weights)",
             f"{'':<8}{'float valid':>13}{'fixed valid':>13}{'float test':>12}{'fixed test':>12}"]
    for name in ("before", "after"):
        a = r[name]
        lines.append(f"{name:<8}{100 * a['float']['valid']:>11.2f} %{100 * a['fixed']['valid']:>11.2f} %"
                     f"{100 * a['float']['test']:>10.2f} %{100 * a['fixed']['test']:>10.2f} %")
    lines.append(f"fine-tuned checkpoint: {r['run_dir']}/best.pt (export it: the exported network scores the 'fixed "
                 "test' accuracy above)")
    return "\n".join(lines)

