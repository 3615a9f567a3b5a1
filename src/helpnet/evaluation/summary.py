"""Aggregate the per-fold ``metrics.csv`` files of one experiment, and compare experiments.

Aggregation rules, stated in every ``summary.md``:

- Each row of ``metrics.csv`` is one test case and class in one fold. Per class, the mean and the
  population standard deviation (``ddof=0``) run over all test cases of all folds given.
- The "mean" row first averages the classes of each case, then averages those case means. A
  case whose classes do not all have a finite distance gets no case-mean distance, so it is left
  out of the mean HD95 and ASSD and counted instead.
- NaN distances (one mask empty, no penalty) are left out of the distance means and counted, so a
  missed structure never lowers a mean distance. Dice of such a class is 0 and stays in the mean.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpnet.evaluation.evaluate import load_classes, read_metrics
from helpnet.io import write_json, write_text

logger = logging.getLogger(__name__)

SUMMARY_CSV_COLUMNS = (
    "class_index",
    "class",
    "n_cases",
    "dice_mean",
    "dice_std",
    "hd95_mean",
    "hd95_std",
    "hd95_n",
    "assd_mean",
    "assd_std",
    "assd_n",
    "n_empty_pred",
    "n_empty_ref",
    "n_empty_both",
)
"""Columns of ``summary.csv``; ``hd95_n`` and ``assd_n`` count the finite values in each mean."""

MEAN_ROW = "mean"
"""Name in the ``class`` column of the row that averages the classes of each case first."""

AGGREGATION_NOTE = (
    "Per class: mean ± population standard deviation over test cases of all folds. "
    "Mean column: classes averaged per case first, then over cases. "
    "NaN distances (one mask empty) are left out of distance means and counted; "
    "a case with any NaN class distance is left out of the mean-column distances."
)


def _statistics(values: pd.Series) -> tuple[float, float, int]:
    """Mean, population standard deviation and count of the finite values."""
    finite = values[np.isfinite(values.to_numpy(dtype=np.float64))].to_numpy(dtype=np.float64)
    if finite.size == 0:
        return math.nan, math.nan, 0
    return float(finite.mean()), float(finite.std(ddof=0)), int(finite.size)


def load_fold_metrics(paths: Sequence[str | os.PathLike], classes: dict[int, str]) -> pd.DataFrame:
    """Read and concatenate ``metrics.csv`` files, checking them against the dataset's classes.

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: when no path is given, a class index or name does not match ``classes``, or
            one case, fold and class appears twice (the same file given twice).
    """
    if not paths:
        raise ValueError("no metrics files given; pass the metrics.csv of each fold with --metrics")
    frames = []
    for path in paths:
        frame = read_metrics(path)
        for class_index, class_name in frame[["class_index", "class"]].drop_duplicates().itertuples(index=False):
            if classes.get(int(class_index)) != class_name:
                raise ValueError(
                    f"{path}: class {class_index} is named {class_name!r} but dataset.json names it "
                    f"{classes.get(int(class_index))!r}; evaluate with the same dataset.json"
                )
        frame["source"] = str(path)
        frames.append(frame)
    metrics = pd.concat(frames, ignore_index=True)

    duplicated = metrics.duplicated(["fold", "case", "class_index"], keep=False)
    if duplicated.any():
        first = metrics[duplicated].iloc[0]
        sources = sorted(set(metrics[duplicated & (metrics["case"] == first["case"])]["source"]))
        raise ValueError(
            f"case {first['case']} of fold {first['fold']} appears more than once (in {', '.join(sources)}); "
            "pass each fold's metrics.csv once"
        )
    repeated = metrics.groupby("case")["fold"].nunique()
    if (repeated > 1).any():
        logger.warning(
            "%d cases are test cases in more than one fold (for example %s); each fold's result counts once",
            int((repeated > 1).sum()),
            repeated[repeated > 1].index[0],
        )
    return metrics


def case_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """Average the classes of each case and fold.

    Returns:
        One row per (fold, case) with ``dice`` (mean over classes) and ``hd95``, ``assd`` (mean
        over classes, NaN unless every class distance is finite).
    """
    grouped = metrics.groupby(["fold", "case"], sort=False)
    result = grouped["dice"].mean().to_frame()
    for column in ("hd95", "assd"):
        # A plain mean would drop NaN classes and let a missed structure shrink the case mean.
        result[column] = grouped[column].agg(lambda v: float(v.mean()) if np.all(np.isfinite(v)) else math.nan)
    return result.reset_index()


def aggregate(metrics: pd.DataFrame, classes: dict[int, str]) -> list[dict]:
    """Compute one ``summary.csv`` row per class (in the order of ``classes``) and the mean row."""
    rows = []
    for class_index, class_name in classes.items():
        subset = metrics[metrics["class_index"] == class_index]
        row: dict = {"class_index": class_index, "class": class_name, "n_cases": int(len(subset))}
        for column in ("dice", "hd95", "assd"):
            mean, std, count = _statistics(subset[column])
            row[f"{column}_mean"], row[f"{column}_std"] = mean, std
            if column != "dice":
                row[f"{column}_n"] = count
        for state in ("pred", "ref", "both"):
            row[f"n_empty_{state}"] = int((subset["empty"] == state).sum())
        rows.append(row)

    per_case = case_means(metrics)
    mean_row: dict = {"class_index": "", "class": MEAN_ROW, "n_cases": int(len(per_case))}
    for column in ("dice", "hd95", "assd"):
        mean, std, count = _statistics(per_case[column])
        mean_row[f"{column}_mean"], mean_row[f"{column}_std"] = mean, std
        if column != "dice":
            mean_row[f"{column}_n"] = count
    # For the mean row the counts are cases with at least one class in that state.
    for state in ("pred", "ref", "both"):
        flagged = metrics[metrics["empty"] == state][["fold", "case"]].drop_duplicates()
        mean_row[f"n_empty_{state}"] = int(len(flagged))
    rows.append(mean_row)
    return rows


def _to_json_value(value):
    """Convert numpy scalars to Python ones and NaN to None (NaN is not valid JSON), recursively."""
    if isinstance(value, dict):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def package_versions() -> dict[str, str | None]:
    """Versions of helpnet, torch, numpy and Python, None for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for package in ("helpnet", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    return versions


def empty_policy(metrics: pd.DataFrame) -> str:
    """Describe how the distances of classes with exactly one empty mask were recorded in ``metrics``."""
    one_empty = metrics[metrics["empty"].isin(["pred", "ref"])]
    if one_empty.empty:
        return "no class had exactly one empty mask"
    if np.all(np.isfinite(one_empty["hd95"].to_numpy(dtype=np.float64))):
        return "distances of a class with exactly one empty mask were set to a penalty and are included in the means"
    if np.all(np.isnan(one_empty["hd95"].to_numpy(dtype=np.float64))):
        return "distances of a class with exactly one empty mask are NaN and left out of the distance means"
    return "distances of a class with exactly one empty mask are partly NaN (left out) and partly a penalty (included)"


def build_summary(
    metrics: pd.DataFrame,
    classes: dict[int, str],
    dataset: str,
    experiment: str,
    settings: dict,
) -> dict:
    """Build the content of ``summary.json``: aggregates, per-case values, settings and versions."""
    rows = aggregate(metrics, classes)
    per_fold = {}
    for fold, fold_metrics in metrics.groupby("fold", sort=True):
        fold_cases = case_means(fold_metrics)
        dice_mean, dice_std, _ = _statistics(fold_cases["dice"])
        hd95_mean, hd95_std, hd95_count = _statistics(fold_cases["hd95"])
        per_fold[str(int(fold))] = {
            "n_cases": int(len(fold_cases)),
            "dice_mean": dice_mean,
            "dice_std": dice_std,
            "hd95_mean": hd95_mean,
            "hd95_std": hd95_std,
            "hd95_n": hd95_count,
        }
    case_columns = ["case", "fold", "class_index", "class", "dice", "hd95", "assd", "pred_voxels", "ref_voxels", "empty"]
    ordered = metrics[case_columns].sort_values(["fold", "case", "class_index"], kind="stable")
    cases = ordered.to_dict(orient="records")
    summary = {
        "dataset": dataset,
        "experiment": experiment,
        "classes": list(classes.values()),
        "aggregation": AGGREGATION_NOTE,
        "empty_policy": empty_policy(metrics),
        "folds": sorted(int(f) for f in metrics["fold"].unique()),
        "per_class": {row["class"]: {k: v for k, v in row.items() if k != "class"} for row in rows[:-1]},
        "mean": {k: v for k, v in rows[-1].items() if k not in ("class", "class_index")},
        "per_fold": per_fold,
        "cases": cases,
        "settings": settings,
        "versions": package_versions(),
        "metrics_files": sorted(set(metrics["source"])) if "source" in metrics else [],
    }
    return _to_json_value(summary)


def format_value(mean: float | None, std: float | None, digits: int) -> str:
    """Format ``mean ± std`` with ``digits`` decimals, or an en dash when there is no value."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _setting(settings: object, key: str) -> object:
    """Look ``key`` up at the top of the settings or in their ``evaluation`` section, where the workflow puts it."""
    if not isinstance(settings, dict):
        return None
    if key in settings:
        return settings[key]
    evaluation = settings.get("evaluation")
    return evaluation.get(key) if isinstance(evaluation, dict) else None


def format_summary_markdown(summary: dict) -> str:
    """Render ``summary.md``: Dice, HD95 and ASSD per class and mean, empty-mask counts and policy."""
    classes = summary["classes"]
    columns = [summary["per_class"][name] for name in classes] + [summary["mean"]]
    lines = [
        f"# {summary['experiment']} on {summary['dataset']}",
        "",
        f"Test cases: {summary['mean']['n_cases']} from folds {', '.join(str(f) for f in summary['folds'])}.",
        "",
        "| Metric | " + " | ".join([*classes, "Mean"]) + " |",
        "|---|" + "---|" * (len(classes) + 1),
        "| Dice | " + " | ".join(format_value(c["dice_mean"], c["dice_std"], 3) for c in columns) + " |",
        "| HD95 (mm) | " + " | ".join(format_value(c["hd95_mean"], c["hd95_std"], 2) for c in columns) + " |",
        "| ASSD (mm) | " + " | ".join(format_value(c["assd_mean"], c["assd_std"], 2) for c in columns) + " |",
        "| Cases in distance means | " + " | ".join(str(c["hd95_n"]) for c in columns) + " |",
        "",
        summary["aggregation"],
        "",
    ]
    counts = ", ".join(
        f"{name} {summary['per_class'][name]['n_empty_pred']} / {summary['per_class'][name]['n_empty_ref']} / "
        f"{summary['per_class'][name]['n_empty_both']}"
        for name in classes
    )
    lines += [
        f"Empty masks (prediction empty / reference empty / both empty): {counts}. "
        "Dice is 0 when exactly one mask is empty and 1 when both are; distances are 0 when both are empty; "
        f"{summary['empty_policy']}.",
        "",
    ]
    hd95_definition = _setting(summary.get("settings"), "hd95_definition")
    if hd95_definition:
        lines += [f"HD95 definition: {hd95_definition}.", ""]
    if len(summary["per_fold"]) > 1:
        lines += ["| Fold | Cases | Mean Dice | Mean HD95 (mm) |", "|---|---|---|---|"]
        for fold, values in summary["per_fold"].items():
            lines.append(
                f"| {fold} | {values['n_cases']} | {format_value(values['dice_mean'], values['dice_std'], 3)} | "
                f"{format_value(values['hd95_mean'], values['hd95_std'], 2)} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_summary(summary: dict, output_dir: str | os.PathLike) -> None:
    """Write ``summary.csv``, ``summary.md`` and ``summary.json`` into ``output_dir`` atomically."""
    output_dir = Path(output_dir)
    rows = []
    for name in summary["classes"]:
        rows.append({"class": name, **summary["per_class"][name]})
    rows.append({"class": MEAN_ROW, "class_index": "", **summary["mean"]})
    frame = pd.DataFrame(rows, columns=list(SUMMARY_CSV_COLUMNS))
    write_text(output_dir / "summary.csv", frame.to_csv(index=False, na_rep="nan"))
    write_text(output_dir / "summary.md", format_summary_markdown(summary))
    write_json(output_dir / "summary.json", summary)


def parse_settings(text: str) -> dict:
    """Parse ``--settings-json``: a JSON object, or the path of a file holding one.

    Raises:
        ValueError: when the text is neither a JSON object nor a readable JSON file.
    """
    source = "--settings-json"
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source = text
        text = Path(text).read_text(encoding="utf-8")
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON ({error}); pass a JSON object such as '{{\"seed\": 0}}'") from error
    if not isinstance(settings, dict):
        raise ValueError(f"{source} must be a JSON object, got {type(settings).__name__}")
    return settings


def summarize(
    metrics_paths: Sequence[str | os.PathLike],
    dataset_info: str | os.PathLike,
    experiment: str,
    settings: dict,
    output_dir: str | os.PathLike,
    dataset: str | None = None,
) -> dict:
    """Aggregate the folds of one experiment and write ``summary.{csv,md,json}`` into ``output_dir``.

    ``dataset`` defaults to the name of the folder holding ``dataset_info``
    (``results/{dataset}/dataset.json``).
    """
    classes = load_classes(dataset_info)
    metrics = load_fold_metrics(metrics_paths, classes)
    summary = build_summary(metrics, classes, dataset or Path(dataset_info).resolve().parent.name, experiment, settings)
    write_summary(summary, output_dir)
    logger.info(
        "%s: mean Dice %s over %d cases", experiment, format_value(summary["mean"]["dice_mean"], None, 4), summary["mean"]["n_cases"]
    )
    return summary


def load_summary(path: str | os.PathLike) -> dict:
    """Read a ``summary.json`` written by :func:`write_summary`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"summary not found: {path}; run the summarize stage first")
    summary = json.loads(path.read_text(encoding="utf-8"))
    for key in ("dataset", "experiment", "classes", "per_class", "mean"):
        if key not in summary:
            raise ValueError(f"{path} lacks the key {key!r}; rerun the summarize stage to rewrite it")
    return summary


