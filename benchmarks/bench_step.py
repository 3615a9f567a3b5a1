"""Time one HELPNet training step and measure its peak memory on the CPU.

A step is forward over the views, all losses, backward and one Adam step. Each
configuration (network × precision × experiment) runs in its own subprocess so that its
peak resident memory (``ru_maxrss``) is not inflated by an earlier configuration. The
script also times the connected-component target of the connectivity loss against one
forward pass. Results go to stdout as a Markdown table and, with ``--json``, to a file.

Example (the run recorded in BENCHMARKS.md):

    OMP_NUM_THREADS=1 python benchmarks/bench_step.py --threads 1 --warmup 1 --repeats 3 --json /tmp/step_results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpnet.method import HelpnetObjective, ObjectiveSettings
from helpnet.method.spr import connectivity_target
from helpnet.model import build_network
from helpnet.training.runtime import tune_host_allocator

logger = logging.getLogger(__name__)

NUM_CLASSES = 4
EXPERIMENTS = {
    "pce": {"hpc": False, "egpl": False, "spr_connectivity": False, "spr_edges": False},
    "helpnet": {"batched_views": False},
    "helpnet_batched": {"batched_views": True},
}


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build a synthetic batch: a noise image, one scribble stroke per class, a random edge map."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, size, size, generator=generator)
    scribble = torch.full((batch, size, size), 255, dtype=torch.long)
    for label in range(NUM_CLASSES):
        row = size // 8 + label * size // 5
        scribble[:, row : row + 3, size // 6 : size - size // 6] = label
    edge = torch.rand(batch, size, size, generator=generator)
    return image.contiguous(memory_format=torch.channels_last), scribble, edge


def run_single(config: dict) -> dict:
    """Run one configuration in this process and return its timings and memory."""
    if config["malloc_tuning"]:
        tune_host_allocator()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    memory_format = torch.channels_last if config["memory_format"] == "channels_last" else torch.contiguous_format
    network = build_network(config["network"], NUM_CLASSES).to(memory_format=memory_format)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-4)
    objective = HelpnetObjective(ObjectiveSettings(**EXPERIMENTS[config["experiment"]]), NUM_CLASSES)
    image, scribble, edge = make_batch(config["batch"], config["size"])
    image = image.contiguous(memory_format=memory_format)
    use_bf16 = config["precision"] == "bf16"
    generator = torch.Generator().manual_seed(42)
    baseline_mb = current_rss_mb()

    times = []
    for step in range(config["warmup"] + config["repeats"]):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            total, _ = objective(network, image, scribble, edge, generator)
        total.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step >= config["warmup"]:
            times.append(elapsed * 1000.0)
    return {
        **config,
        "step_ms": statistics.median(times),
        "step_ms_all": times,
        "peak_rss_mb": peak_rss_mb(),
        "peak_above_setup_mb": peak_rss_mb() - baseline_mb,
    }


def time_connectivity(network_name: str, batch: int, size: int, repeats: int) -> dict:
    """Compare the connected-component target with one train-mode forward (fp32, with grad)."""
    torch.manual_seed(0)
    network = build_network(network_name, NUM_CLASSES).to(memory_format=torch.channels_last)
    image, _, _ = make_batch(batch, size)
    forward_ms, target_ms = [], []
    for step in range(repeats + 1):
        start = time.perf_counter()
        probs = network(image)
        elapsed_forward = time.perf_counter() - start
        hard = probs.detach().argmax(1).to(torch.uint8).numpy()
        start = time.perf_counter()
        connectivity_target(hard, NUM_CLASSES)
        elapsed_target = time.perf_counter() - start
        del probs
        if step > 0:
            forward_ms.append(elapsed_forward * 1000.0)
            target_ms.append(elapsed_target * 1000.0)
    return {
        "network": network_name,
        "forward_ms": statistics.median(forward_ms),
        "connectivity_target_ms": statistics.median(target_ms),
    }


def run_in_subprocess(config: dict) -> dict:
    command = [sys.executable, __file__, "--single", json.dumps(config)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def format_table(results: list[dict], connectivity: list[dict]) -> str:
    lines = [
        "| network | precision | experiment | step ms (median) | steps ms | peak RSS MB | peak above setup MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        steps = ", ".join(f"{value:.0f}" for value in row["step_ms_all"])
        lines.append(
            f"| {row['network']} | {row['precision']} | {row['experiment']} | {row['step_ms']:.0f} | {steps} | "
            f"{row['peak_rss_mb']:.0f} | {row['peak_above_setup_mb']:.0f} |"
        )
    lines += ["", "| network | precision | helpnet / pce | helpnet_batched / pce | batched / separate |", "|---|---|---|---|---|"]
    by_key = {(row["network"], row["precision"], row["experiment"]): row["step_ms"] for row in results}

    def format_ratio(numerator: float | None, denominator: float | None) -> str:
        return f"{numerator / denominator:.2f}" if numerator and denominator else "n/a"

    for network, precision in sorted({(row["network"], row["precision"]) for row in results}):
        pce = by_key.get((network, precision, "pce"))
        separate = by_key.get((network, precision, "helpnet"))
        batched = by_key.get((network, precision, "helpnet_batched"))
        lines.append(
            f"| {network} | {precision} | {format_ratio(separate, pce)} | {format_ratio(batched, pce)} "
            f"| {format_ratio(batched, separate)} |"
        )
    lines += ["", "| network | one forward ms (fp32, train mode) | connectivity target ms | ratio |", "|---|---|---|---|"]
    for row in connectivity:
        ratio = row["connectivity_target_ms"] / row["forward_ms"]
        lines.append(f"| {row['network']} | {row['forward_ms']:.0f} | {row['connectivity_target_ms']:.1f} | {ratio:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["unet_upstream", "unet_light"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--batch", type=int, default=4, help="images per batch")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (divisible by 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps; the table shows their median")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="torch intra-op threads (default: all CPUs; on a busy machine use fewer, see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--malloc-tuning",
        choices=["on", "off"],
        default="on",
        help="apply helpnet's glibc allocator settings as `helpnet train` does (default: on; "
        "HELPNET_MALLOC_TUNING=0 in the environment also turns them off)",
    )
    parser.add_argument(
        "--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
        help="layout of the network and the batch (helpnet train uses channels_last)",
    )
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    logger.info("torch %s, %d threads, load average %s", torch.__version__, args.threads, os.getloadavg())
    results = []
    for network in args.networks:
        for precision in args.precisions:
            for experiment in args.experiments:
                config = {
                    "network": network,
                    "precision": precision,
                    "experiment": experiment,
                    "batch": args.batch,
                    "size": args.size,
                    "warmup": args.warmup,
                    "repeats": args.repeats,
                    "threads": args.threads,
                    "malloc_tuning": args.malloc_tuning == "on",
                    "memory_format": args.memory_format,
                }
                row = run_in_subprocess(config)
                logger.info("%s %s %s: %.0f ms per step", network, precision, experiment, row["step_ms"])
                results.append(row)
    connectivity = [time_connectivity(network, args.batch, args.size, args.repeats) for network in args.networks]
    logger.info("load average after the run %s", os.getloadavg())
    print(format_table(results, connectivity))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "connectivity": connectivity}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
