"""Time helpnet's HD95 against medpy 0.5.2's ``hd95`` on one real label volume.

The reference is each class of the given label file. The prediction is that class perturbed in
one of three ways: shifted by two voxels along axis 0, eroded by one voxel, or dilated by one
voxel (face-connected structure). The two libraries are called in turn ``--repeats`` times and
each timing is the fastest call. The script also checks that both libraries return the same
value to 1e-6, and prints a Markdown table with the load average before and after, because
other processes on the machine slow medpy's whole-array passes more than helpnet's small ones.

Usage::

    python benchmarks/bench_hd95.py LABEL.nii.gz [--repeats 15] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from medpy.metric import binary as medpy_binary
from scipy.ndimage import binary_dilation, binary_erosion, generate_binary_structure

from helpnet.evaluation.metrics import hd95
from helpnet.io import load_nifti, spacing_of


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
"""Timers for ``--clock``: elapsed time, or CPU time of the calling thread (scipy's calls here are
single-threaded), which other processes on a busy machine inflate less."""


def best_seconds(
    functions: dict[str, Callable[[], float]], repeats: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    """Call each function ``repeats`` times, interleaved, and return name -> (fastest seconds, value).

    Interleaving exposes all functions to the same background load, and the fastest call is the
    usual estimate of the cost on an idle machine (as in ``timeit``).
    """
    times: dict[str, list[float]] = {name: [] for name in functions}
    values: dict[str, float] = {}
    for _ in range(repeats):
        for name, function in functions.items():
            start = clock()
            values[name] = function()
            times[name].append(clock() - start)
    return {name: (min(times[name]), values[name]) for name in functions}


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def perturbations(ref: np.ndarray) -> dict[str, np.ndarray]:
    structure = generate_binary_structure(ref.ndim, 1)
    return {
        "shift 2 voxels": np.roll(ref, 2, axis=0),
        "erode 1 voxel": binary_erosion(ref, structure=structure),
        "dilate 1 voxel": binary_dilation(ref, structure=structure),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", type=Path, help="integer label NIfTI; every non-zero value is one class")
    parser.add_argument("--repeats", type=int, default=15, help="calls per timing (the fastest is reported)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall: elapsed time; cpu: thread CPU time")
    args = parser.parse_args()

    labels, header = load_nifti(args.label, np.int16)
    spacing = spacing_of(header)
    print(f"date: {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.machine()}")
    print(f"load average before (1, 5, 15 min): {os.getloadavg()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, clock: {args.clock}, repeats: {args.repeats}")
    print(f"file: {args.label.name}, shape {labels.shape}, spacing {tuple(round(s, 5) for s in spacing)} mm")
    print()
    print("| class | prediction | medpy hd95 (ms, fastest) | helpnet hd95 (ms, fastest) | speed-up | HD95 (mm) | abs. difference |")
    print("|---|---|---|---|---|---|---|")

    ratios = []
    totals = {"medpy": 0.0, "helpnet": 0.0}
    for class_index in [int(v) for v in np.unique(labels) if v != 0]:
        ref = labels == class_index
        for name, pred in perturbations(ref).items():
            results = best_seconds(
                {
                    "medpy": lambda: medpy_binary.hd95(pred, ref, voxelspacing=spacing),
                    "helpnet": lambda: hd95(pred, ref, spacing),
                },
                args.repeats,
                CLOCKS[args.clock],
            )
            medpy_time, medpy_value = results["medpy"]
            helpnet_time, helpnet_value = results["helpnet"]
            totals["medpy"] += medpy_time
            totals["helpnet"] += helpnet_time
            difference = abs(medpy_value - helpnet_value)
            if difference > 1e-6:
                raise SystemExit(f"class {class_index}, {name}: medpy {medpy_value} != helpnet {helpnet_value}")
            ratios.append(medpy_time / helpnet_time)
            print(
                f"| {class_index} | {name} | {medpy_time * 1e3:.1f} | {helpnet_time * 1e3:.2f} | "
                f"{medpy_time / helpnet_time:.1f}x | {helpnet_value:.4f} | {difference:.1e} |"
            )
    print()
    print(
        f"all rows: medpy {totals['medpy'] * 1e3:.1f} ms, helpnet {totals['helpnet'] * 1e3:.1f} ms, "
        f"speed-up {totals['medpy'] / totals['helpnet']:.1f}x"
    )
    print(f"load average after (1, 5, 15 min): {os.getloadavg()}")
    print(f"speed-up per row: min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x, max {max(ratios):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
