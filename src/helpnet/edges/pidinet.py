"""PiDiNet edge detector (Su et al., "Pixel Difference Networks for Efficient Edge Detection", ICCV 2021).

Written from the published description of the network and its released checkpoints
(``hellozhuo/pidinet``, config ``carv4``), so that the official ``table5_*.pth`` files load strictly.

Two forms compute the same function:

- vanilla: each pixel-difference convolution (PDC) builds its effective kernel from the trained
  3x3 weight at every forward pass, as the checkpoints were trained;
- converted (re-parameterised): each PDC is a plain ``nn.Conv2d`` whose kernel was folded once from
  the trained weight by :func:`convert_state_dict` (3x3 for cd/ad/cv, 5x5 with padding 2 for rd).

In float64 the two forms agree to rounding error; in float32 they differ by a few 1e-6 on the
sigmoid outputs.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PDC_OPS = ("cd", "ad", "rd", "cv")
"""Pixel-difference operators: central, angular, radial difference and vanilla convolution."""

CONFIGS: dict[str, tuple[str, ...]] = {
    # 16 layers: the stem, then the 3 + 4 + 4 + 4 blocks of the four stages.
    "carv4": ("cd", "ad", "rd", "cv") * 4,
    # All plain convolutions (the paper's baseline, checkpoint table5_baseline.pth).
    "baseline": ("cv",) * 16,
}

STAGE_BLOCKS = (3, 4, 4, 4)
"""Number of PDC blocks per stage; the first block of stages 2-4 halves the resolution."""

CDCM_DILATIONS = (5, 7, 9, 11)
CSAM_CHANNELS = 4


@dataclass(frozen=True)
class VariantSpec:
    """Width of a PiDiNet variant: stem channels C (stages have C, 2C, 4C, 4C) and CDCM channels."""

    channels: int
    dilation_channels: int


VARIANTS: dict[str, VariantSpec] = {
    "pidinet": VariantSpec(channels=60, dilation_channels=24),
    "pidinet_small": VariantSpec(channels=30, dilation_channels=12),
    "pidinet_tiny": VariantSpec(channels=20, dilation_channels=8),
}

# The angular difference weights x_i - x_next(i), where next(i) is the clockwise neighbour of tap i
# (row-major 0..8) on the ring around the centre. As one kernel that is w_j - w_prev(j), and this
# table lists prev(j); the centre maps to itself, so its effective weight is zero.
_AD_NEIGHBOUR = (3, 0, 1, 6, 4, 2, 7, 8, 5)
# The radial difference spreads the 8 outer taps of the 3x3 kernel onto a 5x5 kernel: the outer
# ring of the 5x5 kernel (at twice the offset) takes +w[1..8] and the inner ring takes -w[1..8].
# The trained w[0] is never used, which is how the released checkpoints were trained.
_RD_OUTER = (0, 2, 4, 10, 14, 20, 22, 24)
_RD_INNER = (6, 7, 8, 11, 13, 16, 17, 18)


def _check_op(op: str) -> None:
    if op not in PDC_OPS:
        raise ValueError(f"unknown pixel-difference operator {op!r}; expected one of {PDC_OPS}")


def ad_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Return the plain 3x3 kernel equal to the angular difference of ``weight`` (out, in, 3, 3)."""
    flat = weight.reshape(weight.shape[0], weight.shape[1], 9)
    return (flat - flat[:, :, list(_AD_NEIGHBOUR)]).reshape(weight.shape)


def rd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Return the plain 5x5 kernel (padding 2) equal to the radial difference of ``weight`` (out, in, 3, 3)."""
    flat = weight.reshape(weight.shape[0], weight.shape[1], 9)
    kernel = weight.new_zeros(weight.shape[0], weight.shape[1], 25)
    kernel[:, :, list(_RD_OUTER)] = flat[:, :, 1:]
    kernel[:, :, list(_RD_INNER)] = -flat[:, :, 1:]
    return kernel.reshape(weight.shape[0], weight.shape[1], 5, 5)


def cd_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Return the plain 3x3 kernel equal to the central difference of ``weight`` (out, in, 3, 3).

    The central difference convolves x(p_i) - x(p_centre); subtracting the sum of the taps from the
    centre tap expresses it as one ordinary convolution.
    """
    kernel = weight.clone()
    kernel[:, :, 1, 1] = weight[:, :, 1, 1] - weight.sum(dim=(2, 3))
    return kernel


