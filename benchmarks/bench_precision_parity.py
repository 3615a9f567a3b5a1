"""Train the demo in fp32 and in bf16 with the same seed and steps, and compare held-out Dice.

Runs the default workflow (config.yaml, the synthetic demo) twice through Snakemake, once with
``training.precision: fp32`` and once with ``bf16``, each in its own results folder, with only
the ``helpnet`` experiment. Prints the cross-fold mean Dice of each run, their difference and the
summed training time from each fold's ``training_log.csv``. With ``--control-seed N`` a third
run trains in fp32 with ``training.seed: N``, which shows how far two fp32 runs that differ only
in their random numbers end apart.

Usage (from the repository root, in the project's environment):

    python benchmarks/bench_precision_parity.py --work /tmp/parity --cores 2

bf16 needs a CPU with native bf16 kernels (AVX512-BF16 or AMX) or a bf16-capable GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
DATASET = "demo"


def run_workflow(work: Path, name: str, training: dict, experiment: str, cores: int) -> float:
    """Run the demo DAG with the ``training`` overrides in ``work/name``; return the wall time in seconds."""
    results = work / name / "results"
    overlay = work / name / "overlay.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.write_text(yaml.safe_dump({
        "results_dir": str(results),
        "resources_dir": str(work / name / "resources"),
        "run_experiments": [experiment],
        "datasets": {DATASET: {"training": training}},
    }))
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--snakefile", str(REPOSITORY / "Snakefile"),
               "--directory", str(REPOSITORY), "--configfile", str(REPOSITORY / "config.yaml"), str(overlay)]
    start = time.perf_counter()
    with open(work / name / "snakemake.log", "w", encoding="utf-8") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def read_run(results: Path, experiment: str) -> dict:
    """Return mean Dice, per-fold Dice and summed training seconds of one finished run."""
    summary = json.loads((results / DATASET / experiment / "summary.json").read_text())
    train_seconds = 0.0
    for log_path in sorted((results / DATASET / experiment).glob("fold*/training_log.csv")):
        with open(log_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        train_seconds += float(rows[-1]["time_s"])
    return {
        "dice_mean": summary["mean"]["dice_mean"],
        "per_fold": {fold: values["dice_mean"] for fold, values in summary["per_fold"].items()},
        "train_seconds": train_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the two runs' results and logs")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--experiment", default="helpnet")
    parser.add_argument("--control-seed", type=int, help="also train in fp32 with this training.seed")
    parser.add_argument("--epochs", type=int, help="override the demo's training.epochs (default: config.yaml's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    budget = {} if args.epochs is None else {"epochs": args.epochs}
    runs = {"fp32": {"precision": "fp32", **budget}, "bf16": {"precision": "bf16", **budget}}
    if args.control_seed is not None:
        runs[f"fp32_seed{args.control_seed}"] = {"precision": "fp32", "seed": args.control_seed, **budget}
    rows = {}
    for name, training in runs.items():
        seconds = run_workflow(args.work, name, training, args.experiment, args.cores)
        rows[name] = {**read_run(args.work / name / "results", args.experiment), "wall_seconds": seconds}
        logger.info("%s: mean Dice %.4f in %.0f s", name, rows[name]["dice_mean"], seconds)

    print("| run | mean Dice | Dice per fold | training s (sum of folds) | workflow wall s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        folds = ", ".join(f"{value:.3f}" for _, value in sorted(row["per_fold"].items()))
        print(f"| {name} | {row['dice_mean']:.4f} | {folds} | {row['train_seconds']:.0f} | {row['wall_seconds']:.0f} |")
    print()
    for name in rows:
        if name != "fp32":
            print(f"{name} - fp32 mean Dice: {rows[name]['dice_mean'] - rows['fp32']['dice_mean']:+.4f}")
    (args.work / "parity.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
