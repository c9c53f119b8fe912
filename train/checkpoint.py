"""Checkpoints: model kind + config + float weights (+ optimiser and history to resume).

Written atomically (temp file + rename) so a run killed at any instant leaves the
previous checkpoint intact; read back with every field checked, so a file from
another model or a corrupted one is a one-line error, not a traceback.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import atomic_path
from common.errors import InputError

FORMAT = "spikaudio-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "model", "state_dict", "epoch")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, expect_kind: str | None = None) -> dict:
    """Loads and validates a checkpoint; `expect_kind` refuses one of another model kind."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise InputError(f"{path}: no best.pt or last.pt in this run directory")
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path}: not a spikaudio checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if ckpt["version"] != VERSION:
        raise InputError(f"{path}: checkpoint version {ckpt['version']}, this toolchain reads {VERSION}")
    model = ckpt["model"]
    for key in ("kind", "n_in", "n_classes", "layers", "hidden"):
        if key not in model:
            raise InputError(f"{path}: checkpoint model config lacks '{key}'")
    if expect_kind is not None and model["kind"] != expect_kind:
        raise InputError(f"{path}: checkpoint is a {model['kind']} model, expected {expect_kind}")
    for name, tensor in ckpt["state_dict"].items():
        if not torch.is_tensor(tensor):
            raise InputError(f"{path}: parameter {name} is not a tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{path}: parameter {name} holds NaN or inf")
    ckpt["path"] = str(path)
    return ckpt


def checkpoint_origin(ckpt: dict) -> dict:
    """audio.datasets.origin_of for a loaded checkpoint (older checkpoints: what they record; an imported NIR graph:
    no dataset)."""
    from audio.datasets import origin_of
    tc, data = ckpt.get("train_config", {}), ckpt.get("data", {})
    layout = data.get("layout") or ("das" if data.get("name") == "das" else "shd")
    # an imported NIR graph was trained elsewhere: it has no dataset of its own (eval --data FILE)
    return origin_of(tc.get("data", None if "nir" in ckpt else "builtin"), tc.get("seed", 0), tc.get("holdout_speaker"),
                     tc.get("valid_speaker") or "auto", data.get("spec", {}), layout)