def fold_pdc_kernel(weight: torch.Tensor, op: str) -> torch.Tensor:
    """Fold a trained 3x3 PDC weight into the plain convolution kernel of the converted form."""
    _check_op(op)
    if op == "cd":
        return cd_kernel(weight)
    if op == "ad":
        return ad_kernel(weight)
    if op == "rd":
        return rd_kernel(weight)
    return weight.clone()


class PDCConv2d(nn.Module):
    """3x3 pixel-difference convolution without bias (vanilla form).

    The parameter is the trained 3x3 ``weight``; the effective kernel is assembled from it at each
    call, so the state dict matches the released checkpoints.
    """

    def __init__(self, op: str, in_channels: int, out_channels: int, groups: int = 1) -> None:
        super().__init__()
        _check_op(op)
        self.op = op
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "cd":
            # Two convolutions, as in training: sum_i w_i x(p_i) minus (sum_i w_i) x(p_centre).
            centre = self.weight.sum(dim=(2, 3), keepdim=True)
            return F.conv2d(x, self.weight, padding=1, groups=self.groups) - F.conv2d(
                x, centre, padding=0, groups=self.groups
            )
        if self.op == "ad":
            return F.conv2d(x, ad_kernel(self.weight), padding=1, groups=self.groups)
        if self.op == "rd":
            return F.conv2d(x, rd_kernel(self.weight), padding=2, groups=self.groups)
        return F.conv2d(x, self.weight, padding=1, groups=self.groups)

    def extra_repr(self) -> str:
        return f"op={self.op}, weight={tuple(self.weight.shape)}, groups={self.groups}"


def make_pdc(op: str, in_channels: int, out_channels: int, groups: int, converted: bool) -> nn.Module:
    """Build one PDC layer: :class:`PDCConv2d` (vanilla) or the equivalent plain ``nn.Conv2d`` (converted)."""
    _check_op(op)
    if not converted:
        return PDCConv2d(op, in_channels, out_channels, groups=groups)
    kernel_size, padding = (5, 2) if op == "rd" else (3, 1)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, groups=groups, bias=False)


class PDCBlock(nn.Module):
    """Residual block: depthwise 3x3 PDC, ReLU, 1x1 conv, plus shortcut.

    With ``stride=2`` the input is first max-pooled (2x2, floor, so an odd size drops its last row
    or column) and the shortcut is a 1x1 conv with bias. Otherwise the shortcut is the identity.
    """

    def __init__(self, op: str, in_channels: int, out_channels: int, stride: int, converted: bool) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.conv1 = make_pdc(op, in_channels, in_channels, groups=in_channels, converted=converted)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = self.pool(x)
        y = self.conv2(self.relu2(self.conv1(x)))
        if self.stride > 1:
            x = self.shortcut(x)
        return y + x


class CDCM(nn.Module):
    """Compact dilation convolution module: ReLU, 1x1 conv (bias), then the sum of four dilated 3x3 convs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        for index, dilation in enumerate(CDCM_DILATIONS, start=1):
            conv = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
            self.add_module(f"conv2_{index}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class CSAM(nn.Module):
    """Compact spatial attention module: x * sigmoid(conv3x3(conv1x1(relu(x)))) with a 4-channel bottleneck."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, CSAM_CHANNELS, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(CSAM_CHANNELS, 1, kernel_size=3, padding=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(self.relu1(x)))
        return x * self.sigmoid(y)


