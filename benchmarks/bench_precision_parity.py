"""Train the demo in fp32 and in bf16 with the same seeds and steps, and compare held-out Dice.

For each seed in ``--seeds``, runs the default workflow (config.yaml, the synthetic demo)
through Snakemake twice, once with ``training.precision: fp32`` and once with ``bf16``, each in
its own results folder, with only the ``helpnet`` experiment. The runs share one resources
folder, since precision and seed do not change the prepared data. The script prints the
cross-fold mean Dice of each run and the summed training time from each fold's
``training_log.csv``. Then it prints the bf16 − fp32 difference per seed, with its mean,
standard deviation and 95 % t-interval. Last comes the spread of each precision across seeds,
which shows how far runs end apart when only their random numbers differ. Unless
``--no-inference-parity`` is given, the fp32 run of each seed is then predicted and scored
again with ``evaluation.precision: bf16``: the same models, only the forward pass in bf16.
That difference is free of the chaos of training, so it shows the rounding alone.

Usage (from the repository root, in the project's environment):

    python benchmarks/bench_precision_parity.py --work /tmp/parity --cores 2 --seeds 42 7 11 23 31

Each seed costs two demo workflows and one rerun of prediction: about 10 minutes on 2 idle
vCPUs at the default budget (BENCHMARKS.md). Progress goes to ``WORK/RUN/snakemake.log``
(``snakemake_evaluation.log`` for the bf16 prediction of an fp32 run).

bf16 needs a CPU with native bf16 kernels (AVX512-BF16 or AMX) or a bf16-capable GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from scipy import stats

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
DATASET = "demo"
PRECISIONS = ("fp32", "bf16")


def run_workflow(work: Path, name: str, training: dict, experiment: str, cores: int,
                 evaluation: dict | None = None) -> float:
    """Run the demo DAG with the ``training`` overrides in ``work/name``; return the wall time in seconds.

    ``evaluation`` overrides keys of the config's ``evaluation`` block. Snakemake then reruns
    only prediction and what follows it, because the trained models are up to date.
    """
    results = work / name / "results"
    overlay = work / name / ("overlay.yaml" if evaluation is None else "overlay_evaluation.yaml")
    overlay.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "results_dir": str(results),
        "resources_dir": str(work / "resources"),
        "run_experiments": [experiment],
        "datasets": {DATASET: {"training": training}},
    }
    if evaluation is not None:
        values["evaluation"] = evaluation
    overlay.write_text(yaml.safe_dump(values))
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--snakefile", str(REPOSITORY / "Snakefile"),
               "--directory", str(REPOSITORY), "--configfile", str(REPOSITORY / "config.yaml"), str(overlay)]
    start = time.perf_counter()
    log_name = "snakemake.log" if evaluation is None else "snakemake_evaluation.log"
    with open(work / name / log_name, "w", encoding="utf-8") as log:
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


def paired_statistics(differences: list[float]) -> dict:
    """Return the mean, sample standard deviation and 95 % t-interval of paired differences."""
    count = len(differences)
    mean = statistics.fmean(differences)
    if count < 2:
        return {"count": count, "mean": mean, "sd": None, "ci95": None}
    sd = statistics.stdev(differences)
    half_width = stats.t.ppf(0.975, count - 1) * sd / math.sqrt(count)
    return {"count": count, "mean": mean, "sd": sd, "ci95": [mean - half_width, mean + half_width]}


def format_paired(label: str, paired: dict) -> str:
    """Return one line with the mean, standard deviation and 95 % t-interval of ``paired``."""
    interval = "[{:+.4f}, {:+.4f}]".format(*paired["ci95"])
    return (f"{label}, paired over {paired['count']} seeds: mean {paired['mean']:+.4f}, "
            f"sd {paired['sd']:.4f}, 95 % t-interval {interval}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs' results and logs")
    parser.add_argument("--cores", type=int, default=2, help="Snakemake --cores for each run (default: 2)")
    parser.add_argument("--experiment", default="helpnet", help="experiment of config.yaml to train (default: helpnet)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42],
        help="training seeds; each trains once in fp32 and once in bf16 (default: 42, the config's seed)",
    )
    parser.add_argument("--epochs", type=int, help="override the demo's training.epochs (default: config.yaml's)")
    parser.add_argument(
        "--inference-parity", action=argparse.BooleanOptionalAction, default=True,
        help="after each seed, also predict the held-out cases with the fp32-trained models in bf16 "
        "(evaluation.precision: bf16), which isolates the rounding of the forward pass from the training run",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    budget = {} if args.epochs is None else {"epochs": args.epochs}
    rows = {}
    for seed in args.seeds:
        trainings = {precision: {"precision": precision, "seed": seed, **budget} for precision in PRECISIONS}
        for precision, training in trainings.items():
            name = f"{precision}_seed{seed}"
            seconds = run_workflow(args.work, name, training, args.experiment, args.cores)
            rows[name] = {
                **read_run(args.work / name / "results", args.experiment),
                "precision": precision, "seed": seed, "wall_seconds": seconds,
            }
            logger.info("%s: mean Dice %.4f in %.0f s", name, rows[name]["dice_mean"], seconds)
        if args.inference_parity:
            source = f"fp32_seed{seed}"
            seconds = run_workflow(args.work, source, trainings["fp32"], args.experiment, args.cores,
                                   {"precision": "bf16"})
            name = f"{source}_bf16_inference"
            rows[name] = {
                **read_run(args.work / source / "results", args.experiment),
                "precision": "fp32 training, bf16 inference", "seed": seed, "wall_seconds": seconds,
            }
            logger.info("%s: mean Dice %.4f", name, rows[name]["dice_mean"])

    print("| run | mean Dice | Dice per fold | training s (sum of folds) | workflow wall s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        folds = ", ".join(f"{value:.3f}" for _, value in sorted(row["per_fold"].items()))
        print(f"| {name} | {row['dice_mean']:.4f} | {folds} | {row['train_seconds']:.0f} | {row['wall_seconds']:.0f} |")
    print()

    differences = [rows[f"bf16_seed{seed}"]["dice_mean"] - rows[f"fp32_seed{seed}"]["dice_mean"] for seed in args.seeds]
    report = {"runs": rows, "bf16_minus_fp32": paired_statistics(differences)}
    for seed, difference in zip(args.seeds, differences):
        print(f"seed {seed}: bf16 - fp32 mean Dice {difference:+.4f}")
    if args.inference_parity:
        inference = [rows[f"fp32_seed{seed}_bf16_inference"]["dice_mean"] - rows[f"fp32_seed{seed}"]["dice_mean"]
                     for seed in args.seeds]
        report["bf16_inference_minus_fp32"] = paired_statistics(inference)
        for seed, difference in zip(args.seeds, inference):
            print(f"seed {seed}: same fp32 models predicted in bf16 - in fp32, mean Dice {difference:+.4f}")
    for precision in PRECISIONS:
        values = [rows[f"{precision}_seed{seed}"]["dice_mean"] for seed in args.seeds]
        spread = statistics.stdev(values) if len(values) > 1 else None
        report[f"{precision}_across_seeds"] = {"mean": statistics.fmean(values), "sd": spread}
        print(f"{precision} over {len(values)} seeds: mean {statistics.fmean(values):.4f}"
              + ("" if spread is None else f", sd {spread:.4f}"))
    if len(args.seeds) > 1:
        print(format_paired("bf16 - fp32 training", report["bf16_minus_fp32"]))
        if args.inference_parity:
            print(format_paired("bf16 - fp32 prediction of the same fp32 models", report["bf16_inference_minus_fp32"]))
    (args.work / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
