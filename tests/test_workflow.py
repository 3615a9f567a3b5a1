"""The Snakemake workflow: config validation, DAG planning, lint, and the demo end to end."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[index + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                counts[parts[0]] = int(parts[1])
            break
    counts.pop("total", None)
    return counts


def write_overlay(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_dry_run_default_config_plans_every_stage():
    result = snakemake("-n", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["make_demo"] == 1
    assert counts["align"] == 1
    assert counts["train"] == 10  # 2 experiments x 5 folds
    assert counts["summarize"] == 2
    assert counts["compare"] == 1


def test_evaluation_precision_reaches_predict(tmp_path: Path):
    overlay = write_overlay(tmp_path / "eval.yaml", {"evaluation": {"precision": "fp32"}})
    result = snakemake("-n", "--cores", "1", "--printshellcmds", "--configfile", str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    predict_commands = [line for line in result.stdout.splitlines() if "helpnet.cli predict" in line]
    assert len(predict_commands) == 10
    assert all("--precision fp32" in line for line in predict_commands)


@pytest.mark.parametrize(
    ("block", "expected"),
    [("training", "datasets.demo.training: precision fp16 needs CUDA but device is cpu"),
     ("evaluation", "evaluation.precision fp16 needs CUDA but evaluation.device is cpu")],
)
def test_fp16_on_cpu_stops_before_any_job(tmp_path: Path, block: str, expected: str):
    overlay = write_overlay(tmp_path / "fp16.yaml", {block: {"precision": "fp16", "device": "cpu"}})
    result = snakemake("-n", "--cores", "1", "--configfile", str(overlay))
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Job stats" not in result.stdout


def test_dry_run_acdc_preset_downloads_both_sources():
    result = snakemake("-n", "--cores", "1", "--configfile", "config/acdc.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["fetch_source"] == 2
    assert counts["train"] == 10


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Congratulations" in result.stdout + result.stderr


def test_unknown_config_key_stops_before_any_job(tmp_path: Path):
    overlay = write_overlay(tmp_path / "bad.yaml", {"training": {"learning_rate": 0.1, "epoch": 3}})
    result = snakemake("-n", "--cores", "1", "--configfile", str(overlay))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "training: unknown key 'epoch' (did you mean 'epochs'?), 'learning_rate'; allowed here: " in output
    assert "Job stats" not in result.stdout


def test_wrong_type_names_the_key(tmp_path: Path):
    overlay = write_overlay(tmp_path / "bad.yaml", {"training": {"epochs": "many"}})
    result = snakemake("-n", "--cores", "1", "--configfile", str(overlay))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "training.epochs: 'many' is not of type 'integer'" in output
    # One line per error, not Snakemake's dump of the whole schema.
    assert "Failed validating" not in output
    assert len(output.splitlines()) < 30


def test_missing_local_source_names_path_and_origin(tmp_path: Path):
    result = snakemake("-n", "--cores", "1", "--configfile", "config/mscmr.yaml",
                       "--config", f"results_dir={tmp_path}/results")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"data/MSCMR_dataset ({REPO / 'data' / 'MSCMR_dataset'}) does not exist" in output
    assert "zmiclab" in output


def test_fold_outside_split_is_rejected():
    result = snakemake("-n", "--cores", "1", "--config", "folds=[7]")
    assert result.returncode != 0
    assert "folds [7] do not exist" in result.stdout + result.stderr


# About 70 steps of the light UNet on 48x48 crops: enough to learn the synthetic structures.
TINY_TRAINING = {"network": "unet_light", "patch_size": 48, "epochs": 8, "lr": 0.003, "log_every": 10,
                 "checkpoint_every": 40, "precision": "fp32"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """The default DAG on the demo with a tiny budget and 2 folds, run once for this module."""
    work = tmp_path_factory.mktemp("demo")
    overlay = write_overlay(work / "tiny.yaml", {
        "results_dir": str(work / "results"),
        "resources_dir": str(work / "resources"),
        "datasets": {"demo": {"sources": {"demo": {"demo": {"subjects": 4, "seed": 0}}},
                              "split": {"scheme": "kfold", "folds": 2, "seed": 42, "validation_subjects": 0},
                              "training": TINY_TRAINING}},
    })
    result = snakemake("--cores", "2", "--configfile", str(overlay))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work


@pytest.mark.slow
def test_demo_run_writes_results_layout(demo_run: Path):
    results = demo_run / "results" / "demo"
    manifest = list(csv.DictReader(open(results / "cases.tsv"), delimiter="\t"))
    assert len(manifest) == 8  # 4 subjects x ED/ES
    splits = json.loads((results / "splits.json").read_text())
    tested = sorted(c for fold in splits["folds"] for c in fold["test"])
    assert tested == sorted(row["case"] for row in manifest)
    for experiment in ("pce", "helpnet"):
        for fold in (0, 1):
            fold_dir = results / experiment / f"fold{fold}"
            metrics = list(csv.DictReader(open(fold_dir / "metrics.csv")))
            assert {row["case"] for row in metrics} == set(splits["folds"][fold]["test"])
            assert len(list((fold_dir / "predictions").glob("*.nii.gz"))) == len(splits["folds"][fold]["test"])
        summary = json.loads((results / experiment / "summary.json").read_text())
        assert summary["experiment"] == experiment
    comparison = (results / "comparison.md").read_text()
    assert "| pce |" in comparison
    assert "| helpnet |" in comparison
    for name in ("dice_boxplot.png", "hd95_boxplot.png", "helpnet_curves.png", "pce_fold0_overlays.png"):
        assert (results / "plots" / name).stat().st_size > 10_000, name
    assert (results / "edges_qc.png").exists()


@pytest.mark.slow
def test_changed_training_parameter_reruns_only_downstream(demo_run: Path):
    overlay = yaml.safe_load((demo_run / "tiny.yaml").read_text())
    overlay["datasets"]["demo"]["training"] = dict(overlay["datasets"]["demo"]["training"], lr=0.0005)
    changed = write_overlay(demo_run / "changed.yaml", overlay)
    result = snakemake("-n", "--cores", "1", "--configfile", str(changed))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 4
    assert counts["evaluate"] == 4
    for upstream in ("make_demo", "align", "split", "edges", "preprocess"):
        assert upstream not in counts, upstream


@pytest.mark.slow
def test_single_fold_rerun_touches_only_that_fold(demo_run: Path):
    target = demo_run / "results" / "demo" / "helpnet" / "fold1" / "checkpoint_final.pt"
    result = snakemake("-n", "--cores", "1", "--configfile", str(demo_run / "tiny.yaml"),
                       "--forcerun", str(target), "--config", "folds=[1]")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts == {"train": 1, "predict": 1, "evaluate": 1, "plot_overlays": 1, "all": 1}


@pytest.mark.slow
def test_report_builds_from_finished_run(demo_run: Path):
    report = demo_run / "report.html"
    result = snakemake("--configfile", str(demo_run / "tiny.yaml"), "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report.stat().st_size > 50_000


@pytest.mark.slow
def test_demo_helpnet_beats_shuffled_scribbles(demo_run: Path, tmp_path: Path):
    """The demo's held-out Dice clearly beats the same budget trained on shuffled scribble classes."""
    from shuffled_control import shuffled_scribble_dice

    results = demo_run / "results" / "demo"
    rows = list(csv.DictReader(open(results / "helpnet" / "fold0" / "metrics.csv")))
    learned = sum(float(row["dice"]) for row in rows) / len(rows)
    shuffled = shuffled_scribble_dice(results, "helpnet", 0, tmp_path, {1: "RV", 2: "Myo", 3: "LV"})
    assert learned > 0.3, learned
    assert learned > shuffled + 0.15, (learned, shuffled)