class MapReduce(nn.Module):
    """1x1 conv with bias that reduces a stage's features to one side-output logit map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """PiDiNet for 3-channel input of any size; ``forward`` returns five sigmoid maps, fused last.

    Parameter names follow the released checkpoints (``init_block``, ``block{stage}_{index}``,
    ``dilations``, ``attentions``, ``conv_reduces``, ``classifier``).
    """

    def __init__(
        self,
        variant: str = "pidinet",
        attention: bool = True,
        dilation: bool = True,
        converted: bool = False,
        config: str = "carv4",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown PiDiNet variant {variant!r}; expected one of {sorted(VARIANTS)}")
        if config not in CONFIGS:
            raise ValueError(f"unknown PiDiNet config {config!r}; expected one of {sorted(CONFIGS)}")
        spec = VARIANTS[variant]
        ops = CONFIGS[config]
        self.variant = variant
        self.config = config
        self.attention = attention
        self.dilation = dilation
        self.converted = converted

        width = spec.channels
        stage_channels = (width, 2 * width, 4 * width, 4 * width)
        self.init_block = make_pdc(ops[0], 3, width, groups=1, converted=converted)

        layer = 1
        in_channels = width
        for stage, (num_blocks, out_channels) in enumerate(zip(STAGE_BLOCKS, stage_channels), start=1):
            for index in range(1, num_blocks + 1):
                stride = 2 if (stage > 1 and index == 1) else 1
                block = PDCBlock(ops[layer], in_channels, out_channels, stride=stride, converted=converted)
                self.add_module(f"block{stage}_{index}", block)
                in_channels = out_channels
                layer += 1

        side_channels = stage_channels
        if dilation:
            self.dilations = nn.ModuleList(CDCM(c, spec.dilation_channels) for c in stage_channels)
            side_channels = (spec.dilation_channels,) * 4
        if attention:
            self.attentions = nn.ModuleList(CSAM(c) for c in side_channels)
        self.conv_reduces = nn.ModuleList(MapReduce(c) for c in side_channels)
        self.classifier = nn.Conv2d(4, 1, kernel_size=1, bias=True)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.init_block(x)
        features = []
        for stage, num_blocks in enumerate(STAGE_BLOCKS, start=1):
            for index in range(1, num_blocks + 1):
                x = getattr(self, f"block{stage}_{index}")(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = x.shape[-2:]
        side_logits = []
        for i, feature in enumerate(self._stages(x)):
            if self.dilation:
                feature = self.dilations[i](feature)
            if self.attention:
                feature = self.attentions[i](feature)
            logit = self.conv_reduces[i](feature)
            # Resize straight from the floor-pooled size; padding the input to a multiple of 8
            # instead would change the side maps far from the border.
            logit = F.interpolate(logit, size=(height, width), mode="bilinear", align_corners=False)
            side_logits.append(logit)
        fused = self.classifier(torch.cat(side_logits, dim=1))
        return [torch.sigmoid(logit) for logit in side_logits] + [torch.sigmoid(fused)]


def pdc_layer_names(config: str = "carv4") -> list[tuple[str, str]]:
    """Return (state-dict key of the PDC weight, operator) for the 16 PDC layers of ``config``."""
    ops = CONFIGS[config]
    names = ["init_block.weight"]
    for stage, num_blocks in enumerate(STAGE_BLOCKS, start=1):
        names.extend(f"block{stage}_{index}.conv1.weight" for index in range(1, num_blocks + 1))
    return list(zip(names, ops))


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], config: str = "carv4") -> OrderedDict[str, torch.Tensor]:
    """Return a new state dict for the converted form; ``state_dict`` itself is left unchanged.

    Every PDC weight is folded into its plain kernel; all other tensors are shared as they are.
    """
    converted: OrderedDict[str, torch.Tensor] = OrderedDict(state_dict)
    for key, op in pdc_layer_names(config):
        if key not in state_dict:
            raise ValueError(f"state dict has no PDC weight {key!r}; it is not a PiDiNet {config} state dict")
        converted[key] = fold_pdc_kernel(state_dict[key].detach(), op)
    return converted


MODULE_PREFIX = "module."


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Return a copy of ``state_dict`` without the ``module.`` prefix that ``nn.DataParallel`` adds."""
    return OrderedDict(
        (key[len(MODULE_PREFIX) :] if key.startswith(MODULE_PREFIX) else key, value) for key, value in state_dict.items()
    )


