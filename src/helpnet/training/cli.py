"""Subcommands ``helpnet preprocess``, ``helpnet train`` and ``helpnet predict``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger(__name__)


def _json_argument(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"invalid JSON ({error}): {text[:200]}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _run_preprocess(args: argparse.Namespace) -> int:
    from helpnet.training.preprocess import preprocess_case

    preprocess_case(args.case_dir, args.output, args.target_spacing, args.edge)
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from helpnet.training.runtime import tune_host_allocator
    from helpnet.training.settings import TrainingSettings
    from helpnet.training.trainer import TrainingInterrupted, train_fold

    tune_host_allocator()

    settings = TrainingSettings.from_dict(args.settings, args.experiment)
    try:
        train_fold(args.preprocessed_dir, args.splits, args.fold, args.dataset_info, settings, args.output_dir)
    except TrainingInterrupted as stop:
        logger.warning("training stopped by signal; rerun the same command to resume")
        sys.exit(stop.code)
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from helpnet.training.inference import predict_cases
    from helpnet.training.runtime import tune_host_allocator

    tune_host_allocator()
    predict_cases(args.checkpoint, args.cases_dir, args.cases, args.output_dir, args.device, args.batch_size,
                  args.precision)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    preprocess = subparsers.add_parser(
        "preprocess",
        help="resample one case's slices to the target spacing",
        description="Resample every slice of one case to the target in-plane spacing and store the z-scored "
        "image with its scribble, label (where present) and edge map (with --edge) in one .npz file, "
        "which training reads.",
    )
    preprocess.add_argument("--case-dir", required=True, help="canonical case folder (results/D/cases/C)")
    preprocess.add_argument("--edge", help="edge volume of the case (results/D/edges/C.nii.gz)")
    preprocess.add_argument("--target-spacing", type=float, required=True, help="in-plane spacing in mm")
    preprocess.add_argument("--output", required=True, help="output .npz (results/D/preprocessed/C.npz)")
    preprocess.set_defaults(func=_run_preprocess)

    train = subparsers.add_parser(
        "train",
        help="train one fold (resumes from resume/checkpoint_latest.pt)",
        description="Train one fold on its scribbled training cases and keep the best and final checkpoints. "
        "A rerun with the same arguments resumes from OUTPUT_DIR/resume/checkpoint_latest.pt.",
    )
    train.add_argument("--preprocessed-dir", required=True, help="folder of preprocessed {case}.npz files")
    train.add_argument("--splits", required=True, help="splits.json")
    train.add_argument("--fold", type=int, required=True, help="fold index, from 0")
    train.add_argument("--dataset-info", required=True, help="dataset.json written by the align stage")
    train.add_argument(
        "--settings", type=_json_argument, default={},
        help="JSON object with the keys of the config's `training` block (network, patch_size, epochs, lr, "
        "precision, loss, ...; see workflow/schemas/config.schema.yaml); missing keys take their defaults",
    )
    train.add_argument("--experiment", type=_json_argument, default={},
                       help="JSON object of experiment switches (hpc, egpl, spr_connectivity, spr_edges)")
    train.add_argument("--output-dir", required=True, help="fold output folder")
    train.set_defaults(func=_run_train)

    predict = subparsers.add_parser(
        "predict",
        help="predict cases with one checkpoint or an ensemble",
        description="Predict whole volumes with the settings stored in the checkpoint and write one label "
        "NIfTI per case, on the image's grid. With several checkpoints their probabilities are averaged.",
    )
    predict.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint(s); several are averaged")
    predict.add_argument("--cases-dir", required=True, help="folder of canonical cases")
    predict.add_argument("--cases", nargs="+", required=True, help="case ids to predict")
    predict.add_argument("--output-dir", required=True, help="folder for {case}.nii.gz predictions")
    predict.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto, CUDA when present)")
    predict.add_argument("--batch-size", type=int, default=32, help="slices per forward pass (default: 32)")
    predict.add_argument(
        "--precision", default="checkpoint", choices=["checkpoint", "auto", "fp32", "bf16", "fp16"],
        help="precision of the forward passes (default: the one the model was trained in; fp16 needs CUDA)",
    )
    predict.set_defaults(func=_run_predict)
