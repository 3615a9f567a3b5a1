"""2D segmentation networks that return per-class probabilities."""

from __future__ import annotations

from functools import partial

from torch import nn

from helpnet.model.norm import ViewBatchNorm2d, per_view_batch_norm
from helpnet.model.unet import SIZE_MULTIPLE, UNetLight, UNetUpstream, WSL4MIS_DROPOUT

# `unet_light` keeps upstream's BatchNorm on the logits. Without it the EGPL Dice to the
# pseudo-label drove the light UNet to all-background predictions within 120 steps on real ACDC
# (held-out Dice 0.00, against 0.23 mean after 60 steps with the logit BatchNorm), because a
# class missing from the batch's pseudo-label is pushed towards zero everywhere.
# `unet_light_wsl4mis` is the WSL4MIS network exactly, without it.
NETWORKS = {
    "unet_upstream": UNetUpstream,
    "unet_light": partial(UNetLight, logit_norm=True),
    "unet_light_wsl4mis": UNetLight,
}

__all__ = [
    "NETWORKS",
    "SIZE_MULTIPLE",
    "UNetLight",
    "UNetUpstream",
    "ViewBatchNorm2d",
    "WSL4MIS_DROPOUT",
    "build_network",
    "per_view_batch_norm",
]


def build_network(name: str, num_classes: int, in_channels: int = 1) -> nn.Module:
    """Build the network called ``name`` ("unet_upstream" or "unet_light") with fresh weights."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](in_channels=in_channels, num_classes=num_classes)
