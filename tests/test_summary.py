"""Summaries and comparisons: aggregation by hand on small metrics tables, NaN handling, file contents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from helpnet.cli import main
from helpnet.data.cases import write_dataset_info
from helpnet.evaluation.summary import load_fold_metrics, parse_settings

HEADER = "case,fold,class_index,class,dice,hd95,assd,pred_voxels,ref_voxels,empty\n"

# Fold 0 contains cases a and b, fold 1 case c. Case b misses RV (NaN distances); case c has no
# RV in either mask and an LV predicted where the reference has none.
FOLD0 = HEADER + (
    "a,0,1,RV,0.8,4.0,1.0,100,110,none\n"
    "a,0,2,Myo,0.7,6.0,2.0,90,95,none\n"
    "a,0,3,LV,0.9,2.0,0.5,200,210,none\n"
    "b,0,1,RV,0.0,nan,nan,0,80,pred\n"
    "b,0,2,Myo,0.5,10.0,3.0,70,60,none\n"
    "b,0,3,LV,0.6,8.0,2.5,150,190,none\n"
)
FOLD1 = HEADER + (
    "c,1,1,RV,1.0,0.0,0.0,0,0,both\n"
    "c,1,2,Myo,0.9,3.0,1.0,50,52,none\n"
    "c,1,3,LV,0.0,nan,nan,12,0,ref\n"
)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    dataset = tmp_path / "results" / "acdc"
    write_dataset_info(dataset / "dataset.json", ["RV", "Myo", "LV"], {})
    for fold, text in ((0, FOLD0), (1, FOLD1)):
        path = dataset / "pce" / f"fold{fold}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return dataset


def run_summarize(dataset: Path, experiment: str = "pce", settings: str = '{"hd95_definition": "pooled", "seed": 3}') -> int:
    return main(
        [
            "summarize",
            "--metrics",
            str(dataset / experiment / "fold0" / "metrics.csv"),
            str(dataset / experiment / "fold1" / "metrics.csv"),
            "--dataset-info",
            str(dataset / "dataset.json"),
            "--experiment",
            experiment,
            "--settings-json",
            settings,
            "--output-dir",
            str(dataset / experiment),
        ]
    )


def test_summary_csv_values(results):
    assert run_summarize(results) == 0
    table = pd.read_csv(results / "pce" / "summary.csv", keep_default_na=False, na_values=["nan"])
    assert list(table["class"]) == ["RV", "Myo", "LV", "mean"]
    rows = table.set_index("class")

    # RV: Dice over all three cases; the NaN HD95 of case b is left out, not counted as 0.
    assert rows.loc["RV", "dice_mean"] == pytest.approx(0.6)
    assert rows.loc["RV", "dice_std"] == pytest.approx(math.sqrt((0.04 + 0.36 + 0.16) / 3))
    assert rows.loc["RV", "hd95_mean"] == pytest.approx(2.0)
    assert rows.loc["RV", "hd95_std"] == pytest.approx(2.0)
    assert rows.loc["RV", "hd95_n"] == 2
    assert rows.loc["RV", "assd_mean"] == pytest.approx(0.5)
    assert rows.loc["RV", "n_cases"] == 3
    assert (rows.loc["RV", "n_empty_pred"], rows.loc["RV", "n_empty_ref"], rows.loc["RV", "n_empty_both"]) == (1, 0, 1)

    assert rows.loc["Myo", "dice_mean"] == pytest.approx(0.7)
    assert rows.loc["Myo", "hd95_mean"] == pytest.approx(19 / 3)
    assert rows.loc["Myo", "hd95_std"] == pytest.approx(math.sqrt((1 / 9 + 121 / 9 + 100 / 9) / 3))

    assert rows.loc["LV", "dice_mean"] == pytest.approx(0.5)
    assert rows.loc["LV", "hd95_mean"] == pytest.approx(5.0)
    assert rows.loc["LV", "hd95_std"] == pytest.approx(3.0)
    assert rows.loc["LV", "n_empty_ref"] == 1

    # Mean row: case means 0.8, 0.3667, 0.6333; only case a has all three distances.
    assert rows.loc["mean", "dice_mean"] == pytest.approx(0.6)
    assert rows.loc["mean", "dice_std"] == pytest.approx(math.sqrt((0.04 + (0.7 / 3) ** 2 + (0.1 / 3) ** 2) / 3))
    assert rows.loc["mean", "hd95_mean"] == pytest.approx(4.0)
    assert rows.loc["mean", "hd95_n"] == 1
    assert rows.loc["mean", "assd_mean"] == pytest.approx(3.5 / 3)
    assert rows.loc["mean", "n_cases"] == 3
    assert (rows.loc["mean", "n_empty_pred"], rows.loc["mean", "n_empty_ref"]) == (1, 1)


def test_summary_markdown(results):
    assert run_summarize(results) == 0
    text = (results / "pce" / "summary.md").read_text()
    assert text.startswith("# pce on acdc\n")
    assert "| Metric | RV | Myo | LV | Mean |" in text
    assert "| Dice | 0.600 ± 0.432 | 0.700 ± 0.163 | 0.500 ± 0.374 | 0.600 ± 0.178 |" in text
    assert "| HD95 (mm) | 2.00 ± 2.00 | 6.33 ± 2.87 | 5.00 ± 3.00 | 4.00 ± 0.00 |" in text
    assert "| Cases in distance means | 2 | 3 | 2 | 1 |" in text
    assert "classes averaged per case first, then over cases" in text
    assert "RV 1 / 0 / 1, Myo 0 / 0 / 0, LV 0 / 1 / 0" in text
    assert "NaN and left out of the distance means" in text
    assert "HD95 definition: pooled." in text
    assert "| 0 | 2 | 0.583 ± 0.217 |" in text
    assert "| 1 | 1 | 0.633 ± 0.000 |" in text


def test_summary_json(results):
    assert run_summarize(results) == 0
    summary = json.loads((results / "pce" / "summary.json").read_text())
    assert summary["dataset"] == "acdc"
    assert summary["experiment"] == "pce"
    assert summary["classes"] == ["RV", "Myo", "LV"]
    assert summary["settings"] == {"hd95_definition": "pooled", "seed": 3}
    assert set(summary["versions"]) == {"helpnet", "torch", "numpy", "python"}
    assert summary["versions"]["helpnet"] is not None
    assert summary["folds"] == [0, 1]
    assert len(summary["cases"]) == 9
    missed = [c for c in summary["cases"] if c["case"] == "b" and c["class"] == "RV"][0]
    assert missed == {
        "case": "b",
        "fold": 0,
        "class_index": 1,
        "class": "RV",
        "dice": 0.0,
        "hd95": None,
        "assd": None,
        "pred_voxels": 0,
        "ref_voxels": 80,
        "empty": "pred",
    }
    assert [c["fold"] for c in summary["cases"] if c["case"] == "c"] == [1, 1, 1]
    assert summary["per_class"]["LV"]["hd95_mean"] == pytest.approx(5.0)
    assert summary["mean"]["dice_mean"] == pytest.approx(0.6)
    assert summary["per_fold"]["0"]["n_cases"] == 2


def test_penalty_distances_enter_means(tmp_path):
    dataset = tmp_path / "d"
    write_dataset_info(dataset / "dataset.json", ["A"], {})
    path = dataset / "e" / "fold0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "x,0,1,A,0.0,300.0,300.0,0,5,pred\ny,0,1,A,1.0,0.0,0.0,5,5,none\n")
    assert main(["summarize", "--metrics", str(path), "--dataset-info", str(dataset / "dataset.json"),
                 "--experiment", "e", "--output-dir", str(dataset / "e")]) == 0
    summary = json.loads((dataset / "e" / "summary.json").read_text())
    assert summary["per_class"]["A"]["hd95_mean"] == pytest.approx(150.0)
    assert "set to a penalty and are included" in summary["empty_policy"]


def test_class_mismatch_raises(results, tmp_path):
    other = tmp_path / "dataset.json"
    write_dataset_info(other, ["LV", "Myo", "RV"], {})
    with pytest.raises(ValueError, match="class 1 is named 'RV' but dataset.json names it 'LV'"):
        load_fold_metrics([results / "pce" / "fold0" / "metrics.csv"], {1: "LV", 2: "Myo", 3: "RV"})


def test_same_file_twice_raises(results):
    path = results / "pce" / "fold0" / "metrics.csv"
    with pytest.raises(ValueError, match="appears more than once"):
        load_fold_metrics([path, path], {1: "RV", 2: "Myo", 3: "LV"})


def test_parse_settings(tmp_path):
    assert parse_settings('{"a": 1}') == {"a": 1}
    settings_file = tmp_path / "settings.json"
    settings_file.write_text('{"b": [1, 2]}')
    assert parse_settings(str(settings_file)) == {"b": [1, 2]}
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_settings("{broken")
    with pytest.raises(ValueError, match="JSON object"):
        parse_settings("[1, 2]")


def test_compare_table(results):
    assert run_summarize(results) == 0
    helpnet_fold = results / "helpnet" / "fold0" / "metrics.csv"
    helpnet_fold.parent.mkdir(parents=True)
    helpnet_fold.write_text(
        HEADER + "a,0,1,RV,0.9,1.0,0.5,10,10,none\na,0,2,Myo,0.8,2.0,0.5,10,10,none\na,0,3,LV,0.95,3.0,0.5,10,10,none\n"
    )
    assert main(["summarize", "--metrics", str(helpnet_fold), "--dataset-info", str(results / "dataset.json"),
                 "--experiment", "helpnet", "--output-dir", str(results / "helpnet")]) == 0

    output = results / "comparison.md"
    assert main(["compare", "--summaries", str(results / "pce" / "summary.json"),
                 str(results / "helpnet" / "summary.json"), "--output", str(output)]) == 0
    text = output.read_text()
    assert text.startswith("# Comparison on acdc\n")
    header = "| Experiment | RV Dice | RV HD95 | Myo Dice | Myo HD95 | LV Dice | LV HD95 | Mean Dice | Mean HD95 | Cases | Cases in mean HD95 | Empty predictions |"
    assert header in text
    lines = text.splitlines()
    pce_row = next(line for line in lines if line.startswith("| pce |"))
    helpnet_row = next(line for line in lines if line.startswith("| helpnet |"))
    assert lines.index(pce_row) < lines.index(helpnet_row)
    assert pce_row == (
        "| pce | 0.600 ± 0.432 | 2.00 ± 2.00 | 0.700 ± 0.163 | 6.33 ± 2.87 | 0.500 ± 0.374 | 5.00 ± 3.00 "
        "| 0.600 ± 0.178 | 4.00 ± 0.00 | 3 | 1 | 1 |"
    )
    assert helpnet_row.startswith("| helpnet | 0.900 ± 0.000 | 1.00 ± 0.00 |")
    assert "| 0.883 ± 0.000 | 2.00 ± 0.00 | 1 | 1 | 0 |" in helpnet_row


def test_summary_markdown_reads_evaluation_settings(results):
    assert run_summarize(results, settings='{"evaluation": {"hd95_definition": "max_directed"}}') == 0
    text = (results / "pce" / "summary.md").read_text()
    assert "HD95 definition: max_directed." in text
