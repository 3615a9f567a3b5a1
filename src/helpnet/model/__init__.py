"""2D segmentation networks that return per-class probabilities."""

from __future__ import annotations

from torch import nn

from helpnet.model.norm import ViewBatchNorm2d, per_view_batch_norm
from helpnet.model.unet import SIZE_MULTIPLE, UNetLight, UNetUpstream, WSL4MIS_DROPOUT

NETWORKS = {"unet_upstream": UNetUpstream, "unet_light": UNetLight}

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