def read_checkpoint(checkpoint_path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """Read an official PiDiNet checkpoint (``{'epoch', 'state_dict'}`` or a bare state dict) on the CPU.

    Returns the state dict with the ``module.`` prefix stripped.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"PiDiNet checkpoint not found: {path}; run the workflow's PiDiNet weights download rule "
            "or put the official file (github.com/hellozhuo/pidinet, trained_models/) at this path"
        )
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises several types for corrupt or non-tensor pickles
        raise ValueError(f"{path}: cannot read as a PyTorch checkpoint ({error}); download it again") from error
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
        logger.debug("%s: epoch %s", path, checkpoint.get("epoch"))
    else:
        state_dict = checkpoint
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' of tensors, got {type(checkpoint).__name__}")
    return strip_module_prefix(state_dict)


def _group_keys(keys: set[str]) -> str:
    """Summarise state-dict keys by top-level module, e.g. ``attentions.* (12 keys, first attentions.0.conv1.bias)``."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(key.split(".")[0], []).append(key)
    return ", ".join(f"{name}.* ({len(members)} keys, first {members[0]})" for name, members in groups.items())


def _flag_hint(prefix: str, missing_in_checkpoint: bool) -> str:
    flag = {"attentions": "attention", "dilations": "dilation"}[prefix]
    value = "false" if missing_in_checkpoint else "true"
    cli = f"--no-{flag}" if missing_in_checkpoint else f"--{flag}"
    return f"set {flag}: {value} ({cli})"


def check_state_dict(model: PiDiNet, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming missing/unexpected keys and the flag to change when ``state_dict`` does not fit ``model``."""
    expected = model.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    if missing or unexpected:
        hints = []
        reasons = []
        for prefix in ("attentions", "dilations"):
            model_has = any(k.startswith(prefix + ".") for k in expected)
            checkpoint_has = any(k.startswith(prefix + ".") for k in state_dict)
            if model_has and not checkpoint_has:
                reasons.append(f"checkpoint has no {prefix}.* keys")
                hints.append(_flag_hint(prefix, missing_in_checkpoint=True))
            elif checkpoint_has and not model_has:
                reasons.append(f"checkpoint has {prefix}.* keys")
                hints.append(_flag_hint(prefix, missing_in_checkpoint=False))
        fix = "; ".join(f"{r}: {h}" for r, h in zip(reasons, hints)) or "use the checkpoint of this PiDiNet variant"
        raise ValueError(
            f"{source}: state dict does not match PiDiNet(variant={model.variant}, attention={model.attention}, "
            f"dilation={model.dilation}): missing keys {_group_keys(missing) or 'none'}; "
            f"unexpected keys {_group_keys(unexpected) or 'none'}; {fix}"
        )

    init = state_dict["init_block.weight"]
    if init.shape[0] != expected["init_block.weight"].shape[0]:
        width_to_variant = {spec.channels: name for name, spec in VARIANTS.items()}
        hint = width_to_variant.get(int(init.shape[0]))
        fix = f"set variant: {hint}" if hint else "use a PiDiNet variant with this width"
        raise ValueError(
            f"{source}: checkpoint has {init.shape[0]} stem channels (init_block.weight {tuple(init.shape)}) "
            f"but variant {model.variant!r} has {expected['init_block.weight'].shape[0]}; {fix}"
        )
    for key, tensor in expected.items():
        if state_dict[key].shape != tensor.shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(state_dict[key].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in PiDiNet(variant={model.variant}, attention={model.attention}, "
                f"dilation={model.dilation}, converted={model.converted}); check variant, attention and dilation"
            )


def build_pidinet(
    state_dict: Mapping[str, torch.Tensor],
    variant: str = "pidinet",
    attention: bool = True,
    dilation: bool = True,
    converted: bool = False,
    source: str = "state dict",
    config: str = "carv4",
) -> PiDiNet:
    """Build a PiDiNet in eval mode from a trained (vanilla, prefix-free) state dict, loaded strictly.

    With ``converted=True`` the PDC kernels are folded into a new state dict first; ``state_dict``
    is never modified.
    """
    model = PiDiNet(variant=variant, attention=attention, dilation=dilation, converted=False, config=config)
    check_state_dict(model, state_dict, source)
    if converted:
        model = PiDiNet(variant=variant, attention=attention, dilation=dilation, converted=True, config=config)
        state_dict = convert_state_dict(state_dict, config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_pidinet(
    checkpoint_path: str | os.PathLike,
    variant: str = "pidinet",
    attention: bool = True,
    dilation: bool = True,
    converted: bool = False,
    device: str | torch.device = "cpu",
    config: str = "carv4",
) -> PiDiNet:
    """Load an official PiDiNet checkpoint into a model in eval mode on ``device``.

    The flags must match how the checkpoint was trained: ``table5_pidinet.pth`` and
    ``table5_pidinet-tiny.pth`` use attention and dilation, the ``-l`` checkpoints use neither.
    A mismatch raises ValueError naming the keys and the flag to change. ``config`` cannot be
    checked, because a ``baseline`` checkpoint has the same tensors as a ``carv4`` one.
    """
    state_dict = read_checkpoint(checkpoint_path)
    model = build_pidinet(
        state_dict,
        variant=variant,
        attention=attention,
        dilation=dilation,
        converted=converted,
        source=str(checkpoint_path),
        config=config,
    )
    logger.info(
        "loaded PiDiNet %s %s (attention=%s, dilation=%s, %s) from %s",
        variant,
        config,
        attention,
        dilation,
        "converted" if converted else "vanilla",
        checkpoint_path,
    )
    return model.to(device)
