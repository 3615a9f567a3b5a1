"""Report figures: PNGs of the expected pixel size with drawn content, case picking, input errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from helpnet.cli import main
from helpnet.evaluation.plots import group_tick_label, pick_cases
from helpnet.io import make_header, save_nifti

HEADER = "case,fold,class_index,class,dice,hd95,assd,pred_voxels,ref_voxels,empty\n"


def read_png(path: Path) -> np.ndarray:
    assert path.is_file()
    assert path.stat().st_size > 0
    return matplotlib.image.imread(path)


def assert_drawn(pixels: np.ndarray) -> None:
    """More than a blank canvas: many distinct colours."""
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 50


def write_metrics(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def fold_rows(fold: int, cases: list[str], offset: float) -> list[str]:
    rows = []
    for number, case in enumerate(cases):
        dice = 0.5 + offset + 0.05 * number
        for class_index, name in ((1, "RV"), (2, "Myo"), (3, "LV")):
            rows.append(f"{case},{fold},{class_index},{name},{dice:.3f},{10 - 3 * offset + number:.2f},1.0,10,10,none")
    return rows


def test_boxplots_png(tmp_path):
    paths = []
    for experiment, offset in (("pce", 0.0), ("helpnet", 0.3)):
        for fold in (0, 1):
            cases = [f"case{fold}{k}" for k in range(4)]
            rows = fold_rows(fold, cases, offset)
            if experiment == "pce" and fold == 0:
                rows[0] = f"{cases[0]},0,1,RV,0.0,nan,nan,0,10,pred"
            paths.append(write_metrics(tmp_path / "results" / "acdc" / experiment / f"fold{fold}" / "metrics.csv", rows))
    dice_png = tmp_path / "plots" / "dice.png"
    hd95_png = tmp_path / "plots" / "hd95.png"
    assert main(["plot", "boxplots", "--metrics", *map(str, paths), "--output-dice", str(dice_png), "--output-hd95", str(hd95_png)]) == 0
    for path in (dice_png, hd95_png):
        pixels = read_png(path)
        assert pixels.shape[:2] == (500, 1000)
        assert_drawn(pixels)


def test_group_tick_label_counts_nan_per_experiment():
    assert group_tick_label("RV", {"pce": 0, "helpnet": 0}) == "RV"
    assert group_tick_label("RV", {"pce": 1, "helpnet": 0}) == "RV\nNaN left out: pce 1"
    assert group_tick_label("Mean", {"pce": 2, "helpnet": 3}) == "Mean\nNaN left out: pce 2, helpnet 3"


def test_curves_png(tmp_path):
    logs = []
    for fold in (0, 1):
        steps = np.arange(0, 200, 10)
        log = pd.DataFrame(
            {
                "step": steps,
                "epoch": steps // 50,
                "lr": 0.01,
                "loss": np.exp(-steps / 80) + 0.1 * fold,
                "pce": np.exp(-steps / 60),
                "hpc": 0.3 * np.exp(-steps / 40),
                "val_dice": ["" if step % 50 else 0.5 + step / 500 for step in steps],
                "time_s": steps * 0.2,
            }
        )
        path = tmp_path / "results" / "acdc" / "helpnet" / f"fold{fold}" / "training_log.csv"
        path.parent.mkdir(parents=True)
        log.to_csv(path, index=False)
        logs.append(path)
    output = tmp_path / "curves.png"
    assert main(["plot", "curves", "--logs", *map(str, logs), "--output", str(output)]) == 0
    pixels = read_png(output)
    # loss, pce, hpc and val_dice: 4 panels in 2 rows of 3, each 4.5 x 3.2 inches at 100 dpi.
    assert pixels.shape[:2] == (640, 1350)
    assert_drawn(pixels)


def test_curves_reject_other_csv(tmp_path):
    path = tmp_path / "fold0" / "training_log.csv"
    path.parent.mkdir()
    path.write_text("step,value\n0,1\n")
    assert main(["plot", "curves", "--logs", str(path), "--output", str(tmp_path / "c.png")]) == 1
    assert not (tmp_path / "c.png").exists()


def test_pick_cases_best_median_worst():
    rows = []
    for case, dice in (("a", 0.9), ("b", 0.2), ("c", 0.5), ("d", 0.7), ("e", 0.6)):
        rows += [[case, 0, 1, "A", dice, 1.0, 1.0, 1, 1, "none"], [case, 0, 2, "B", dice - 0.1, 1.0, 1.0, 1, 1, "none"]]
    metrics = pd.DataFrame(rows, columns=HEADER.strip().split(","))
    assert pick_cases(metrics) == [
        ("best", "a", pytest.approx(0.85)),
        ("median", "e", pytest.approx(0.55)),
        ("worst", "b", pytest.approx(0.15)),
    ]
    assert [role for role, _, _ in pick_cases(metrics[metrics["case"].isin(["a", "b"])])] == ["best", "worst"]


def write_overlay_case(root: Path, case: str, shift: int) -> None:
    header = make_header((1.5, 1.5, 8.0))
    rng = np.random.default_rng(shift)
    image = rng.normal(100.0, 20.0, (40, 32, 4)).astype(np.float32)
    label = np.zeros((40, 32, 4), dtype=np.uint8)
    label[8:20, 8:20, 1:3] = 1
    label[22:34, 10:24, 2] = 2
    scribble = np.full_like(label, 255)
    scribble[12, 10:18, 2] = 1
    scribble[28, 12:22, 2] = 2
    scribble[2, :, 2] = 0
    save_nifti(root / "cases" / case / "image.nii.gz", image, header)
    save_nifti(root / "cases" / case / "label.nii.gz", label, header)
    save_nifti(root / "cases" / case / "scribble.nii.gz", scribble, header)
    save_nifti(root / "exp" / "fold0" / "predictions" / f"{case}.nii.gz", np.roll(label, shift, axis=0), header)


def test_overlays_png(tmp_path):
    rows = []
    for case, shift in (("good", 0), ("fair", 2), ("poor", 6)):
        write_overlay_case(tmp_path, case, shift)
        rows += [f"{case},0,1,A,{1 - shift / 10:.2f},1.0,1.0,1,1,none", f"{case},0,2,B,{1 - shift / 10:.2f},1.0,1.0,1,1,none"]
    metrics = write_metrics(tmp_path / "exp" / "fold0" / "metrics.csv", rows)
    output = tmp_path / "overlays.png"
    assert main(["plot", "overlays", "--metrics", str(metrics), "--predictions-dir", str(tmp_path / "exp" / "fold0" / "predictions"),
                 "--cases-dir", str(tmp_path / "cases"), "--output", str(output)]) == 0
    pixels = read_png(output)
    # 4 panels of 3.2 in across; 3 rows of 3.4 in plus 0.4 in for the legend; 100 dpi.
    assert pixels.shape[:2] == (1060, 1280)
    assert_drawn(pixels)


def test_overlays_missing_prediction(tmp_path, caplog):
    write_overlay_case(tmp_path, "only", 0)
    (tmp_path / "exp" / "fold0" / "predictions" / "only.nii.gz").unlink()
    metrics = write_metrics(tmp_path / "exp" / "fold0" / "metrics.csv", ["only,0,1,A,0.9,1.0,1.0,1,1,none"])
    output = tmp_path / "overlays.png"
    assert main(["plot", "overlays", "--metrics", str(metrics), "--predictions-dir", str(tmp_path / "exp" / "fold0" / "predictions"),
                 "--cases-dir", str(tmp_path / "cases"), "--output", str(output)]) == 1
    assert "only.nii.gz not found" in caplog.text
    assert not output.exists()
