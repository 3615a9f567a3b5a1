"""Subcommands ``helpnet evaluate``, ``summarize``, ``compare`` and ``plot``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from helpnet.evaluation.evaluate import EMPTY_PENALTIES, evaluate_fold, load_classes, write_metrics
from helpnet.evaluation.metrics import HD95_DEFINITIONS
from helpnet.evaluation.summary import compare, parse_settings, summarize

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate``, ``summarize``, ``compare`` and ``plot`` subcommands."""
    _register_evaluate(subparsers)
    _register_summarize(subparsers)
    _register_compare(subparsers)
    _register_plot(subparsers)


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score one fold's predictions against the dense labels (metrics.csv)",
        description="Score predictions/{case}.nii.gz against cases/{case}/label.nii.gz for each test case: "
        "Dice, HD95 and ASSD (mm, spacing from the label header) per class.",
    )
    parser.add_argument("--predictions-dir", required=True, type=Path, help="folder of {case}.nii.gz predictions")
    parser.add_argument("--cases-dir", required=True, type=Path, help="canonical cases folder, e.g. results/D/cases")
    parser.add_argument("--cases", required=True, nargs="+", metavar="CASE", help="test case ids of the fold")
    parser.add_argument("--dataset-info", required=True, type=Path, help="dataset.json with the class names")
    parser.add_argument("--fold", required=True, type=int, help="fold number written into the fold column")
    parser.add_argument("--output", required=True, type=Path, help="metrics.csv to write")
    parser.add_argument(
        "--hd95-definition",
        choices=HD95_DEFINITIONS,
        default="pooled",
        help="pooled: 95th percentile of both directions together (medpy); "
        "max_directed: larger of the two directed 95th percentiles (MONAI) (default: pooled)",
    )
    parser.add_argument(
        "--empty-penalty",
        choices=EMPTY_PENALTIES,
        default="none",
        help="distances of a class with exactly one empty mask: none records NaN, diagonal records "
        "the image diagonal in mm (default: none)",
    )
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    classes = load_classes(args.dataset_info)
    frame = evaluate_fold(
        args.predictions_dir,
        args.cases_dir,
        args.cases,
        classes,
        args.fold,
        hd95_definition=args.hd95_definition,
        empty_penalty=args.empty_penalty,
    )
    write_metrics(frame, args.output)
    logger.info("wrote %d rows for %d cases to %s", len(frame), len(args.cases), args.output)
    return 0


def _register_summarize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summarize",
        help="aggregate an experiment's fold metrics (summary.csv, summary.md, summary.json)",
        description="Aggregate the metrics.csv of every fold of one experiment into summary.csv, "
        "summary.md and summary.json.",
    )
    parser.add_argument("--metrics", required=True, nargs="+", type=Path, help="metrics.csv of each fold")
    parser.add_argument("--dataset-info", required=True, type=Path, help="dataset.json with the class names and order")
    parser.add_argument("--experiment", required=True, help="experiment name shown in the tables")
    parser.add_argument(
        "--settings-json",
        default="{}",
        help="JSON object (or a file holding one) of the experiment's settings, copied into summary.json",
    )
    parser.add_argument("--dataset", help="dataset name (default: the folder holding --dataset-info)")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the three summary files")
    parser.set_defaults(func=run_summarize)


def run_summarize(args: argparse.Namespace) -> int:
    summarize(
        args.metrics,
        args.dataset_info,
        args.experiment,
        parse_settings(args.settings_json),
        args.output_dir,
        dataset=args.dataset,
    )
    return 0


def _register_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="one Markdown table of Dice and HD95 across experiments (comparison.md)",
        description="Build one table across experiments from their summary.json files, in the order given.",
    )
    parser.add_argument("--summaries", required=True, nargs="+", type=Path, help="summary.json of each experiment")
    parser.add_argument("--dataset", help="dataset name for the title (default: the one in the summaries)")
    parser.add_argument("--output", required=True, type=Path, help="comparison.md to write")
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    compare(args.summaries, args.output, dataset=args.dataset)
    logger.info("wrote %s", args.output)
    return 0


def _register_plot(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="report figures: box plots, training curves, overlays",
        description="Draw the report figures as PNG.",
    )
    kinds = parser.add_subparsers(dest="plot_kind", required=True, metavar="KIND")

    boxplots = kinds.add_parser(
        "boxplots",
        help="Dice and HD95 per class and experiment",
        description="Box plots of Dice and HD95 per class (and class mean) for each experiment. The experiment "
        "name is the folder above fold{k} in results/{dataset}/{experiment}/fold{k}/metrics.csv.",
    )
    boxplots.add_argument("--metrics", required=True, nargs="+", type=Path, help="metrics.csv of every fold of every experiment")
    boxplots.add_argument("--output-dice", required=True, type=Path, help="PNG of the Dice box plot")
    boxplots.add_argument("--output-hd95", required=True, type=Path, help="PNG of the HD95 box plot")
    boxplots.set_defaults(func=run_plot_boxplots)

    curves = kinds.add_parser(
        "curves",
        help="loss terms and validation Dice against the step",
        description="Plot each loss column and val_dice of training_log.csv against the step, one line per fold.",
    )
    curves.add_argument("--logs", required=True, nargs="+", type=Path, help="training_log.csv of each fold")
    curves.add_argument("--output", required=True, type=Path, help="PNG to write")
    curves.set_defaults(func=run_plot_curves)

    overlays = kinds.add_parser(
        "overlays",
        help="best, median and worst case of a fold",
        description="Show image, scribble, prediction and label of the best, median and worst test case by "
        "mean Dice, each on its slice with the most labelled voxels.",
    )
    overlays.add_argument("--metrics", required=True, type=Path, help="metrics.csv of the fold")
    overlays.add_argument("--predictions-dir", required=True, type=Path, help="folder of {case}.nii.gz predictions")
    overlays.add_argument("--cases-dir", required=True, type=Path, help="canonical cases folder, e.g. results/D/cases")
    overlays.add_argument("--output", required=True, type=Path, help="PNG to write")
    overlays.set_defaults(func=run_plot_overlays)


def run_plot_boxplots(args: argparse.Namespace) -> int:
    from helpnet.evaluation.plots import plot_boxplots

    plot_boxplots(args.metrics, args.output_dice, args.output_hd95)
    return 0


def run_plot_curves(args: argparse.Namespace) -> int:
    from helpnet.evaluation.plots import plot_training_curves

    plot_training_curves(args.logs, args.output)
    return 0


def run_plot_overlays(args: argparse.Namespace) -> int:
    from helpnet.evaluation.plots import plot_overlays

    plot_overlays(args.metrics, args.predictions_dir, args.cases_dir, args.output)
    return 0
