"""Figures for the report: metric box plots, training curves and segmentation overlays.

All figures use matplotlib's object API with the Agg canvas (no pyplot state, no display) and
are written atomically as PNG at :data:`DPI` dots per inch, so their pixel size is the figure
size in inches times :data:`DPI`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless workflow: choose the backend before anything imports pyplot
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from helpnet.data.cases import IGNORE_INDEX  # noqa: E402
from helpnet.evaluation.evaluate import read_metrics  # noqa: E402
from helpnet.evaluation.summary import case_means  # noqa: E402
from helpnet.io import atomic_path, load_nifti  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 100
"""Resolution of every PNG written here."""

BOXPLOT_SIZE_IN = (10.0, 5.0)
"""Width and height of a box-plot figure in inches."""

CURVE_PANEL_SIZE_IN = (4.5, 3.2)
"""Width and height of one training-curve panel in inches."""

CURVE_COLUMNS = 3
"""Panels per row of the training-curve figure."""

OVERLAY_PANEL_SIZE_IN = (3.2, 3.4)
"""Width and height of one overlay panel in inches."""

MASK_ALPHA = 0.55
"""Opacity of prediction and label colours over the image."""

SCRIBBLE_BACKGROUND_RGBA = (1.0, 0.9, 0.0, 1.0)
"""Colour of background scribbles (value 0 in a scribble), which no class colour uses."""

OVERLAY_LEGEND_HEIGHT_IN = 0.4
"""Height reserved under the overlay panels for the class legend, in inches."""

LOG_NON_LOSS_COLUMNS = ("step", "epoch", "lr", "val_dice", "time_s")
"""Columns of ``training_log.csv`` that are not loss values."""


def class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """RGBA colour of classes 1..``num_classes`` (index 0 is class 1), the same in every figure."""
    palette = matplotlib.colormaps["tab10"].colors
    return [(*palette[i % len(palette)], 1.0) for i in range(num_classes)]


def _save(figure: Figure, output: str | os.PathLike) -> None:
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    logger.info("wrote %s", output)


def experiment_of(metrics_path: str | os.PathLike) -> str:
    """Name of the experiment of ``results/{dataset}/{experiment}/fold{k}/metrics.csv``."""
    return Path(metrics_path).resolve().parent.parent.name


# Box plots ----------------------------------------------------------------------------------


def load_experiment_metrics(metrics_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate ``metrics.csv`` files with an ``experiment`` column taken from each path.

    Raises:
        ValueError: when no path is given.
    """
    if not metrics_paths:
        raise ValueError("no metrics files given; pass results/{dataset}/{experiment}/fold{k}/metrics.csv files")
    frames = []
    for path in metrics_paths:
        frame = read_metrics(path)
        frame["experiment"] = experiment_of(path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _boxplot_groups(metrics: pd.DataFrame, column: str) -> tuple[list[str], list[str], dict[tuple[str, str], np.ndarray]]:
    """Values per (group, experiment): one group per class in index order, then "Mean"."""
    experiments = list(dict.fromkeys(metrics["experiment"]))
    class_table = metrics[["class_index", "class"]].drop_duplicates().sort_values("class_index")
    groups = [*class_table["class"], "Mean"]
    values: dict[tuple[str, str], np.ndarray] = {}
    for experiment in experiments:
        subset = metrics[metrics["experiment"] == experiment]
        for name in class_table["class"]:
            values[(name, experiment)] = subset.loc[subset["class"] == name, column].to_numpy(dtype=np.float64)
        values[("Mean", experiment)] = case_means(subset)[column].to_numpy(dtype=np.float64)
    return groups, experiments, values


def group_tick_label(group: str, left_out: dict[str, int]) -> str:
    """Label a box group, with the NaN values left out of each experiment's box when there are any.

    >>> group_tick_label("RV", {"pce": 2, "helpnet": 0})
    'RV\\nNaN left out: pce 2'
    """
    notes = [f"{experiment} {count}" for experiment, count in left_out.items() if count]
    return group if not notes else f"{group}\nNaN left out: {', '.join(notes)}"


def plot_metric_boxplot(metrics: pd.DataFrame, column: str, label: str, output: str | os.PathLike) -> None:
    """Draw one box per class and experiment (and per experiment for the class mean) of ``column``.

    NaN values (distances of a class with one empty mask) cannot be drawn; they are left out and
    their count per experiment is given under each group.
    """
    groups, experiments, values = _boxplot_groups(metrics, column)
    colours = matplotlib.colormaps["tab10"].colors
    width = 0.8 / len(experiments)
    rng = np.random.default_rng(0)

    figure = Figure(figsize=BOXPLOT_SIZE_IN)
    axis = figure.add_subplot()
    tick_labels = []
    for group_index, group in enumerate(groups):
        left_out = {}
        for experiment_index, experiment in enumerate(experiments):
            data = values[(group, experiment)]
            finite = data[np.isfinite(data)]
            left_out[experiment] = int(data.size - finite.size)
            position = group_index - 0.4 + width * (experiment_index + 0.5)
            colour = colours[experiment_index % len(colours)]
            if finite.size:
                box = axis.boxplot(
                    finite, positions=[position], widths=width * 0.8, patch_artist=True, showfliers=False
                )
                for patch in box["boxes"]:
                    patch.set(facecolor=colour, alpha=0.45, edgecolor=colour)
                for part in ("medians", "whiskers", "caps"):
                    for line in box[part]:
                        line.set(color=colour if part != "medians" else "black")
                jitter = rng.uniform(-width * 0.25, width * 0.25, finite.size)
                axis.scatter(position + jitter, finite, s=9, color=colour, alpha=0.8, zorder=3, linewidths=0)
        tick_labels.append(group_tick_label(group, left_out))
    axis.set_xticks(range(len(groups)), tick_labels)
    axis.set_xlim(-0.6, len(groups) - 0.4)
    axis.set_ylabel(label)
    axis.set_title(f"{label} per test case ({metrics['fold'].nunique()} folds pooled)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(
        handles=[Patch(facecolor=colours[i % len(colours)], alpha=0.6, label=name) for i, name in enumerate(experiments)],
        title="Experiment",
        loc="best",
        fontsize="small",
    )
    figure.tight_layout()
    _save(figure, output)


def plot_boxplots(
    metrics_paths: Sequence[str | os.PathLike], output_dice: str | os.PathLike, output_hd95: str | os.PathLike
) -> None:
    """Write the Dice and HD95 box plots of all experiments' fold metrics."""
    metrics = load_experiment_metrics(metrics_paths)
    plot_metric_boxplot(metrics, "dice", "Dice", output_dice)
    plot_metric_boxplot(metrics, "hd95", "HD95 (mm)", output_hd95)


# Training curves ----------------------------------------------------------------------------


def read_training_log(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``training_log.csv`` (columns ``step, epoch, lr, loss, <terms>, val_dice, time_s``).

    Raises:
        FileNotFoundError: when the file is missing.
        ValueError: when ``step``, ``loss`` or ``val_dice`` is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}; run the train stage first")
    log = pd.read_csv(path)
    missing = [column for column in ("step", "loss", "val_dice") if column not in log.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it must be a training_log.csv of the train stage")
    return log


def plot_training_curves(log_paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> None:
    """Draw each loss term and the validation Dice against the step, one line per fold.

    Each fold's name is the folder of its log (``fold0``), and the title names the experiment
    folder above it. Steps without validation have an empty ``val_dice`` and are skipped.

    Raises:
        ValueError: when no log is given.
    """
    if not log_paths:
        raise ValueError("no training logs given; pass results/{dataset}/{experiment}/fold*/training_log.csv")
    logs = {Path(path).resolve().parent.name: read_training_log(path) for path in log_paths}
    experiments = sorted({Path(path).resolve().parent.parent.name for path in log_paths})
    loss_columns: list[str] = []
    for log in logs.values():
        loss_columns += [c for c in log.columns if c not in LOG_NON_LOSS_COLUMNS and c not in loss_columns]
    panels = [*loss_columns, "val_dice"]

    rows = math.ceil(len(panels) / CURVE_COLUMNS)
    figure = Figure(figsize=(CURVE_PANEL_SIZE_IN[0] * CURVE_COLUMNS, CURVE_PANEL_SIZE_IN[1] * rows), layout="constrained")
    axes = figure.subplots(rows, CURVE_COLUMNS, squeeze=False).ravel()
    colours = matplotlib.colormaps["tab10"].colors
    for axis, column in zip(axes, panels):
        for fold_index, (fold, log) in enumerate(logs.items()):
            if column not in log.columns:
                continue
            series = log[["step", column]].apply(pd.to_numeric, errors="coerce").dropna()
            style = {"marker": "o", "markersize": 3} if column == "val_dice" else {}
            axis.plot(series["step"], series[column], label=fold, color=colours[fold_index % len(colours)], linewidth=1, **style)
        axis.set_title("validation Dice" if column == "val_dice" else column)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in axes[len(panels) :]:
        axis.axis("off")
    axes[0].legend(title="Fold", fontsize="small")
    figure.suptitle(f"Training curves: {', '.join(experiments)}")
    _save(figure, output)


# Overlays -----------------------------------------------------------------------------------


def pick_cases(metrics: pd.DataFrame) -> list[tuple[str, str, float]]:
    """Pick the best, median and worst case by Dice averaged over classes.

    Returns:
        ``(role, case, mean Dice)`` tuples, best first. Two cases give best and worst, one case
        gives best only.
    """
    per_case = case_means(metrics).sort_values(["dice", "case"], ascending=[False, True], kind="stable")
    if per_case.empty:
        raise ValueError("the metrics table has no cases to show")
    ranked = [(str(case), float(dice)) for case, dice in zip(per_case["case"], per_case["dice"])]
    if len(ranked) == 1:
        return [("best", *ranked[0])]
    if len(ranked) == 2:
        return [("best", *ranked[0]), ("worst", *ranked[1])]
    return [("best", *ranked[0]), ("median", *ranked[len(ranked) // 2]), ("worst", *ranked[-1])]


def _label_rgba(labels: np.ndarray, num_classes: int, alpha: float, background: tuple | None = None) -> np.ndarray:
    """RGBA image of a label slice in the class colours with opacity ``alpha``; the ignore value is transparent.

    Background (0) is transparent unless ``background`` gives its RGBA colour: in a scribble,
    0 marks annotated background, which is worth seeing.
    """
    colours = np.zeros((max(num_classes, IGNORE_INDEX) + 1, 4))
    colours[1 : num_classes + 1] = class_colours(num_classes)
    colours[1 : num_classes + 1, 3] = alpha
    if background is not None:
        colours[0] = background
    colours[IGNORE_INDEX] = 0.0
    clipped = np.where((labels >= 0) & (labels < len(colours)), labels, 0)
    return colours[clipped]


def _intensity_window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [1, 99])
    return float(low), float(high if high > low else low + 1)


def plot_overlays(
    metrics_path: str | os.PathLike,
    predictions_dir: str | os.PathLike,
    cases_dir: str | os.PathLike,
    output: str | os.PathLike,
) -> None:
    """Draw image, scribble, prediction and label of the best, median and worst case of a fold.

    Each row shows one case on the slice (axis 2) with the most labelled voxels. Classes have
    the colours of :func:`class_colours`; unannotated scribble voxels are not drawn.

    Raises:
        FileNotFoundError: when an image, label or prediction is missing.
    """
    metrics = read_metrics(metrics_path)
    class_table = metrics[["class_index", "class"]].drop_duplicates().sort_values("class_index")
    num_classes = int(class_table["class_index"].max())
    picks = pick_cases(metrics)
    predictions_dir = Path(predictions_dir)
    cases_dir = Path(cases_dir)

    columns = ("image", "scribble", "prediction", "label")
    figure = Figure(
        figsize=(
            OVERLAY_PANEL_SIZE_IN[0] * len(columns),
            OVERLAY_PANEL_SIZE_IN[1] * len(picks) + OVERLAY_LEGEND_HEIGHT_IN,
        )
    )
    axes = figure.subplots(len(picks), len(columns), squeeze=False)
    for row, (role, case, mean_dice) in enumerate(picks):
        case_dir = cases_dir / case
        for required in (case_dir / "image.nii.gz", case_dir / "label.nii.gz", predictions_dir / f"{case}.nii.gz"):
            if not required.is_file():
                raise FileNotFoundError(f"{required} not found; the overlays need the image, label and prediction of {case}")
        image, _ = load_nifti(case_dir / "image.nii.gz")
        label, _ = load_nifti(case_dir / "label.nii.gz", np.int32)
        prediction, _ = load_nifti(predictions_dir / f"{case}.nii.gz", np.int32)
        scribble_path = case_dir / "scribble.nii.gz"
        scribble = load_nifti(scribble_path, np.int32)[0] if scribble_path.is_file() else None

        z = int(np.argmax((label > 0).reshape(-1, label.shape[-1]).sum(axis=0)))
        low, high = _intensity_window(image[..., z])
        layers = {"image": None, "scribble": scribble, "prediction": prediction, "label": label}
        for column, (name, layer) in enumerate(layers.items()):
            axis = axes[row, column]
            # Arrays are (X, Y, Z); the transpose shows X across and Y down.
            axis.imshow(image[..., z].T, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if layer is not None:
                # Scribbles are thin lines, so they are drawn opaque; masks stay see-through.
                if name == "scribble":
                    rgba = _label_rgba(layer[..., z].T, num_classes, 1.0, SCRIBBLE_BACKGROUND_RGBA)
                else:
                    rgba = _label_rgba(layer[..., z].T, num_classes, MASK_ALPHA)
                axis.imshow(rgba, interpolation="nearest")
            elif name == "scribble":
                axis.text(0.5, 0.5, "no scribble", transform=axis.transAxes, ha="center", va="center", color="white")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(f"{role}\n{case}\nmean Dice {mean_dice:.3f}", fontsize=9)
            if row == 0:
                axis.set_title(name)
        axes[row, 0].text(
            0.02, 0.98, f"z = {z}", transform=axes[row, 0].transAxes, ha="left", va="top", color="yellow", fontsize=8
        )

    colours = class_colours(num_classes)
    handles = [Patch(facecolor=colours[int(i) - 1], label=name) for i, name in class_table.itertuples(index=False)]
    handles.append(Patch(facecolor=SCRIBBLE_BACKGROUND_RGBA, label="background (scribble)"))
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        frameon=False,
    )
    figure.suptitle(
        f"{experiment_of(metrics_path)}, {Path(metrics_path).resolve().parent.name}: "
        "best, median and worst test case by mean Dice"
    )
    figure.tight_layout(rect=(0, OVERLAY_LEGEND_HEIGHT_IN / figure.get_figheight(), 1, 1))
    _save(figure, output)
