"""Checkpoints: model kind + config + float weights (+ optimiser and history to resume), and a finished run's
best checkpoint as the teacher of another run.

Written atomically (temp file + rename) so a run killed at any instant leaves the
previous checkpoint intact; read back with every field checked, so a file from
another model or a corrupted one is a one-line error, not a traceback.

A teacher's answers on the training samples are learnt besides the labels (knowledge distillation, Hinton et al.
2015; the recipe's `distill` weighs them, train.loss.distillation_loss). Why: on voices never heard the GRU 2x128
scores above the spiking models (docs/RESULTS.md), and its soft answers say which digits sound alike to it, which
one-hot labels do not. A teacher is blind to the student's test samples or it is refused: it held out the same
test split (same data, same held-out speaker), and with a speaker held out, no speaker the teacher trained or
validated on is one the student is scored on.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from common.atomic import atomic_path
from common.errors import InputError
from train.models import model_from_checkpoint
from train.projection import dense_input

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


@dataclass
class Teacher:
    run: Path
    model: torch.nn.Module  # eval mode, no gradients
    epoch: int  # of its best.pt: a run resumed with another teacher would not be the run it began as


def teacher_run(teacher: str | Path, holdout_speaker: str | None, seed: int) -> Path:
    """The teacher's run directory, finished: `teacher` itself, or, for a cross-validation directory (cv.json), its
    fold that holds out the same speaker with the same seed."""
    path = Path(teacher)
    if (path / "cv.json").is_file():
        from train.crossval import fold_dir
        if holdout_speaker is None:
            raise InputError(f"--teacher {path}: a cross-validation's folds hold out speakers; this run holds out none")
        fold = fold_dir(path, holdout_speaker, seed)
        if not (fold / "summary.json").is_file():
            raise InputError(f"--teacher {path}: its fold holding out {holdout_speaker} with seed {seed} ({fold}) "
                             "is not a finished run")
        return fold
    if not (path / "summary.json").is_file():
        raise InputError(f"--teacher {path}: not a finished run (no summary.json)")
    return path


def _same_data(a: str, b: str) -> bool:
    norm = (lambda p: p if p == "builtin" else os.path.normpath(os.path.abspath(os.path.expanduser(p))))
    return norm(str(a)) == norm(str(b))


def load_teacher(run: Path, data, n_in: int, n_classes: int, cfg_data: str, holdout_speaker: str | None) -> Teacher:
    """The teacher in run directory `run`, checked blind to `data`'s test split."""
    summary_path = run / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"--teacher {run}: not a finished run (unreadable summary.json)") from None
    ckpt = load_checkpoint(run / "best.pt")
    tc = ckpt.get("train_config", {})
    if not _same_data(tc.get("data", ""), cfg_data) or tc.get("holdout_speaker") != holdout_speaker:
        raise InputError(f"--teacher {run}: trained on {tc.get('data')} holding out {tc.get('holdout_speaker')}; "
                         f"this run uses {cfg_data} holding out {holdout_speaker}: a teacher must hold out the same "
                         "test samples")
    if holdout_speaker is not None:
        split = summary.get("split_speakers") or {}
        heard = set(split.get("train", [])) | set(split.get("valid", []))
        if not heard:
            raise InputError(f"--teacher {run}: records no speakers of its samples (trained before teachers existed)")
        if heard & set(data.test.speaker_set()):
            raise InputError(f"--teacher {run}: it heard {', '.join(sorted(heard & set(data.test.speaker_set())))}, "
                             "whom this run is scored on")
    spec = (ckpt.get("data") or {}).get("spec")
    if spec != data.spec.__dict__ or ckpt["model"]["n_in"] != n_in or ckpt["model"]["n_classes"] != n_classes:
        raise InputError(f"--teacher {run}: binned or shaped otherwise ({spec}, {ckpt['model']['n_in']} inputs, "
                         f"{ckpt['model']['n_classes']} classes) than this run ({data.spec.__dict__}, {n_in}, "
                         f"{n_classes})")
    model = model_from_checkpoint(ckpt)
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(run, model, int(ckpt["epoch"]))


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, x) -> torch.Tensor:
    """The teacher's readout [B, T, K] for a batch (dense, or events where the teacher takes them)."""
    if not getattr(teacher, "takes_events", False):
        x = dense_input(x, next(teacher.parameters()))
    return teacher(x)
