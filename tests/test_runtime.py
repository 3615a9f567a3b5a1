"""Device, precision and host-allocator choices of helpnet.training.runtime."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from helpnet.training.runtime import ALLOCATOR_TUNING_VARIABLE, resolve_precision

# Run in a child process: mallopt changes the allocator of the whole process for good.
CHILD = """
import ctypes, sys
from helpnet.training.runtime import tune_host_allocator
applied = tune_host_allocator()
# After M_MMAP_MAX=0 a 64 MiB block comes from the heap: mallinfo2's mmapped bytes do not grow.
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(applied, libc.mallinfo2().hblkhd - before)
"""


def run_child(environment: dict[str, str]) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=environment, check=True)
    applied, mapped = result.stdout.split()
    return applied, int(mapped)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")
def test_tuned_allocator_avoids_mmap():
    environment = {**os.environ, ALLOCATOR_TUNING_VARIABLE: "1"}
    assert run_child(environment) == ("True", 0)
    # With the variable at 0 glibc keeps its default and serves the 64 MiB block by mmap.
    environment[ALLOCATOR_TUNING_VARIABLE] = "0"
    applied, mapped = run_child(environment)
    assert applied == "False"
    assert mapped >= 64 << 20


def test_resolve_precision_rejects_fp16_on_cpu():
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
