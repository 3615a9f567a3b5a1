"""Device and numeric-precision choices shared by training and inference."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os

import torch

logger = logging.getLogger(__name__)


# glibc mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

# Settings applied by tune_host_allocator(): freed memory stays in the heap (trimmed only above
# 2 GiB of free space at its top), the heap grows 1 GiB at a time, and no block comes from mmap.
ALLOCATOR_SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 1 << 30}

# Set to 0 to keep glibc's default allocator behaviour.
ALLOCATOR_TUNING_VARIABLE = "HELPNET_MALLOC_TUNING"


def tune_host_allocator() -> bool:
    """Stop glibc from returning the CPU step's activation buffers to the kernel after each use.

    glibc serves a block above its mmap threshold by ``mmap`` and unmaps it when freed. The
    threshold is at most 32 MiB on 64-bit Linux (mallopt(3)), and a 4×64×224×224 fp32 map
    is 51 MiB. Each step therefore faulted in fresh zeroed pages again: 700,000 minor faults,
    about 2.8 GB, per forward and backward of the upstream UNet. In a bf16 step benchmark on
    a 2-vCPU machine the kernel time was about a quarter of all CPU time. After this call,
    freed blocks stay in the heap for the next step, so the resident memory stays near the
    peak of one step.

    Returns True when the settings were applied, and False on a C library without
    ``mallopt`` (musl, macOS) or when the environment variable ``HELPNET_MALLOC_TUNING`` is
    ``0``. Call it once, before the first large tensor is allocated.
    """
    if os.environ.get(ALLOCATOR_TUNING_VARIABLE, "1") == "0":
        logger.info("%s=0: glibc malloc left at its defaults", ALLOCATOR_TUNING_VARIABLE)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt; host allocator left unchanged")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = all(mallopt(parameter, value) == 1 for parameter, value in ALLOCATOR_SETTINGS.items())
    if applied:
        logger.info("glibc malloc: freed tensor memory stays in the heap (set %s=0 to disable)", ALLOCATOR_TUNING_VARIABLE)
    else:
        logger.warning("glibc mallopt rejected the allocator settings; continuing with glibc's defaults")
    return applied


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
            raise ValueError(
                "precision fp16 is only supported on CUDA, and the device is the CPU; use bf16 or fp32 "
                "(training.precision for training, evaluation.precision or helpnet predict --precision "
                "for prediction), or run on a CUDA device"
            )
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # NOTE: bf16 was measured faster on an AMX CPU only. On CPUs with AVX512-BF16 but no AMX
    # its speed against fp32 is not known; set training.precision explicitly there.
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
