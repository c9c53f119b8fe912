"""Readout losses: the study's max over time, and two that score every step.

The class of a sample is always the readout unit with the largest maximum over time (`predict`): that is what
the exported network reports (readout maxima), whichever loss trained it."""
import torch
import torch.nn.functional as F


def max_over_time_loss(out: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The study's: out [B, T, K] readout values, each unit's maximum over time, then cross-entropy."""
    return F.cross_entropy(out.max(dim=1).values, labels, label_smoothing=label_smoothing)


def softmax_mean_loss(out: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """-log of the per-step softmax averaged over time: every step votes, a confident step cannot carry a sample
    alone (the mean and the sum differ by the constant log T)."""
    log_p = torch.logsumexp(F.log_softmax(out, dim=2), dim=1) - torch.log(torch.tensor(float(out.shape[1])))
    nll = -log_p.gather(1, labels[:, None]).squeeze(1)
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * log_p.mean(dim=1)
    return nll.mean()


def ce_mean_loss(out: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of every step's readout, averaged over steps."""
    B, T, K = out.shape
    return F.cross_entropy(out.reshape(B * T, K), labels.repeat_interleave(T), label_smoothing=label_smoothing)


LOSS_FUNCTIONS = {"max": max_over_time_loss, "softmax-mean": softmax_mean_loss, "ce-mean": ce_mean_loss}


def readout_loss(out: torch.Tensor, labels: torch.Tensor, loss: str = "max",
                 label_smoothing: float = 0.0) -> torch.Tensor:
    return LOSS_FUNCTIONS[loss](out, labels, label_smoothing)


def distillation_loss(out: torch.Tensor, teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softmax at `temperature` of each readout unit's maximum over time (what the
    class is read from), times temperature^2 so its gradients keep their scale (Hinton et al. 2015)."""
    log_student = F.log_softmax(out.max(dim=1).values / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_out.max(dim=1).values / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature ** 2


def predict(out: torch.Tensor) -> torch.Tensor:
    """Class with the largest maximum over time."""
    return out.max(dim=1).values.argmax(dim=1)
