"""Score the predictions of one fold against the dense labels and write ``metrics.csv``.

``metrics.csv`` has one row per test case and class, with the columns of
:data:`METRICS_CSV_COLUMNS`. Distances are in mm. A class whose prediction or reference mask is
empty gets ``nan`` distances (or the requested penalty), and its ``empty`` column names the empty mask.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from helpnet.evaluation.metrics import (
    HD95_DEFINITIONS,
    METRIC_COLUMNS,
    check_same_geometry,
    image_diagonal_mm,
    score_case,
)
from helpnet.io import atomic_path, load_nifti, spacing_of

logger = logging.getLogger(__name__)

METRICS_CSV_COLUMNS = ("case", "fold", *METRIC_COLUMNS)
"""Column order of ``metrics.csv``."""

EMPTY_PENALTIES = ("none", "diagonal")
"""Choices of ``--empty-penalty``: NaN distances, or the image diagonal in mm."""


def load_classes(dataset_info: str | os.PathLike) -> dict[int, str]:
    """Read the structure classes (index -> name, background excluded) from ``dataset.json``.

    ``dataset.json`` lists ``classes`` with background at index 0, so the structures are
    1..K in the order the list gives.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when it has no ``classes`` list with a background entry and at least one class.
    """
    path = Path(dataset_info)
    if not path.is_file():
        raise FileNotFoundError(f"dataset info not found: {path}; run the align stage to write it")
    info = json.loads(path.read_text(encoding="utf-8"))
    names = info.get("classes")
    if not isinstance(names, list) or len(names) < 2:
        raise ValueError(
            f"{path}: 'classes' must list background and at least one structure, got {names!r}; "
            "rerun the align stage to rewrite it"
        )
    return {index: str(name) for index, name in enumerate(names) if index > 0}


def _check_label_values(labels: np.ndarray, classes: dict[int, str], path: Path, role: str) -> None:
    allowed = {0, *classes}
    unexpected = sorted(set(np.unique(labels).tolist()) - allowed)
    if unexpected:
        raise ValueError(
            f"{role} {path} contains values {unexpected[:10]} outside the classes 0..{max(classes)}; "
            "check that it uses the canonical encoding of dataset.json"
        )


def evaluate_case(
    prediction_path: str | os.PathLike,
    label_path: str | os.PathLike,
    classes: dict[int, str],
    hd95_definition: str = "pooled",
    empty_penalty: str = "none",
) -> list[dict]:
    """Score one prediction file against its label file (see :func:`helpnet.evaluation.metrics.score_case`).

    The spacing is the label header's zooms. With ``empty_penalty="diagonal"`` a class with
    exactly one empty mask gets the diagonal of the volume in mm as its distances, else NaN.

    Raises:
        FileNotFoundError: when either file is missing.
        ValueError: when the geometries differ or a file contains values outside the classes.
    """
    prediction_path = Path(prediction_path)
    label_path = Path(label_path)
    if empty_penalty not in EMPTY_PENALTIES:
        raise ValueError(f"unknown empty penalty {empty_penalty!r}; use one of {', '.join(EMPTY_PENALTIES)}")
    check_same_geometry(prediction_path, label_path)

    prediction, _ = load_nifti(prediction_path, np.int32)
    label, header = load_nifti(label_path, np.int32)
    _check_label_values(prediction, classes, prediction_path, "prediction")
    _check_label_values(label, classes, label_path, "label")

    spacing = spacing_of(header)
    penalty = image_diagonal_mm(label.shape, spacing) if empty_penalty == "diagonal" else None
    return score_case(prediction, label, spacing, classes, hd95_definition=hd95_definition, empty_penalty=penalty)


def evaluate_fold(
    predictions_dir: str | os.PathLike,
    cases_dir: str | os.PathLike,
    cases: Sequence[str],
    classes: dict[int, str],
    fold: int,
    hd95_definition: str = "pooled",
    empty_penalty: str = "none",
) -> pd.DataFrame:
    """Score ``predictions_dir/{case}.nii.gz`` against ``cases_dir/{case}/label.nii.gz`` for every case.

    Returns:
        A data frame with the columns of :data:`METRICS_CSV_COLUMNS`, one row per case and
        class, cases in the given order.

    Raises:
        FileNotFoundError: when a prediction is missing.
        ValueError: when a case has no label, the geometries differ, or ``cases`` is empty.
    """
    if not cases:
        raise ValueError("no cases to evaluate; pass the test cases of the fold with --cases")
    if hd95_definition not in HD95_DEFINITIONS:
        raise ValueError(f"unknown HD95 definition {hd95_definition!r}; use one of {', '.join(HD95_DEFINITIONS)}")
    predictions_dir = Path(predictions_dir)
    cases_dir = Path(cases_dir)

    rows = []
    for case in tqdm(cases, desc=f"evaluate fold {fold}", unit="case", disable=None):
        label_path = cases_dir / case / "label.nii.gz"
        if not label_path.is_file():
            raise ValueError(
                f"case {case} has no dense label ({label_path} not found), so it cannot be a test case; "
                "fix the split so that only labelled cases are in test"
            )
        prediction_path = predictions_dir / f"{case}.nii.gz"
        if not prediction_path.is_file():
            raise FileNotFoundError(f"prediction not found: {prediction_path}; run the predict stage for fold {fold}")
        for row in evaluate_case(prediction_path, label_path, classes, hd95_definition, empty_penalty):
            rows.append({"case": case, "fold": int(fold), **row})
        logger.debug("scored %s: %s", case, [(r["class"], round(r["dice"], 4)) for r in rows[-len(classes) :]])
    return pd.DataFrame(rows, columns=list(METRICS_CSV_COLUMNS))


def write_metrics(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a metrics table as ``metrics.csv`` atomically; NaN is written as ``nan``."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, na_rep="nan", columns=list(METRICS_CSV_COLUMNS))


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``metrics.csv`` written by :func:`write_metrics`.

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when columns are missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}; run the evaluate stage first")
    # Only "nan" marks a missing value, so that a case or class named "NA" or "null" stays a string.
    frame = pd.read_csv(
        path,
        dtype={"case": str, "class": str, "empty": str},
        keep_default_na=False,
        na_values={"dice": ["nan"], "hd95": ["nan"], "assd": ["nan"]},
    )
    missing = [column for column in METRICS_CSV_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; rerun the evaluate stage to rewrite it")
    return frame
