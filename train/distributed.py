"""Where training runs: the device (`--device auto|cpu|cuda|cuda:N`) and, under `torchrun`, the process group.

`torchrun --nproc-per-node N cli.py train ...` starts N copies with RANK / WORLD_SIZE / LOCAL_RANK set; each
joins the group (gloo on the CPU, nccl on CUDA) and trains a shard of every batch (train.loader), with
DistributedDataParallel averaging the gradients. Rank 0 alone holds the run directory's lock, writes the
checkpoints and metrics and shows progress. Several machines: torchrun's --nnodes, --node-rank and
--rdzv-endpoint (README).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import InputError

DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str = "cpu", local_rank: int = 0) -> torch.device:
    """The torch device for `--device`; auto: this process's CUDA device when there is one, else the CPU."""
    spec = (spec or "cpu").strip().lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        index = local_rank if spec == "cuda" else spec.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(f"cuda:{int(index)}")
    raise InputError(f"--device {spec!r}: choose {DEVICES}")


@dataclass
class Context:
    """This process's place in the run."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @contextlib.contextmanager
    def peers(self, what: str):
        """A collective that fails because another rank died becomes one line (torchrun stops the rest)."""
        try:
            yield
        except RuntimeError as exc:
            if not self.distributed:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{what}: rank {self.rank} lost another torchrun process ({first}); "
                             "the last complete checkpoint is kept") from None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """The values summed over all ranks (float64 on the CPU for gloo, on the device for nccl)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()


def setup(device: str = "cpu") -> Context:
    """This process's context: under torchrun (WORLD_SIZE > 1) it joins the process group first."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(dev, dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """False in a torchrun worker other than rank 0 (which alone prints results)."""
    return int(os.environ.get("RANK", "0")) == 0


def describe(ctx: Context) -> str:
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "CPU"
    where = f"{ctx.device} ({name})"
    return where + (f", rank {ctx.rank} of {ctx.world} (torchrun)" if ctx.distributed else "")
