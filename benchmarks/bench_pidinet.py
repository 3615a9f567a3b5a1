"""Time PiDiNet vanilla against converted on the CPU, and edge extraction of one whole volume.

Usage:
    python benchmarks/bench_pidinet.py --weights-dir DIR --volume IMAGE.nii.gz [--threads 2] [--json OUT.json]
    python benchmarks/bench_pidinet.py --weights-dir DIR --stats IMAGE.nii.gz [IMAGE.nii.gz ...] --skip-speed

``--stats`` prints, per volume and method (each checkpoint found, converted form, and Sobel),
the edge-value statistics that the limits in ``helpnet.edges.extract.validate_edges`` are based on.

DIR contains the official checkpoints ``table5_pidinet.pth``, ``table5_pidinet-tiny.pth`` and
``table5_pidinet-tiny-l.pth``. The other checkpoints listed in CHECKPOINTS are timed when present. The two forms
are timed call by call in alternation, so that slow drift of a shared machine hits both alike.
Prints a Markdown table of slices per second (median over the timed calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from helpnet.edges.classical import sobel_edges
from helpnet.edges.extract import default_converted, extract_edges, is_constant_slice
from helpnet.edges.pidinet import load_pidinet
from helpnet.io import load_nifti

# checkpoint file -> (variant, attention, dilation), as the checkpoints were trained
CHECKPOINTS = {
    "table5_pidinet.pth": ("pidinet", True, True),
    "table5_pidinet-l.pth": ("pidinet", False, False),
    "table5_pidinet-small.pth": ("pidinet_small", True, True),
    "table5_pidinet-small-l.pth": ("pidinet_small", False, False),
    "table5_pidinet-tiny.pth": ("pidinet_tiny", True, True),
    "table5_pidinet-tiny-l.pth": ("pidinet_tiny", False, False),
}


def cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def time_pair(
    models: dict[str, torch.nn.Module], x: torch.Tensor, warmup: int, repeats: int
) -> tuple[dict[str, list[float]], float]:
    """Time the models in alternation; return the wall seconds of every timed forward, and CPU time / wall time.

    With N threads on an otherwise idle machine the ratio is close to N. A lower ratio means
    other processes took CPU time, so the slowest calls were slowed down by them and the fastest
    call (the minimum) is the better estimate of the speed on an idle machine.
    """
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu_total = 0.0
    with torch.no_grad():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for _ in range(repeats):
            for name, model in models.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                model(x)
                wall[name].append(time.perf_counter() - start)
                cpu_total += time.process_time() - cpu_start
    return wall, cpu_total / sum(sum(values) for values in wall.values())


def edge_statistics(edges: np.ndarray, volume: np.ndarray) -> dict[str, float]:
    """Return the statistics of an edge volume over its non-constant slices."""
    slices = [k for k in range(volume.shape[2]) if not is_constant_slice(volume[:, :, k])]
    content = edges[:, :, slices]
    return {
        "min_slice_max": int(min(content[:, :, j].max() for j in range(content.shape[2]))),
        "share_gt127": float(np.mean(content > 127)),
        "min_slice_share_gt127": float(min(np.mean(content[:, :, j] > 127) for j in range(content.shape[2]))),
        "share_ge250": float(np.mean(content >= 250)),
    }


def print_statistics(weights_dir: Path, found: list[str], images: list[Path]) -> list[dict[str, object]]:
    """Print a Markdown table of edge statistics per volume and method, and return its rows."""
    methods = {}
    for name in found:
        variant, attention, dilation = CHECKPOINTS[name]
        model = load_pidinet(weights_dir / name, variant, attention, dilation, converted=True)
        methods[name] = lambda volume, model=model: extract_edges(volume, model, "cpu", 8, progress=False)
    methods["sobel"] = lambda volume: sobel_edges(volume, progress=False)
    methods["sobel, no percentile clip"] = lambda volume: sobel_edges(volume, clip_percentile=100, progress=False)

    print("| volume | shape | method | min over slices of slice max | % > 127 | min over slices of % > 127 | % >= 250 |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for image in images:
        volume, _ = load_nifti(image)
        for method, compute in methods.items():
            stats = edge_statistics(compute(volume), volume)
            print(
                f"| {image.name} | {'x'.join(map(str, volume.shape))} | {method} | {stats['min_slice_max']} | "
                f"{100 * stats['share_gt127']:.1f} | {100 * stats['min_slice_share_gt127']:.1f} | "
                f"{100 * stats['share_ge250']:.2f} |",
                flush=True,
            )
            rows.append({"volume": image.name, "method": method, **stats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", required=True, type=Path, help="folder with the official PiDiNet checkpoints")
    parser.add_argument("--volume", type=Path, help="image volume (X, Y, Z) for the whole-volume extraction timing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--size", type=int, default=256, help="square input size in pixels (default: 256)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model (default: 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model (default: 10)")
    parser.add_argument("--stats", type=Path, nargs="+", default=[], help="volumes for the edge-statistics table")
    parser.add_argument("--skip-speed", action="store_true", help="skip the 256x256 speed table")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    found = [name for name in CHECKPOINTS if (args.weights_dir / name).is_file()]
    if not found:
        raise SystemExit(f"no known PiDiNet checkpoint in {args.weights_dir}; expected one of {sorted(CHECKPOINTS)}")

    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {args.threads} threads, input {args.size}x{args.size}")
    print()
    results: dict[str, object] = {"cpu": cpu_model(), "torch": torch.__version__, "threads": args.threads, "speed": []}
    if args.stats:
        results["statistics"] = print_statistics(args.weights_dir, found, args.stats)
        print()
    if not args.skip_speed:
        measure_speed(args, found, results)
    if args.volume is not None:
        measure_volume(args, found, results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def measure_speed(args: argparse.Namespace, found: list[str], results: dict[str, object]) -> None:
    """Print the vanilla against converted speed table (slices/s from the fastest and the median call)."""
    print(
        "| checkpoint | batch | vanilla slices/s (best) | converted slices/s (best) | converted / vanilla (best) "
        "| vanilla slices/s (median) | converted slices/s (median) | converted / vanilla (median) | CPU/wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for name in found:
        variant, attention, dilation = CHECKPOINTS[name]
        models = {
            form: load_pidinet(
                args.weights_dir / name, variant, attention, dilation, converted=(form == "converted"), device="cpu"
            )
            for form in ("vanilla", "converted")
        }
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size, generator=generator)
            wall, cpu_ratio = time_pair(models, x, args.warmup, args.repeats)
            best = {form: batch / min(values) for form, values in wall.items()}
            median = {form: batch / statistics.median(values) for form, values in wall.items()}
            print(
                f"| {name} | {batch} | {best['vanilla']:.2f} | {best['converted']:.2f} | "
                f"{best['converted'] / best['vanilla']:.2f} | {median['vanilla']:.2f} | {median['converted']:.2f} | "
                f"{median['converted'] / median['vanilla']:.2f} | {cpu_ratio:.2f} |",
                flush=True,
            )
            results["speed"].append(
                {"checkpoint": name, "batch": batch, "cpu_per_wall": cpu_ratio, "seconds_per_call": wall}
            )
    print()


def measure_volume(args: argparse.Namespace, found: list[str], results: dict[str, object]) -> None:
    """Print the time to extract the edges of one whole volume with each checkpoint (batch 8, default form)."""
    volume, _ = load_nifti(args.volume)
    print(f"Whole volume {args.volume.name}, shape {volume.shape}, batch 8, default form per variant:")
    print()
    print("| checkpoint | form | seconds | slices/s | CPU/wall |")
    print("|---|---|---|---|---|")
    runs = []
    for name in found:
        variant, attention, dilation = CHECKPOINTS[name]
        converted = default_converted(variant)
        model = load_pidinet(args.weights_dir / name, variant, attention, dilation, converted=converted)
        extract_edges(volume[:, :, :1], model, device="cpu", batch_size=1, progress=False)  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        edges = extract_edges(volume, model, device="cpu", batch_size=8, progress=False)
        seconds = time.perf_counter() - start
        cpu_ratio = (time.process_time() - cpu_start) / seconds
        form = "converted" if converted else "vanilla"
        print(f"| {name} | {form} | {seconds:.2f} | {volume.shape[2] / seconds:.2f} | {cpu_ratio:.2f} |", flush=True)
        runs.append(
            {
                "checkpoint": name,
                "form": form,
                "seconds": seconds,
                "cpu_per_wall": cpu_ratio,
                "edge_share_gt127": float(np.mean(edges > 127)),
            }
        )
    results["volume"] = {"file": args.volume.name, "shape": list(volume.shape), "runs": runs}


if __name__ == "__main__":
    main()
