"""The study's training recipe: Adam, max-over-time loss, model chosen on validation.

A run directory holds `config.json`, `metrics.jsonl` (one line per epoch),
`last.pt` (resume point) and `best.pt` (the epoch kept: best validation accuracy,
or the last, recipe.keep). Each epoch's shuffle and jitter draw from a generator
seeded by (seed, epoch), and the checkpoint carries the optimiser state and the
metric history, so a run resumed after any interruption (SIGKILL included) ends
with the weights of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_swa_avg_fn
from tqdm import tqdm

from audio.binning import Augment
from audio.datasets import Dataset, load_dataset
from audio.speakers import AUTO
from common.atomic import atomic_path, check_output
from common.errors import InputError
from common.progress import progress_bar
from common.rundir import run_lock
from train.checkpoint import Teacher, load_checkpoint, load_teacher, save_checkpoint, teacher_outputs, teacher_run
from train.distributed import Context, describe, resolve_device, setup
from train.loader import epoch_batches
from train.loss import distillation_loss, predict, readout_loss
from train.models import MODEL_KINDS, ModelConfig, build_model
from train.projection import PROJECTIONS, choose
from train.recipe import Recipe, lr_at, recipe_from_dict


class TrainingDiverged(InputError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    model: str
    layers: int = 2
    hidden: int = 128
    data: str = "builtin"
    epochs: int = 200
    seed: int = 0
    batch: int | None = None  # None: the dataset's default (128, 512 for SSC)
    lr: float = 1e-3
    jitter: float | None = None  # None: the dataset's default (2 channels for SHD/SSC, 0 for DAS)
    bin_hz: float | None = None
    duration: float | None = None
    channels: int | None = None
    options: dict = field(default_factory=dict)  # layer options, see train.models.ModelConfig
    recipe: dict = field(default_factory=dict)  # train.recipe.Recipe as a dict; empty: the study's
    holdout_speaker: str | None = None  # the speaker-held-out protocol (audio.speakers); None: the dataset's splits
    valid_speaker: str = AUTO
    device: str = "cpu"  # train.distributed.resolve_device: auto, cpu, cuda, cuda:N
    workers: int = 0  # DataLoader processes binning batches (0: in this process)
    input_projection: str = "auto"  # train.projection.choose: auto, dense, sparse (the same results either way)
    teacher: str | None = None  # with the recipe's distill: a finished run, or a cross-validation (train.checkpoint)

    @property
    def recipe_obj(self) -> Recipe:
        return recipe_from_dict(self.recipe)

    def validate(self) -> None:
        if self.model not in MODEL_KINDS:
            raise InputError(f"--model {self.model!r}: unknown, choose one of {', '.join(MODEL_KINDS)}")
        for name in ("layers", "hidden", "epochs"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.batch is not None and self.batch < 1:
            raise InputError(f"--batch must be at least 1, got {self.batch}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.jitter is not None and self.jitter < 0:
            raise InputError(f"--jitter must be >= 0, got {self.jitter}")
        if self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        if self.input_projection not in PROJECTIONS:
            raise InputError(f"--input-projection {self.input_projection!r}: choose one of {', '.join(PROJECTIONS)}")
        self.recipe_obj.validate()
        if (self.recipe_obj.distill > 0) != (self.teacher is not None):
            raise InputError(f"--distill {self.recipe_obj.distill} and --teacher {self.teacher}: give both (a weight "
                             "> 0 and a teacher run) or neither")
        ModelConfig(self.model, 1, 1, self.layers, self.hidden, dict(self.options)).validate()
        check_memory(self)


def check_memory(cfg: TrainConfig) -> None:
    """Refuses, before anything is allocated, a model whose parameters, optimiser state and one batch's
    activations cannot fit in this machine's memory (a rough lower bound: 4 bytes per value)."""
    from audio.datasets import LAYOUTS
    n_in = cfg.channels or LAYOUTS["shd"]["n_channels"]
    steps = int(round((cfg.duration or 1.25) * (cfg.bin_hz or 250)))
    gates = 3 if cfg.model in ("gru", "spikgru") else 1
    params = cfg.layers * gates * cfg.hidden * (n_in + cfg.hidden + 1)
    activations = (cfg.batch or 512) * steps * cfg.hidden * cfg.layers * 6
    need = 4 * (4 * params + activations)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise InputError(f"--hidden {cfg.hidden} x --layers {cfg.layers} (batch {cfg.batch or 'default'}) needs at "
                         f"least {need / 2**30:.1f} GiB, this machine has {have / 2**30:.1f} GiB")


