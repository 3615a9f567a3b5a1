"""The shuffled-scribble control run shared by the learning tests.

It retrains one fold of a finished workflow run with the same settings, after the classes of
the scribbled pixels have been permuted among those pixels, and scores the fold's test cases.
A method that learns from the scribbles must beat this control clearly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from helpnet.evaluation.metrics import score_case
from helpnet.io import load_nifti, spacing_of
from helpnet.training.inference import predict_cases
from helpnet.training.preprocess import load_preprocessed
from helpnet.training.settings import TrainingSettings
from helpnet.training.trainer import train_fold


def shuffled_scribble_dice(dataset_results: Path, experiment: str, fold: int, work: Path,
                           classes: dict[int, str]) -> float:
    """Return the mean held-out Dice of ``fold`` retrained on class-shuffled scribbles."""
    shuffled_dir = work / "preprocessed"
    shuffled_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for npz in (dataset_results / "preprocessed").glob("*.npz"):
        data = load_preprocessed(npz)
        scribble = data["scribble"].copy()
        annotated = scribble != 255
        scribble[annotated] = rng.permutation(scribble[annotated])
        np.savez(shuffled_dir / npz.name, **{**data, "scribble": scribble})

    checkpoint = dataset_results / experiment / f"fold{fold}" / "checkpoint_final.pt"
    meta = torch.load(checkpoint, weights_only=False)["meta"]
    settings = TrainingSettings.from_saved(meta["settings"])
    train_fold(shuffled_dir, dataset_results / "splits.json", fold, dataset_results / "dataset.json", settings,
               work / "train")

    test_cases = json.loads((dataset_results / "splits.json").read_text())["folds"][fold]["test"]
    predict_cases([work / "train" / "checkpoint_final.pt"], dataset_results / "cases", test_cases, work / "pred", "cpu")
    scores = []
    for case in test_cases:
        prediction, _ = load_nifti(work / "pred" / f"{case}.nii.gz", np.uint8)
        label, header = load_nifti(dataset_results / "cases" / case / "label.nii.gz", np.uint8)
        scores += [row["dice"] for row in score_case(prediction, label, spacing_of(header), classes)]
    return float(np.mean(scores))