def format_comparison_markdown(summaries: Sequence[dict], dataset: str) -> str:
    """Render one table across experiments: per-class Dice and HD95 (mm) and their means.

    Raises:
        ValueError: when the experiments have different classes.
    """
    classes = summaries[0]["classes"]
    for summary in summaries[1:]:
        if summary["classes"] != classes:
            raise ValueError(
                f"experiment {summary['experiment']} has classes {summary['classes']} but "
                f"{summaries[0]['experiment']} has {classes}; compare experiments of one dataset only"
            )
    header = ["Experiment"]
    for name in [*classes, "Mean"]:
        header += [f"{name} Dice", f"{name} HD95"]
    header += ["Cases", "Cases in mean HD95", "Empty predictions"]
    lines = [
        f"# Comparison on {dataset}",
        "",
        "Dice and HD95 (mm) as mean ± population standard deviation over test cases of all folds.",
        AGGREGATION_NOTE,
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---|" * (len(header) - 1),
    ]
    for summary in summaries:
        cells = [summary["experiment"]]
        for values in [*(summary["per_class"][name] for name in classes), summary["mean"]]:
            cells += [format_value(values["dice_mean"], values["dice_std"], 3), format_value(values["hd95_mean"], values["hd95_std"], 2)]
        empty_pred = sum(summary["per_class"][name]["n_empty_pred"] for name in classes)
        cells += [str(summary["mean"]["n_cases"]), str(summary["mean"]["hd95_n"]), str(empty_pred)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Empty predictions counts the (case, class) pairs whose prediction is empty while the reference is not. "
        "Cases in mean HD95 counts the cases whose classes all have a finite HD95; only they enter the Mean HD95.",
        "",
    ]
    return "\n".join(lines)


def compare(summary_paths: Sequence[str | os.PathLike], output: str | os.PathLike, dataset: str | None = None) -> str:
    """Write ``comparison.md`` from the ``summary.json`` of several experiments, in the order given.

    Raises:
        ValueError: when no summary is given or they come from different datasets.
    """
    if not summary_paths:
        raise ValueError("no summaries given; pass each experiment's summary.json with --summaries")
    summaries = [load_summary(path) for path in summary_paths]
    datasets = sorted({s["dataset"] for s in summaries})
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(
                f"the summaries come from the datasets {datasets}; compare one dataset at a time or pass --dataset"
            )
        dataset = datasets[0]
    text = format_comparison_markdown(summaries, dataset)
    write_text(output, text)
    return text
