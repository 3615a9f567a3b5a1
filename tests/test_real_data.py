"""The main job on real scans: ACDC from a loopback mirror and MSCMRseg from a local path.

Each run uses the repository's preset (config/acdc.yaml, config/mscmr.yaml) and overrides only the
download addresses (to the mirror on 127.0.0.1), the training budget and, for ACDC, the fold count:
ten patients cannot fill the five WSL4MIS folds.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpnet.io import load_nifti
from mirror import LoopbackMirror, session_mirror
from shuffled_control import shuffled_scribble_dice

REPO = Path(__file__).resolve().parents[1]

# A short CPU budget: the light UNet on 96x96 crops at the preset's 1.36719 mm, about 100 steps.
BUDGET = {"network": "unet_light", "patch_size": 96, "epochs": 5, "lr": 0.001, "log_every": 10,
          "checkpoint_every": 50}

pytestmark = pytest.mark.slow


def run_snakemake(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))


def mean_dice(rows: list[dict[str, str]]) -> float:
    return float(np.mean([float(row["dice"]) for row in rows]))


@pytest.fixture(scope="module")
def acdc_run(shared_dir: Path, tmp_path_factory) -> Path:
    directory, files = session_mirror(shared_dir, tmp_path_factory)
    work = tmp_path_factory.mktemp("acdc_run")
    preset = yaml.safe_load((REPO / "config" / "acdc.yaml").read_text())["datasets"]["acdc"]
    with LoopbackMirror(directory) as mirror:
        overlay = {
            "results_dir": str(work / "results"),
            "resources_dir": str(work / "resources"),
            "weights": {"table5_pidinet": {"url": mirror.url(files["table5_pidinet"].path),
                                           "sha256": files["table5_pidinet"].sha256}},
            "datasets": {"acdc": {
                "sources": {
                    "images": {**preset["sources"]["images"], "url": mirror.url(files["acdc"].path),
                               "sha256": files["acdc"].sha256},
                    "scribbles": {**preset["sources"]["scribbles"], "url": mirror.url(files["acdc_scribbles"].path)},
                },
                "split": {"scheme": "kfold", "folds": 2, "seed": 42},
                "training": BUDGET,
            }},
        }
        (work / "mirror.yaml").write_text(yaml.safe_dump(overlay))
        result = run_snakemake("--configfile", "config/acdc.yaml", str(work / "mirror.yaml"))
        (work / "snakemake.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        requested = {record.path for record in mirror.requests}
    assert {files["acdc"].path, files["acdc_scribbles"].path, files["table5_pidinet"].path} <= requested
    return work / "results" / "acdc"


def test_acdc_every_case_predicted_and_scored(acdc_run: Path):
    manifest = read_csv(acdc_run / "cases.tsv")
    assert len(manifest) == 20
    report = json.loads((acdc_run / "alignment_report.json").read_text())
    assert len(report["unmatched"]["scribbles_without_image"]) == 180
    for experiment in ("pce", "helpnet"):
        scored = set()
        for fold in (0, 1):
            rows = read_csv(acdc_run / experiment / f"fold{fold}" / "metrics.csv")
            assert all(not math.isnan(float(row["dice"])) for row in rows)
            scored |= {row["case"] for row in rows}
        assert scored == {row["case"] for row in manifest}
    edge, _ = load_nifti(acdc_run / "edges" / "patient005_frame01.nii.gz", np.uint8)
    image, _ = load_nifti(acdc_run / "cases" / "patient005_frame01" / "image.nii.gz")
    assert edge.shape == image.shape
    assert 0.005 < np.mean(edge > 127) < 0.5


def test_acdc_helpnet_beats_background_and_shuffled_scribbles(acdc_run: Path, tmp_path: Path):
    rows = [row for fold in (0, 1) for row in read_csv(acdc_run / "helpnet" / f"fold{fold}" / "metrics.csv")]
    learned = mean_dice(rows)
    # An all-background prediction scores Dice 0 on every structure present in the label.
    assert learned > 0.15, f"held-out mean Dice {learned:.3f}"

    # The same fold-0 run with the classes of the scribbled pixels shuffled between pixels.
    shuffled = shuffled_scribble_dice(acdc_run, "helpnet", 0, tmp_path, {1: "RV", 2: "Myo", 3: "LV"})
    fold0 = mean_dice(read_csv(acdc_run / "helpnet" / "fold0" / "metrics.csv"))
    assert fold0 > shuffled + 0.05, (fold0, shuffled)


@pytest.fixture(scope="module")
def mscmr_run(shared_dir: Path, tmp_path_factory) -> Path:
    directory, files = session_mirror(shared_dir, tmp_path_factory)
    work = tmp_path_factory.mktemp("mscmr_run")
    with LoopbackMirror(directory) as mirror:
        overlay = {
            "results_dir": str(work / "results"),
            "resources_dir": str(work / "resources"),
            "weights": {"table5_pidinet": {"url": mirror.url(files["table5_pidinet"].path),
                                           "sha256": files["table5_pidinet"].sha256}},
            "datasets": {"mscmr": {
                "sources": {"dataset": {"path": str(shared_dir / "data" / "mscmr")}},
                "training": dict(BUDGET, epochs=4),
            }},
        }
        (work / "local.yaml").write_text(yaml.safe_dump(overlay))
        result = run_snakemake("--configfile", "config/mscmr.yaml", str(work / "local.yaml"))
        (work / "snakemake.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work / "results" / "mscmr"


def test_mscmr_cyclemix_split_runs_to_summary(mscmr_run: Path):
    manifest = {row["case"]: row for row in read_csv(mscmr_run / "cases.tsv")}
    assert set(manifest) == {"subject26", "subject31", "subject41", "subject43"}
    assert manifest["subject26"]["has_scribble"] == "true"
    assert manifest["subject43"]["has_scribble"] == "false"
    splits = json.loads((mscmr_run / "splits.json").read_text())
    assert splits["folds"][0]["test"] == ["subject43"]
    assert splits["folds"][0]["val"] == ["subject41"]
    rows = read_csv(mscmr_run / "helpnet" / "fold0" / "metrics.csv")
    assert {row["case"] for row in rows} == {"subject43"}
    # subject43's label has an axis-aligned affine while its image is oblique: the prediction is
    # written with the image's header and scored in voxel space.
    prediction, header = load_nifti(mscmr_run / "helpnet" / "fold0" / "predictions" / "subject43.nii.gz", np.uint8)
    assert prediction.shape == (480, 480, 16)
    summary = json.loads((mscmr_run / "helpnet" / "summary.json").read_text())
    assert summary["experiment"] == "helpnet"
    assert (mscmr_run / "comparison.md").exists()
