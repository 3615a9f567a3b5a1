"""Entropy-guided pseudo-label (EGPL): ensemble the restored views, weighted by confidence.

Per pixel, each view v gets the score s_v = Σ_c p_v,c log2(p_v,c + 1e-12), its negative
entropy in bits. The weights w_v = softmax_v(s_v / T) favour the most confident view and
are detached. The ensemble P_ens = Σ_v w_v y_v keeps its gradient, so later losses on it
reach every view. The pseudo-label is argmax_c P_ens, detached, with no threshold.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from helpnet.method.losses import LOG_EPS, class_argmax, soft_dice_loss

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.4


def negative_entropy_bits(probs: torch.Tensor) -> torch.Tensor:
    """Σ_c p_c log2(p_c + 1e-12) of ``(B, C, H, W)`` probabilities, shape ``(B, 1, H, W)``."""
    with torch.autocast(device_type=probs.device.type, enabled=False):
        p = probs.float()
        return (p * torch.log2(p + LOG_EPS)).sum(dim=1, keepdim=True)


def entropy_view_weights(views: Sequence[torch.Tensor], temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Detached per-pixel view weights, shape ``(V, B, 1, H, W)``, summing to 1 over V."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with torch.no_grad():
        scores = torch.stack([negative_entropy_bits(view.detach()) for view in views])
        return torch.softmax(scores / temperature, dim=0)


def weighted_ensemble(
    views: Sequence[torch.Tensor],
    weights: torch.Tensor,
    upstream_broadcast: bool = False,
) -> torch.Tensor:
    """Return Σ_v w_v · y_v with the weights from :func:`entropy_view_weights`.

    By default a pixel's weight multiplies every class of that pixel in the same image. With
    ``upstream_broadcast=True`` the weights lose their class axis, as in HELPNet's released
    code, and broadcasting pairs the batch axis of the weights with the class axis of the
    probabilities: class c of image n gets the weights of image c. That only runs when the
    batch size is 1 or equals the number of classes.
    """
    batch, num_classes = views[0].shape[:2]
    if weights.shape != (len(views), batch, 1, *views[0].shape[2:]):
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not match {len(views)} views of shape {tuple(views[0].shape)}"
        )
    if upstream_broadcast:
        if batch not in (1, num_classes):
            raise ValueError(
                f"upstream_broadcast pairs image index with class index, so it needs batch size 1 or "
                f"batch size == number of classes; got batch {batch} and {num_classes} classes. "
                "Use batch size equal to the class count or set upstream_broadcast=False"
            )
        # (B, 1, H, W) -> (1, B, H, W): the batch axis now lines up with the class axis.
        weights = weights.squeeze(2).unsqueeze(1)
    with torch.autocast(device_type=views[0].device.type, enabled=False):
        ensemble = weights[0] * views[0].float()
        for weight, view in zip(weights[1:], views[1:]):
            ensemble = ensemble + weight * view.float()
    return ensemble


def pseudo_label(ensemble: torch.Tensor) -> torch.Tensor:
    """Return the detached hard label argmax_c of ``(B, C, H, W)`` as ``(B, H, W)`` int64."""
    return class_argmax(ensemble)


def pseudo_label_loss(views: Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Sum over views of the batch-level soft Dice loss against the pseudo-label (unweighted)."""
    total = soft_dice_loss(views[0], label)
    for view in views[1:]:
        total = total + soft_dice_loss(view, label)
    return total
