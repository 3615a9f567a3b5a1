"""Time one HELPNet training step and measure its peak memory, on the CPU or a CUDA GPU.

A step is forward over the views, all losses, backward and one Adam step (with a gradient
scaler in fp16). Each configuration (network × precision × experiment × batch) runs in its
own subprocess so that its peak memory is not inflated by an earlier configuration: the
process's resident memory (``ru_maxrss``) on the CPU, ``torch.cuda.max_memory_allocated`` on
a GPU. One extra step under ``torch.utils.flop_counter.FlopCounterMode`` counts the step's
matrix FLOPs, which give the achieved TFLOP/s (and, with ``--peak-tflops``, the share of the
device's peak). On the CPU the script also times the connected-component target of the
connectivity loss against one forward pass. Results go to stdout as Markdown tables and,
with ``--json``, to a file.

Examples (the CPU run recorded in BENCHMARKS.md, then the GPU plan of benchmarks/gpu_step.sh):

    python benchmarks/bench_step.py --warmup 2 --repeats 3 --threads 2 --json /tmp/step_results.json
    python benchmarks/bench_step.py --device cuda --batch 4 16 32 --precisions fp32 bf16 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import itertools
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
from helpnet.model import NETWORKS, SIZE_MULTIPLE, build_network
from helpnet.training.runtime import autocast_context, tune_host_allocator

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


def count_step_flops(step) -> int:
    """Run ``step`` once under FlopCounterMode and return its floating-point operations.

    The counter covers the matrix operations (convolutions forward and backward, matrix
    products). Elementwise work such as BatchNorm and ReLU is not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def run_single(config: dict) -> dict:
    """Run one configuration in this process and return its timings and memory."""
    device = torch.device(config["device"])
    if device.type == "cpu":
        if config["malloc_tuning"]:
            tune_host_allocator()
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    memory_format = torch.channels_last if config["memory_format"] == "channels_last" else torch.contiguous_format
    network = build_network(config["network"], NUM_CLASSES).to(device=device, memory_format=memory_format)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-4)
    objective = HelpnetObjective(ObjectiveSettings(**EXPERIMENTS[config["experiment"]]), NUM_CLASSES)
    image, scribble, edge = (tensor.to(device) for tensor in make_batch(config["batch"], config["size"]))
    image = image.contiguous(memory_format=memory_format)
    scaler = torch.amp.GradScaler(device.type, enabled=config["precision"] == "fp16")
    generator = torch.Generator().manual_seed(42)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, config["precision"]):
            total, _ = objective(network, image, scribble, edge, generator)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()

    baseline_mb = current_rss_mb()
    # The counted step doubles as the first warm-up step.
    flops = count_step_flops(step)
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    untimed = max(config["warmup"] - 1, 0)
    times = []
    for index in range(untimed + config["repeats"]):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        elapsed = time.perf_counter() - start
        if index >= untimed:
            times.append(elapsed * 1000.0)
    step_ms = statistics.median(times)
    row = {
        **config,
        "step_ms": step_ms,
        "step_ms_all": times,
        "step_tflop": flops / 1e12,
        "tflops_per_s": flops / 1e12 / (step_ms / 1000.0),
        "peak_rss_mb": peak_rss_mb(),
        "peak_above_setup_mb": peak_rss_mb() - baseline_mb,
    }
    if device.type == "cuda":
        row["device_name"] = torch.cuda.get_device_name(device)
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


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
    """Run one configuration in a child process; raise RuntimeError with the child's error if it fails."""
    command = [sys.executable, __file__, "--single", json.dumps(config)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        error_lines = result.stderr.strip().splitlines()[-15:]
        raise RuntimeError(
            f"the benchmark of {config['network']} {config['precision']} {config['experiment']} batch {config['batch']} "
            f"failed (exit status {result.returncode}):\n" + "\n".join(error_lines)
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def format_table(results: list[dict], connectivity: list[dict], peak_tflops: float | None = None) -> str:
    on_gpu = any(row["device"] != "cpu" for row in results)
    memory_header = "peak GPU MB" if on_gpu else "peak RSS MB | peak above setup MB"
    peak_header = f" % of {peak_tflops:g} TFLOP/s |" if peak_tflops else ""
    lines = [
        f"| network | precision | experiment | batch | step ms (median) | steps ms | TFLOP per step | TFLOP/s |{peak_header} "
        f"{memory_header} |",
        "|" + "---|" * (8 + bool(peak_tflops) + (1 if on_gpu else 2)),
    ]
    for row in results:
        # Steps under 100 ms (GPU, small sizes) keep one decimal.
        digits = 1 if row["step_ms"] < 100 else 0
        steps = ", ".join(f"{value:.{digits}f}" for value in row["step_ms_all"])
        step_ms = f"{row['step_ms']:.{digits}f}"
        peak = f" {100 * row['tflops_per_s'] / peak_tflops:.1f} |" if peak_tflops else ""
        memory = f"{row['peak_gpu_mb']:.0f}" if on_gpu else f"{row['peak_rss_mb']:.0f} | {row['peak_above_setup_mb']:.0f}"
        lines.append(
            f"| {row['network']} | {row['precision']} | {row['experiment']} | {row['batch']} | {step_ms} | {steps} | "
            f"{row['step_tflop']:.4g} | {row['tflops_per_s']:.3g} |{peak} {memory} |"
        )
    lines += [
        "",
        "TFLOP per step: matrix FLOPs (convolutions forward and backward) counted by torch's FlopCounterMode; "
        "TFLOP/s divides them by the median step time.",
        "",
        "| network | precision | batch | helpnet / pce | helpnet_batched / pce | batched / separate |",
        "|---|---|---|---|---|---|",
    ]
    by_key = {(row["network"], row["precision"], row["batch"], row["experiment"]): row["step_ms"] for row in results}

    def format_ratio(numerator: float | None, denominator: float | None) -> str:
        return f"{numerator / denominator:.2f}" if numerator and denominator else "n/a"

    settings = dict.fromkeys((row["network"], row["precision"], row["batch"]) for row in results)
    for network, precision, batch in settings:
        pce = by_key.get((network, precision, batch, "pce"))
        separate = by_key.get((network, precision, batch, "helpnet"))
        batched = by_key.get((network, precision, batch, "helpnet_batched"))
        lines.append(
            f"| {network} | {precision} | {batch} | {format_ratio(separate, pce)} | {format_ratio(batched, pce)} "
            f"| {format_ratio(batched, separate)} |"
        )
    if not connectivity:
        return "\n".join(lines)
    lines += [
        "",
        "Connected-component target of the connectivity loss (labelling the argmax on the host) against one "
        "train-mode fp32 forward of the same batch:",
        "",
        "| network | one forward ms | connectivity target ms | target / forward |",
        "|---|---|---|---|",
    ]
    for row in connectivity:
        ratio = row["connectivity_target_ms"] / row["forward_ms"]
        lines.append(f"| {row['network']} | {row['forward_ms']:.0f} | {row['connectivity_target_ms']:.1f} | {ratio:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["unet_upstream", "unet_light"], choices=sorted(NETWORKS),
                        help="networks to time (default: unet_upstream unet_light)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="fp16 runs with a gradient scaler, as `helpnet train` does, and only on CUDA")
    parser.add_argument(
        "--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS),
        help="pce: one forward, scribble loss only; helpnet: the full objective with three forwards; "
        "helpnet_batched: the same with the three views in one forward (default: all three)",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[4], help="images per batch (several values: one row each)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument(
        "--peak-tflops", type=float,
        help="the device's peak rate for the fastest precision, in TFLOP/s. Adds a column with each step's share of it",
    )
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
    if args.size % SIZE_MULTIPLE:
        parser.error(f"--size {args.size} is not divisible by {SIZE_MULTIPLE} (the UNets pool four times); try 224")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} needs a CUDA build of torch and a visible GPU; this torch is {torch.__version__}")
    if device.type == "cpu" and "fp16" in args.precisions:
        parser.error("--precisions fp16 needs CUDA (helpnet train rejects fp16 on the CPU); use fp32 or bf16")
    torch.set_num_threads(args.threads)
    logger.info("torch %s, device %s, %d threads, load average %s", torch.__version__, device, args.threads,
                os.getloadavg())
    results = []
    for network, precision, experiment, batch in itertools.product(
        args.networks, args.precisions, args.experiments, args.batch
    ):
        config = {
            "device": args.device,
            "network": network,
            "precision": precision,
            "experiment": experiment,
            "batch": batch,
            "size": args.size,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "threads": args.threads,
            "malloc_tuning": args.malloc_tuning == "on",
            "memory_format": args.memory_format,
        }
        row = run_in_subprocess(config)
        logger.info("%s %s %s batch %d: %.1f ms per step, %.2f TFLOP/s", network, precision, experiment, batch,
                    row["step_ms"], row["tflops_per_s"])
        results.append(row)
    # The connected-component target runs on the host in every case; it is timed on the CPU only.
    connectivity = []
    if device.type == "cpu":
        connectivity = [time_connectivity(network, args.batch[0], args.size, args.repeats) for network in args.networks]
    logger.info("load average after the run %s", os.getloadavg())
    print(format_table(results, connectivity, args.peak_tflops))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "connectivity": connectivity}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
