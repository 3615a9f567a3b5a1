"""The benchmark scripts' own arithmetic and tables (the timings themselves are never asserted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_precision_parity  # noqa: E402
import bench_step  # noqa: E402


def test_paired_statistics_t_interval():
    stats = bench_precision_parity.paired_statistics([0.01, -0.02, 0.03])
    # Mean 0.02 / 3; deviations 1/300, -8/300, 7/300 give a sample variance of 114/90000 / 2.
    sd = math.sqrt((1 + 64 + 49) / 90000 / 2)
    # With 2 degrees of freedom the 97.5 % quantile of Student's t is 0.95 / sqrt(2 * 0.975 * 0.025).
    half_width = 0.95 / math.sqrt(2 * 0.975 * 0.025) * sd / math.sqrt(3)
    assert stats["count"] == 3
    assert stats["mean"] == pytest.approx(0.02 / 3)
    assert stats["sd"] == pytest.approx(sd)
    assert stats["ci95"] == pytest.approx([0.02 / 3 - half_width, 0.02 / 3 + half_width])


def test_format_paired_line():
    line = bench_precision_parity.format_paired("bf16 - fp32", {"count": 3, "mean": -0.01, "sd": 0.02,
                                                                "ci95": [-0.06, 0.04]})
    assert line == "bf16 - fp32, paired over 3 seeds: mean -0.0100, sd 0.0200, 95 % t-interval [-0.0600, +0.0400]"


def test_paired_statistics_single_seed_has_no_spread():
    assert bench_precision_parity.paired_statistics([0.02]) == {"count": 1, "mean": 0.02, "sd": None, "ci95": None}


def _row(device: str, experiment: str, step_ms: float) -> dict:
    row = {
        "device": device, "network": "unet_light", "precision": "bf16", "experiment": experiment, "batch": 16,
        "step_ms": step_ms, "step_ms_all": [step_ms], "step_tflop": 0.5, "tflops_per_s": 0.5 / (step_ms / 1000),
        "peak_rss_mb": 900.0, "peak_above_setup_mb": 400.0,
    }
    if device != "cpu":
        row["peak_gpu_mb"] = 2048.0
    return row


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("peak", [None, 1000.0])
def test_step_table_columns_line_up(device, peak):
    rows = [_row(device, "pce", 10.0), _row(device, "helpnet", 25.0)]
    table = bench_step.format_table(rows, [], peak).split("\n\n")[0].splitlines()
    widths = {line.count("|") for line in table}
    assert len(widths) == 1, table
    assert ("peak GPU MB" in table[0]) == (device == "cuda")
    if peak:
        # 0.5 TFLOP in 25 ms is 20 TFLOP/s, 2 % of 1000.
        assert table[3].split("|")[9].strip() == "2.0"


def test_step_ratio_table_per_batch():
    rows = [_row("cpu", "pce", 10.0), _row("cpu", "helpnet", 25.0)]
    ratios = bench_step.format_table(rows, [], None).split("\n\n")[2].splitlines()
    assert ratios[2] == "| unet_light | bf16 | 16 | 2.50 | n/a | n/a |"


def test_failed_configuration_shows_child_error():
    config = {
        "device": "cuda:99", "network": "unet_light", "precision": "fp32", "experiment": "pce", "batch": 1,
        "size": 32, "warmup": 1, "repeats": 1, "threads": 1, "malloc_tuning": False, "memory_format": "channels_last",
    }
    with pytest.raises(RuntimeError, match=r"unet_light fp32 pce batch 1 failed \(exit status 1\)") as error:
        bench_step.run_in_subprocess(config)
    # The child's own exception text comes along, not only its exit status.
    assert "Error" in str(error.value).split("\n", 1)[1]
