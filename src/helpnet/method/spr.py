"""Structural prior refinement (SPR): connectivity and edge losses on the ensemble P_ens.

Connectivity. The hard mask argmax P_ens of each 2D slice is reduced to its largest
components: F is the largest 4-connected component of the foreground (all classes ≥ 1), and
each class keeps its own largest 4-connected component inside F. The loss pulls P_ens
towards the one-hot of that target with 1 − mean cosine over the class axis.

``per_class_only=True`` skips F and keeps every class's largest component wherever it lies.
This is this project's adaptation for abdominal organs (CHAOS), which are separate blobs;
HELPNet's own rule, the default, fits the heart, whose structures form one blob.

Edges. On pixels where the edge map E exceeds a threshold (0.5), the foreground probability
f = Σ_{c≥1} P_ens,c is pulled towards E with a squared error averaged over those pixels.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage

from helpnet.method.losses import class_argmax, cosine_loss, one_hot

logger = logging.getLogger(__name__)

# 4-connectivity within each 2D slice and no connection along the stacking axis, so a
# component never spans two slices of the stack.
_SLICEWISE_4_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_SLICEWISE_4_CONNECTIVITY[1] = ndimage.generate_binary_structure(2, 1)


def largest_components(masks: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected component of each 2D mask in a ``(N, H, W)`` stack.

    All N masks are labelled in one ``ndimage.label`` call. Among equally large components
    the first in raster order wins. An empty mask stays empty.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected a stack of 2D masks (N, H, W), got shape {masks.shape}")
    labels, count = ndimage.label(masks, structure=_SLICEWISE_4_CONNECTIVITY)
    if count == 0:
        return np.zeros_like(masks)
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)
    # Each label lies in exactly one slice; scipy numbers labels in raster order of the stack.
    slice_of_label = np.empty(count + 1, dtype=np.int64)
    slice_of_label[flat] = np.repeat(np.arange(masks.shape[0]), masks.shape[1] * masks.shape[2])
    candidates = np.arange(1, count + 1)
    # Sort by slice, then size descending, then label ascending; the first of each slice wins.
    order = np.lexsort((candidates, -sizes[candidates], slice_of_label[candidates]))
    ordered_slices = slice_of_label[candidates][order]
    first = np.unique(ordered_slices, return_index=True)[1]
    keep = np.zeros(count + 1, dtype=bool)
    keep[candidates[order][first]] = True
    return keep[labels]


def connectivity_target(label_map: np.ndarray, num_classes: int, per_class_only: bool = False) -> np.ndarray:
    """Build the connectivity target of a ``(B, H, W)`` hard mask with classes 0..num_classes−1.

    Returns int64 ``(B, H, W)``: each class c ≥ 1 keeps its largest 4-connected component,
    restricted to the largest 4-connected foreground component F (unless ``per_class_only``);
    everything else becomes background. An absent class stays absent.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 3:
        raise ValueError(f"expected a hard mask (B, H, W), got shape {label_map.shape}")
    classes = np.arange(1, num_classes).reshape(-1, 1, 1, 1)
    # (C-1, B, H, W) class masks, labelled together as one stack of (C-1)·B slices.
    class_masks = label_map[None] == classes
    kept = largest_components(class_masks.reshape(-1, *label_map.shape[1:])).reshape(class_masks.shape)
    if not per_class_only:
        foreground = largest_components(label_map > 0)
        kept &= foreground[None]
    # Class masks are disjoint, so the weighted sum writes each kept pixel's class once.
    return (kept * classes).sum(axis=0).astype(np.int64)


def connectivity_loss(ensemble: torch.Tensor, per_class_only: bool = False) -> torch.Tensor:
    """Compute 1 − mean cos(P_ens, onehot(target)), with the target from :func:`connectivity_target`.

    The argmax travels to the host for ``scipy.ndimage.label`` and the target travels back,
    so on an accelerator this is the step's one device synchronisation.
    """
    num_classes = ensemble.shape[1]
    hard = class_argmax(ensemble).to(torch.uint8).cpu().numpy()
    target = torch.from_numpy(connectivity_target(hard, num_classes, per_class_only))
    return cosine_loss(ensemble, one_hot(target.to(ensemble.device), num_classes))


def edge_loss(ensemble: torch.Tensor, edge: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Compute the masked squared error of the foreground probability against the edge map.

    ``edge`` is ``(B, H, W)`` in [0, 1]. Per image n: Σ M (f − E)² / max(Σ M, 1) with
    M = [E > threshold] and f = Σ_{c≥1} P_ens,c; the result is the batch mean. An image
    without edge pixels contributes exactly 0. The caller applies the weight and HELPNet's
    extra factor 1/10.
    """
    if edge.shape != (ensemble.shape[0], *ensemble.shape[2:]):
        raise ValueError(
            f"edge map of shape {tuple(edge.shape)} does not match probabilities {tuple(ensemble.shape)}; "
            "pass one (H, W) edge map per image, scaled to [0, 1]"
        )
    with torch.autocast(device_type=ensemble.device.type, enabled=False):
        edge = edge.float()
        foreground = ensemble.float()[:, 1:].sum(dim=1)
        mask = (edge > threshold).float()
        squared = mask * (foreground - edge) ** 2
        per_image = squared.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1.0)
        return per_image.mean()
