"""The study's max-over-time loss: each readout unit's maximum over time, then cross-entropy."""
import torch
import torch.nn.functional as F


def max_over_time_loss(out: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """out [B, T, K] readout values; labels [B] class indices."""
    return F.cross_entropy(out.max(dim=1).values, labels, label_smoothing=label_smoothing)


def predict(out: torch.Tensor) -> torch.Tensor:
    """Class with the largest maximum over time."""
    return out.max(dim=1).values.argmax(dim=1)