def load_data(cfg: TrainConfig) -> Dataset:
    return load_dataset(cfg.data, bin_hz=cfg.bin_hz, duration=cfg.duration, n_channels=cfg.channels, seed=cfg.seed,
                        holdout_speaker=cfg.holdout_speaker, valid_speaker=cfg.valid_speaker)


def model_config(cfg: TrainConfig, data: Dataset) -> ModelConfig:
    return ModelConfig(cfg.model, data.spec.n_channels, data.n_classes, cfg.layers, cfg.hidden, dict(cfg.options))


@torch.no_grad()
def predictions(model: torch.nn.Module, split, batch: int = 256, device: torch.device | str = "cpu",
                events: bool = False) -> np.ndarray:
    """The model's class for every sample of a binned split, in order; events: feed the model EventBatches
    (train.projection), as its training does."""
    model.eval()
    return np.concatenate([predict(model(x.to(device))).cpu().numpy() for x, _ in split.batches(batch, events=events)]
                          or [np.zeros(0, dtype=np.int64)])


def accuracy(model: torch.nn.Module, split, batch: int = 256, device: torch.device | str = "cpu",
             events: bool = False) -> float:
    return float((predictions(model, split, batch, device, events) == split.labels).sum()) / max(1, len(split))


def accuracy_by_speaker(pred: np.ndarray, split) -> dict[str, float]:
    """Accuracy on each speaker's samples ({} when the split has no speaker ids)."""
    if split.speakers is None:
        return {}
    return {name: float((pred[split.speakers == name] == split.labels[split.speakers == name]).mean())
            for name in split.speaker_set()}


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    with atomic_path(run_dir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


def _payload(cfg: TrainConfig, mcfg: ModelConfig, data: Dataset, model, opt, epoch: int, history: list, best: float,
             frontend: dict | None = None) -> dict:
    return {
        "model": asdict(mcfg), "train_config": asdict(cfg), "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(), "epoch": epoch, "history": history, "best_valid": best,
        "data": {"name": data.name, "layout": data.source.layout, "spec": data.spec.__dict__,
                 "class_names": data.class_names, "protocol": data.protocol, "frontend": frontend},
    }


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam (the study's); AdamW when the recipe decays weights."""
    if recipe.weight_decay > 0:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def with_silence(x, steps: int):
    """A batch (dense [B, T, C] or EventBatch) followed by `steps` silent steps per sample."""
    if isinstance(x, torch.Tensor):
        return torch.cat([x, x.new_zeros(x.shape[0], steps, x.shape[2])], dim=1)
    return x.with_silence(steps)


def quiet_penalty(model: torch.nn.Module, hidden: list[torch.Tensor], T: int) -> torch.Tensor:
    """Mean over hidden layers of what keeps a layer firing after its input has stopped (steps T on): its spikes
    there, and the drive its own spikes and bias give it, relu(U s_{t-1} + b). The drive's gradient needs no
    surrogate, so it reaches the recurrent weights of neurons that fire every step, far above threshold, where the
    spikes' surrogate gradient is zero: the self-exciting sets that latch a network on."""
    layers = getattr(model, "hidden_layers", None) or getattr(getattr(model, "net", None), "hidden_layers", [])
    terms = []
    for layer, h in zip(layers, hidden):
        drive = torch.relu(h[:, T - 1:-1] @ layer.U.t() + layer.b)
        terms.append(h[:, T:].mean() + drive.mean())
    return torch.stack(terms).mean()


def _rate_penalty(hidden: list[torch.Tensor], target: float = 0.0) -> torch.Tensor:
    """Mean over hidden layers of their spikes per neuron per step or, with a target rate, of each neuron's squared
    miss of it (silent and saturated neurons pay most: they are what makes one seed unlike the next)."""
    if target > 0:
        return torch.stack([((h.mean(dim=(0, 1)) - target) ** 2).mean() for h in hidden]).mean()
    return torch.stack([h.mean() for h in hidden]).mean()


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          model: torch.nn.Module | None = None, within: str | Path | None = None) -> dict:
    """Trains (or resumes) a run; returns a summary with best validation and its test accuracy.

    `model`: train this module (built for cfg, e.g. export.qat's fixed-point wrapper of a loaded
    model, whose state_dict is the float model's) instead of a freshly initialised one. `within`: the
    cross-validation or nested study this run belongs to (any other study above RUN_DIR is refused). Under
    torchrun (train.distributed) every rank calls this; rank 0 alone locks and writes the run directory."""
    run_dir = Path(run_dir)
    cfg.validate()
    ctx = setup(cfg.device)
    fresh = "use --resume {dir} to continue it or pick another --out"
    if ctx.main:
        check_output(run_dir, kind="run", resume=resume, within=within, hint=fresh)  # before the directory is made
    data = load_data(cfg)
    teacher = taught_by(cfg, data)  # refused, if it is, before the run directory is made
    if not ctx.main:
        ctx.barrier()  # rank 0 has checked and locked the directory (or failed, and torchrun stops us)
        return _train_locked(cfg, run_dir, resume, progress, model, ctx, data, teacher)
    with run_lock(run_dir):
        check_output(run_dir, kind="run", resume=resume, within=within, hint=fresh)
        ctx.barrier()
        return _train_locked(cfg, run_dir, resume, progress, model, ctx, data, teacher)


def taught_by(cfg: TrainConfig, data: Dataset) -> Teacher | None:
    """The teacher of a run that distills (train.checkpoint), checked; None: no teacher."""
    if not cfg.teacher:
        return None
    run = teacher_run(cfg.teacher, cfg.holdout_speaker, cfg.seed)
    mcfg = model_config(cfg, data)
    return load_teacher(run, data, mcfg.n_in, mcfg.n_classes, cfg.data, cfg.holdout_speaker)


def _train_locked(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool, model: torch.nn.Module | None,
                  ctx: Context, data: Dataset, teacher: Teacher | None) -> dict:
    mcfg = model_config(cfg, data)
    recipe = cfg.recipe_obj
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg) if model is None else model
    if recipe.dropout > 0:
        model.set_dropout(recipe.dropout)
    start, history, best = 0, [], -1.0
    ckpt = None
    if resume and (run_dir / "last.pt").exists():
        # best.pt too, before any epoch: it is what the run reports at its end; last.pt's weights are loaded last
        for name in ("best.pt", "last.pt"):
            if (run_dir / name).exists():
                ckpt = _load_fitting(run_dir / name, model, cfg.model)
        start, history, best = ckpt["epoch"], ckpt["history"], ckpt["best_valid"]
        if teacher is not None and ckpt.get("teacher_epoch") != teacher.epoch:
            raise InputError(f"{run_dir}: began with its teacher's epoch {ckpt.get('teacher_epoch')}, {teacher.run} "
                             f"now keeps epoch {teacher.epoch}: resumed, it would not be the run it began as")
        if "trained_state_dict" in ckpt:  # an averaging run: it goes on from its own weights (and its average)
            model.load_state_dict(ckpt["trained_state_dict"])
    elif resume and ctx.main:
        print(f"{run_dir}: no checkpoint yet (stopped during epoch 1): starting from epoch 1", file=sys.stderr)
    model.to(ctx.device)
    average = _weight_average(model, recipe, cfg.epochs, ckpt, run_dir)
    opt = _optimizer(model, cfg, recipe)
    if ckpt is not None:
        try:
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"{run_dir / 'last.pt'}: its optimizer state does not fit ({exc})") from None
    net = DistributedDataParallel(model) if ctx.distributed else model  # averages the ranks' gradients
    if ctx.main:
        with atomic_path(run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(asdict(cfg), indent=2))
    batch = cfg.batch or data.default_batch
    augment = Augment(data.default_jitter if cfg.jitter is None else cfg.jitter,
                      recipe.shift_channels(data.spec.n_channels), recipe.time_stretch, recipe.event_drop,
                      recipe.spectral_tilt, recipe.blend)
    frontend = data.frontend
    events, projection = choose(cfg.input_projection, ctx.device, getattr(model, "takes_events", False),
                                data.train.density)
    if teacher is not None:
        teacher.model.to(ctx.device)
    if progress and ctx.main:
        print(f"training on {describe(ctx)}", file=sys.stderr, flush=True)
        print(f"input projection: {projection}", file=sys.stderr, flush=True)
        print(f"recipe: {recipe.name} ({recipe.describe()})", file=sys.stderr, flush=True)
        if teacher is not None:
            print(f"teacher: {teacher.run} (epoch {teacher.epoch})", file=sys.stderr, flush=True)
    with ctx.peers(str(run_dir)):
        history, best = _epochs(cfg, run_dir, data, mcfg, model, net, opt, recipe, augment, batch, frontend, start,
                                history, best, progress, ctx, events, average, teacher)
    best_ckpt = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best_ckpt["state_dict"])
    test_pred = predictions(model, data.test, device=ctx.device, events=events)
    summary = {"run_dir": str(run_dir), "model": cfg.model, "layers": cfg.layers, "hidden": cfg.hidden,
               "seed": cfg.seed, "data": data.name, "epochs": len(history), "best_epoch": best_ckpt["epoch"],
               "best_valid_acc": best, "test_acc": float((test_pred == data.test.labels).mean()) if len(test_pred) else 0.0,
               "recipe": recipe.name, "protocol": data.protocol, "test_samples": len(data.test),
               "test_acc_by_speaker": accuracy_by_speaker(test_pred, data.test),
               # who spoke the samples each split really held: what any choice made with this run has seen
               "split_speakers": {k: getattr(data, k).speaker_set() for k in ("train", "valid", "test")},
               "input_projection": "sparse" if events else "dense",
               **({"teacher": str(teacher.run)} if teacher is not None else {})}
    if ctx.main:
        with atomic_path(run_dir / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    ctx.barrier()
    return summary


def _weight_average(model: torch.nn.Module, recipe: Recipe, epochs: int, ckpt: dict | None,
                    run_dir: Path) -> AveragedModel | None:
    """The running mean of the weights after each step of the recipe's window (torch's SWA: Izmailov et al. 2018;
    after every step, as SWAD, Cha et al. 2021, does for domains never seen), None for a recipe that averages
    nothing. Many weights fit the training voices equally well and differ on a new one; one training ends on a
    draw among them, the average nearer their centre. A resumed run goes on with its own average, or an empty one
    when it trains on to more epochs and the new window lies ahead; a window that would begin among the epochs
    already averaged cannot be had."""
    if not recipe.average:
        return None
    average = AveragedModel(model, avg_fn=get_swa_avg_fn())
    if ckpt is None or "average_count" not in ckpt:
        return average
    was, now, done = (recipe.first_averaged_epoch(ckpt["train_config"]["epochs"]),
                      recipe.first_averaged_epoch(epochs), ckpt["epoch"])
    if was == now:
        average.module.load_state_dict(ckpt["state_dict"])
        average.n_averaged.fill_(ckpt["average_count"])
    elif now <= done:
        raise InputError(f"{run_dir}: its weights are averaged from epoch {was} on; {epochs} epochs would average "
                         f"from epoch {now}, which it has trained past: train a new run for {epochs} epochs")
    return average


def _load_fitting(path: Path, model: torch.nn.Module, kind: str) -> dict:
    """The checkpoint at PATH, loaded into `model`; one that does not fit the run's config is an InputError."""
    ckpt = load_checkpoint(path, expect_kind=kind)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: does not fit the run's config.json ({first})") from None
    return ckpt


def _epochs(cfg: TrainConfig, run_dir: Path, data: Dataset, mcfg: ModelConfig, model: torch.nn.Module,
            net: torch.nn.Module, opt, recipe: Recipe, augment: Augment, batch: int, frontend: dict | None,
            start: int, history: list, best: float, progress: bool, ctx: Context,
            events: bool, average: AveragedModel | None, teacher: Teacher | None) -> tuple[list, float]:
    """Epochs start + 1 .. cfg.epochs, each ending with its checkpoints (rank 0); returns (history, best).
    events: batches as EventBatches (train.projection). From recipe.first_averaged_epoch on, `average` takes the
    weights after every step, and each epoch validates and keeps the average (its checkpoints hold the trained
    weights too, to go on from). teacher: the model whose answers on each batch the loss also scores
    (recipe.distill)."""
    with_hidden = recipe.rate_reg > 0 or recipe.quiet_reg > 0
    first_averaged = recipe.first_averaged_epoch(cfg.epochs)
    for epoch in range(start + 1, cfg.epochs + 1):
        if recipe.dropout > 0:  # the masks of this epoch, whatever ran before (resume)
            torch.manual_seed(int(np.random.default_rng([cfg.seed, epoch, 1, ctx.rank]).integers(1 << 62)))
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, cfg.lr, epoch, cfg.epochs)
        net.train()
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        bar = progress_bar(len(data.train), f"epoch {epoch}/{cfg.epochs}", progress and ctx.main, lines=False)
        for x, y, n_global in epoch_batches(data.train, batch, cfg.seed, epoch, augment, cfg.workers, ctx.rank,
                                            ctx.world, events):
            x, y = x.to(ctx.device), y.to(ctx.device)
            T = x.shape[1]
            taught = teacher_outputs(teacher.model, x) if teacher is not None else None
            if recipe.quiet_tail:
                x = with_silence(x, recipe.quiet_tail)
            out, hidden = net(x, return_hidden=True) if with_hidden else (net(x), None)
            out, tails = out[:, :T], [h[:, T:] for h in hidden or []]
            loss = readout_loss(out, y, recipe.loss, recipe.label_smoothing)
            if taught is not None:
                loss = ((1 - recipe.distill) * loss +
                        recipe.distill * distillation_loss(out, taught, recipe.distill_temperature))
            if hidden and recipe.rate_reg > 0:
                loss = loss + recipe.rate_reg * _rate_penalty([h[:, :T] for h in hidden], recipe.rate_target)
            if recipe.quiet_tail and tails:
                loss = loss + recipe.quiet_reg * quiet_penalty(model, hidden, T)
            if not all(v == 0 for v in ctx.sum([0.0 if torch.isfinite(loss) else 1.0])):
                bar.close()
                kept = (f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1 else
                        "no checkpoint was written (try a smaller --lr)")
                raise TrainingDiverged(f"{run_dir}: loss became {loss.item()} in epoch {epoch}; stopped, {kept}")
            opt.zero_grad(set_to_none=True)
            # each rank's mean over its shard, weighted so that the averaged gradient is the global batch's mean
            (loss * (len(y) * ctx.world / n_global)).backward()
            opt.step()
            model.clamp_(recipe.decay_min, recipe.decay_max)
            if epoch >= first_averaged:
                average.update_parameters(model)
            seen += len(y)
            correct += int((predict(out.detach()) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.update(n_global)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            sps=f"{seen * ctx.world / (time.perf_counter() - t0):.0f}")
        bar.close()
        loss_sum, correct, seen = ctx.sum([loss_sum, correct, seen])
        averaged = average is not None and int(average.n_averaged) > 0
        valid = accuracy(average.module if averaged else model, data.valid, device=ctx.device, events=events)
        row = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen, "valid_acc": valid,
               "samples_per_s": seen / (time.perf_counter() - t0)}
        history.append(row)
        kept = valid > best or recipe.keep == "last"
        best = valid if kept else best
        if ctx.main:
            payload = _payload(cfg, mcfg, data, model, opt, epoch, history, best, frontend)
            if teacher is not None:
                payload["teacher_epoch"] = teacher.epoch
            if averaged:
                payload.update(trained_state_dict=payload["state_dict"], state_dict=average.module.state_dict(),
                               average_count=int(average.n_averaged))
            if kept:
                save_checkpoint(run_dir / "best.pt", payload)
            save_checkpoint(run_dir / "last.pt", payload)
            _write_metrics(run_dir, history)
            if progress:
                tqdm.write(f"epoch {epoch}: loss {row['loss']:.4f} train {row['train_acc']:.3f} "
                           f"valid {valid:.3f}{f' ({recipe.keep})' if kept else ''} {row['samples_per_s']:.0f} samples/s")
        ctx.barrier()
    return history, best


