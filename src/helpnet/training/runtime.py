"""Device and numeric-precision choices shared by training and inference."""

from __future__ import annotations

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present, else CPU) or an explicit name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; set training.device: auto or cpu")
    return device


def cpu_supports_bf16() -> bool:
    """Return True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except RuntimeError:
        return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """Turn ``auto`` into bf16 where the device computes it natively, else fp32."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ValueError("training.precision=fp16 is only supported on CUDA; use bf16 or fp32 on CPU")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast_context(device: torch.device, precision: str):
    """Return the autocast context for ``precision`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_determinism(enabled: bool) -> None:
    """Ask PyTorch for deterministic kernels (slower on GPU) when ``enabled``."""
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True
