"""The two 2D UNets: HELPNet's own network and a light WSL4MIS-style one.

Both take ``(B, in_channels, H, W)`` with H and W divisible by 16 (four 2×2 poolings) and
return softmax probabilities ``(B, num_classes, H, W)`` in float32, also under autocast,
because every HELPNet loss takes probabilities.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from helpnet.model.norm import ViewBatchNorm2d

logger = logging.getLogger(__name__)

# The spatial size must survive four 2×2 max-poolings and the matching upsamplings.
SIZE_MULTIPLE = 16

# BatchNorm settings of HELPNet's network: the second BN of each conv block, the up blocks and
# the logits BN use eps 1e-3 and momentum 0.01; the first BN of a block keeps the PyTorch defaults.
SLOW_BN = {"eps": 1e-3, "momentum": 0.01}

# Width of the upsampled path at decoder levels 4 and 3 of the upstream network. It was four
# output classes in the network HELPNet inherited it from and stays 4 for any class count.
UPSTREAM_SQUEEZE_WIDTH = 4

# Dropout rates of the WSL4MIS UNet encoder levels, for UNetLight(dropout=WSL4MIS_DROPOUT).
WSL4MIS_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


def check_input_shape(x: torch.Tensor, in_channels: int) -> None:
    """Raise ValueError unless ``x`` is ``(B, in_channels, H, W)`` with H, W divisible by 16."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected an input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}; "
            "add the channel axis or change in_channels"
        )
    height, width = x.shape[-2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"input shape {tuple(x.shape)} has H={height}, W={width}, which are not both divisible by "
            f"{SIZE_MULTIPLE}; crop or zero-pad the slices to a multiple of {SIZE_MULTIPLE} (for example 224×224)"
        )


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    # Softmax in float32 even under autocast, so that log(p + 1e-12) and the entropy stay exact.
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return torch.softmax(logits.float(), dim=1)


class UpstreamConvBlock(nn.Sequential):
    """conv 3×3 → ReLU → BN (defaults) → conv 3×3 → ReLU → BN (eps 1e-3, momentum 0.01)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            ViewBatchNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            ViewBatchNorm2d(out_channels, **SLOW_BN),
        )


class UpstreamUpBlock(nn.Sequential):
    """Nearest-neighbour ×2 upsampling → conv 3×3 → ReLU → BN (eps 1e-3, momentum 0.01)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            ViewBatchNorm2d(out_channels, **SLOW_BN),
        )


class UNetUpstream(nn.Module):
    """HELPNet's UNet with same-size output.

    Encoder widths 64, 128, 256, 512, 1024 with 2×2 max-pooling between levels. Each decoder
    level upsamples, concatenates ``[upsampled, skip]`` and applies a conv block. Levels 4
    and 3 squeeze the upsampled path to 4 channels (516 and 260 channels after
    concatenation), and levels 2 and 1 halve it (256 and 128). The head is a 1×1 conv to
    ``num_classes``, a BatchNorm on the logits and a softmax. ReLU precedes BN everywhere and
    there is no dropout. With 4 classes the network has 25,759,396 trainable parameters.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        widths = (64, 128, 256, 512, 1024)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(UpstreamConvBlock(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        up_widths = (UPSTREAM_SQUEEZE_WIDTH, UPSTREAM_SQUEEZE_WIDTH, 128, 64)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level, up_width in enumerate(up_widths):
            deep, skip = widths[-1 - level], widths[-2 - level]
            self.ups.append(UpstreamUpBlock(deep, up_width))
            self.decoders.append(UpstreamConvBlock(up_width + skip, skip))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.head_norm = ViewBatchNorm2d(num_classes, **SLOW_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.in_channels)
        skips = []
        for index, encoder in enumerate(self.encoders):
            if index > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([up(x), skips.pop()], dim=1))
        return _probabilities(self.head_norm(self.head(x)))


class LightConvBlock(nn.Sequential):
    """conv 3×3 → BN → LeakyReLU → [dropout] → conv 3×3 → BN → LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            ViewBatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            ViewBatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        super().__init__(*layers)


class LightUpBlock(nn.Module):
    """1×1 conv to the skip width → bilinear ×2 upsampling → concat [skip, up] → conv block."""

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(deep_channels, skip_channels, kernel_size=1)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.block = LightConvBlock(2 * skip_channels, skip_channels)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.upsample(self.reduce(deep))], dim=1))


class UNetLight(nn.Module):
    """A small UNet in the style of the WSL4MIS baseline, for quick runs.

    Layers:
    - encoder: five conv blocks of width 16, 32, 64, 128, 256 with 2×2 max-pooling between
      them; a block is conv 3×3 → BN → LeakyReLU(0.01) → dropout → conv 3×3 → BN → LeakyReLU;
    - decoder, four levels: 1×1 conv of the deeper map to the skip width, bilinear ×2
      upsampling (align_corners=True), concatenation ``[skip, upsampled]`` and a conv block
      without dropout back to the skip width;
    - head: conv 3×3 from 16 channels to ``num_classes``, then softmax. With ``logit_norm``
      a BatchNorm on the logits (eps 1e-3, momentum 0.01) comes before the softmax, as in
      ``UNetUpstream``.

    ``dropout`` gives the rate of each encoder level. The default is no dropout, like
    HELPNet's network. ``WSL4MIS_DROPOUT`` gives the WSL4MIS rates. With 4 classes and one
    input channel the network has 1,813,764 trainable parameters.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
        logit_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
        if len(widths) != 5 or len(dropout) != 5:
            raise ValueError(
                f"UNetLight needs 5 encoder widths and 5 dropout rates, got {list(widths)} and {list(dropout)}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width, rate in zip(widths, dropout):
            self.encoders.append(LightConvBlock(previous, width, rate))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.decoders = nn.ModuleList(
            LightUpBlock(widths[level + 1], widths[level]) for level in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=3, padding=1)
        self.logit_norm = ViewBatchNorm2d(num_classes, **SLOW_BN) if logit_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.in_channels)
        skips = []
        for index, encoder in enumerate(self.encoders):
            if index > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        logits = self.head(x)
        if self.logit_norm is not None:
            logits = self.logit_norm(logits)
        return _probabilities(logits)