def config_from_run(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise InputError(f"{run_dir}: not a run directory (no config.json)")
    try:
        return TrainConfig(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"{path}: unreadable run config ({exc})") from None


def train_seeds(cfg: TrainConfig, out: str | Path, n_seeds: int = 1, progress: bool = True) -> list[dict]:
    """Trains seeds cfg.seed .. cfg.seed + n_seeds - 1; several seeds go to out/seed<k>."""
    if n_seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {n_seeds}")
    if n_seeds == 1:
        return [train(cfg, out, progress=progress)]
    return [train(replace(cfg, seed=cfg.seed + k), Path(out) / f"seed{cfg.seed + k}", progress=progress)
            for k in range(n_seeds)]


def resume_runs(run_dir: str | Path, epochs: int | None = None, progress: bool = True) -> list[dict]:
    """Continues a run (or every seed<k> run under a multi-seed directory), optionally to more epochs; a finished
    run (summary.json) with no more epochs asked for is left as it is, its summary marked 'finished_already'."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        dirs = [run_dir]
    else:
        dirs = sorted(p.parent for p in run_dir.glob("seed*/config.json"))
        if not dirs:
            raise InputError(f"{run_dir}: not a run directory (no config.json, no seed*/config.json)")
    summaries = []
    for d in dirs:
        cfg = config_from_run(d)
        done = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
        if done is not None and (epochs is None or epochs <= done["epochs"]):
            if epochs is not None and epochs < done["epochs"]:
                raise InputError(f"--epochs {epochs}: {d} has trained {done['epochs']} epochs already")
            summaries.append({**done, "run_dir": str(d), "finished_already": True})  # nothing to resume
            continue
        if epochs is not None:
            cfg.epochs = epochs
        summaries.append(train(cfg, d, resume=True, progress=progress))
    return summaries


def keep_last_of(src: str | Path, dst: str | Path, recipe: Recipe, within: str | Path | None = None) -> Path:
    """DST: the run `recipe` (which keeps the last epoch) makes, from SRC, a finished run of the same recipe that
    kept its best epoch. Which epoch is kept changes no draw and no update, so the two trained the same weights:
    nothing is trained again; `train --resume DST` (or the nested study DST lies in) scores it."""
    src, dst = Path(src), Path(dst)
    cfg = config_from_run(src)
    had = cfg.recipe_obj
    if not (src / "summary.json").exists() or not (src / "last.pt").exists():
        raise InputError(f"{src}: not a finished run (no summary.json or last.pt)")
    if recipe.keep != "last" or had.keep != "best" or replace(recipe, name=had.name, keep="best") != had:
        raise InputError(f"{src}: its recipe {had.name} is not {recipe.name} keeping its best epoch; train {dst} "
                         "instead")
    cfg.recipe = recipe.as_dict()
    check_output(dst, kind="run", within=within, hint="it exists; remove it to derive it again")
    with run_lock(dst):
        check_output(dst, kind="run", within=within, hint="it exists; remove it to derive it again")
        last = load_checkpoint(src / "last.pt", expect_kind=cfg.model)
        if last["epoch"] != cfg.epochs:
            raise InputError(f"{src}: last.pt holds epoch {last['epoch']} of {cfg.epochs}")
        payload = {k: v for k, v in last.items() if k not in ("format", "version", "path")}
        payload.update(train_config=asdict(cfg), best_valid=last["history"][-1]["valid_acc"])
        with atomic_path(dst / "config.json") as tmp:
            tmp.write_text(json.dumps(asdict(cfg), indent=2))
        _write_metrics(dst, last["history"])
        for name in ("best.pt", "last.pt"):
            save_checkpoint(dst / name, payload)
    return dst


def config_from_options(model: str, layers: int = 2, hidden: int = 128, data: str = "builtin", epochs: int | None = None,
                        seed: int = 0, batch: int | None = None, lr: float = 1e-3, jitter: float | None = None,
                        bin_hz: float | None = None, duration: float | None = None, channels: int | None = None,
                        clip=None, no_clip: bool = False, surrogate_scale: float | None = None,
                        surrogate_width: float | None = None, lava_cuba: bool = False, reset: str | None = None,
                        recipe_name: str | None = None,
                        holdout_speaker: str | None = None, valid_speaker: str = AUTO, device: str = "cpu",
                        workers: int = 0, decay_range=None, input_projection: str = "auto",
                        teacher: str | None = None, **recipe_fields) -> TrainConfig:
    """A TrainConfig from the command line's options (`train`, `cv`); checked before anything runs."""
    from train.recipe import make_recipe
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}")
    if decay_range is not None:
        recipe_fields["decay_min"], recipe_fields["decay_max"] = decay_range
    options = {}
    if no_clip:
        options["clip"] = None
    elif clip is not None:
        options["clip"] = clip
    for key, value in (("surrogate_scale", surrogate_scale), ("surrogate_width", surrogate_width), ("reset", reset)):
        if value is not None:
            options[key] = value
    if lava_cuba:  # Lava's CUBA throughout, and one readout decay as stock netx has
        options["lava_cuba"] = True
        options["shared_readout_decay"] = True
    cfg = TrainConfig(model=model, layers=layers, hidden=hidden, data=data, epochs=200 if epochs is None else epochs,
                      seed=seed, batch=batch, lr=lr, jitter=jitter, bin_hz=bin_hz, duration=duration,
                      channels=channels, options=options, recipe=make_recipe(recipe_name, model, **recipe_fields).as_dict(),
                      holdout_speaker=holdout_speaker, valid_speaker=valid_speaker, device=device, workers=workers,
                      input_projection=input_projection,
                      teacher=None if teacher is None else os.path.abspath(os.path.expanduser(teacher)))
    cfg.validate()
    resolve_device(device)  # an unavailable device is refused before any work
    return cfg
