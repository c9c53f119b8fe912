"""The mean of a model's weights over the last steps of its training (stochastic weight averaging, Izmailov et al.
2018; averaged after every step, as SWAD, Cha et al. 2021, does for domains never seen). Many weights fit the
training voices equally well and differ on a new one; one training ends on a draw among them, the average nearer
their centre."""
from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    """The running mean of a model's floating-point state after each update (other entries: the latest)."""

    def __init__(self, state: dict | None = None, count: int = 0):
        self.state, self.count = state, count

    def to(self, device: torch.device | str) -> "WeightAverage":
        """On the model's device (a resumed average is read onto the CPU)."""
        if self.state is not None:
            self.state = {k: v.to(device) for k, v in self.state.items()}
        return self

    def update(self, model: torch.nn.Module) -> None:
        self.count += 1
        current = model.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        for k, v in current.items():
            if v.is_floating_point():
                self.state[k] += (v.detach() - self.state[k]) / self.count
            else:
                self.state[k].copy_(v)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Inside the block the model holds the averaged weights (none yet: its own), after it its own again."""
        if self.state is None:
            yield
            return
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(own)
