"""Real submissions to the single-node SLURM cluster of .ci/slurm/ through Snakemake's SLURM plugin.

The tests run only when ``HELPNET_SLURM`` is set:
- ``HELPNET_SLURM=1``: the cluster is already running (``.ci/run`` starts it with
  ``.ci/slurm/start.sh`` and stops it with ``.ci/slurm/stop.sh`` in a trap);
- ``HELPNET_SLURM=start``: the session fixture starts the cluster and stops it at the end of the
  session, also when a test fails.

Every ``snakemake`` call runs under ``timeout -s INT`` so a hang fails the test instead of the CI
run: SIGINT makes Snakemake cancel its SLURM jobs and exit.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / "tests" / "slurm_workflows"
PROFILE = REPO_ROOT / "profiles" / "slurm-local"
START_SCRIPT = REPO_ROOT / ".ci" / "slurm" / "start.sh"
STOP_SCRIPT = REPO_ROOT / ".ci" / "slurm" / "stop.sh"

MODE = os.environ.get("HELPNET_SLURM", "")

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        MODE not in ("1", "start"),
        reason="needs the local SLURM cluster: set HELPNET_SLURM=1 (cluster running) or HELPNET_SLURM=start",
    ),
]

# Seconds one probe workflow may take: two jobs of a few seconds plus the plugin's status
# polling, which waits 10 s longer after each round in which no job finished (2 s, 12 s, 22 s, ...).
PROBE_TIMEOUT_S = 150
# The demo DAG below is 19 jobs on a critical path of 9.
DEMO_TIMEOUT_S = 420
RERUN_TIMEOUT_S = 240

# Tiny demo on the test cluster: 2 subjects (4 cases), 2 folds without validation cases, one
# experiment, two optimizer steps, and resource requests that fit the test node (1 CPU per job,
# so two jobs run at once on 2 cores). The experiment is `pce`, which needs no edge maps: that
# leaves out the edges and edges_qc jobs, and the GPU request is still exercised by `train` here
# and by the probe workflow. Each job costs about 10 s however small, because the job starts
# Snakemake twice (batch script and job step) before `python -m helpnet.cli` imports torch.
DEMO_CONFIG = {
    "run_experiments": ["pce"],
    "folds": "all",
    "edges_device": "cpu",
    "datasets": {
        "demo": {
            "sources": {"demo": {"demo": {"subjects": 2, "seed": 0}}},
            "split": {"scheme": "kfold", "folds": 2, "seed": 42, "validation_subjects": 0},
            # The demo's own budget lives under the dataset, so the override goes there too.
            "training": {
                "network": "unet_light",
                "patch_size": 32,
                "batch_size": 2,
                "epochs": 1,
                "max_steps": 2,
                "checkpoint_every": 1,
                "log_every": 1,
                "device": "cpu",
            },
        }
    },
    "evaluation": {"device": "cpu"},
    "resources": {
        "light": {"mem_mb": 1000, "runtime": 10, "cpus_per_task": 1, "gpu": 0},
        "edges": {"mem_mb": 1000, "runtime": 10, "cpus_per_task": 1, "gpu": 1},
        "train": {"mem_mb": 2000, "runtime": 10, "cpus_per_task": 1, "gpu": 1},
        "evaluate": {"mem_mb": 1000, "runtime": 10, "cpus_per_task": 1, "gpu": 0},
    },
}


def _slurm_command(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit code {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _cluster_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        states = _slurm_command("sinfo", "--noheader", "--nodes", "localhost", "--format", "%T")
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return states.split()[:1] in (["idle"], ["mixed"], ["allocated"])


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> None:
    """Make sure the local cluster runs; with HELPNET_SLURM=start, start it and stop it at the end."""
    if MODE == "start":
        # Registered before the start so a start that fails halfway is cleaned up too.
        request.addfinalizer(lambda: subprocess.run(["bash", str(STOP_SCRIPT)], check=False, timeout=180))
        subprocess.run(["bash", str(START_SCRIPT)], check=True, timeout=300)
    if not _cluster_is_up():
        pytest.fail(
            "HELPNET_SLURM is set but the SLURM node `localhost` is not up (sinfo failed or shows it down). "
            "Start the cluster with .ci/slurm/install.sh and .ci/slurm/start.sh, or set HELPNET_SLURM=start."
        )


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # Job shells call `python -m helpnet.cli`; sbatch exports this PATH, so jobs get the
    # interpreter that runs the tests even when its virtual environment is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_snakemake(args: list[str], workdir: Path, timeout_s: int) -> subprocess.CompletedProcess[str]:
    """Run ``snakemake --profile profiles/slurm-local ARGS`` in WORKDIR under ``timeout -s INT``."""
    command = [
        "timeout",
        "-s",
        "INT",
        # A Snakemake that ignores SIGINT for 60 s more gets SIGKILL.
        "-k",
        "60",
        str(timeout_s),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(PROFILE),
        "--directory",
        str(workdir),
        *args,
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=_environment(), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    # One file per run, kept for debugging a failure: Snakemake's console output.
    run_number = len(list(workdir.glob("snakemake_output_*.txt")))
    (workdir / f"snakemake_output_{run_number}.txt").write_text(result.stdout + result.stderr)
    if result.returncode in (124, 137):
        pytest.fail(
            f"snakemake timed out after {timeout_s} s (elapsed {elapsed:.0f} s); "
            f"output tail:\n{(result.stdout + result.stderr)[-4000:]}"
        )
    return result


def submitted_jobs(output: str) -> dict[str, str]:
    """Map SLURM job id to Snakemake rule name from the submission lines of a Snakemake run."""
    pattern = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_([A-Za-z0-9_]+)/")
    return {job_id: rule for job_id, rule in pattern.findall(output)}


def run_id(output: str) -> str:
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, f"no 'SLURM run ID' line in the Snakemake output:\n{output[-3000:]}"
    return match.group(1)


def accounting(run: str) -> list[dict[str, str]]:
    """Return sacct's rows (one per job, no steps) of the jobs that one Snakemake run submitted.

    The plugin names every job of a run after the run's id and puts the rule and wildcards in
    the job comment. A finished job reaches sacct a moment after squeue stops showing it, so the
    query is repeated for up to 20 s until every row has an end state.
    """
    fields = ["JobIDRaw", "JobName", "Partition", "State", "ExitCode", "AllocTRES", "NodeList", "Comment"]
    deadline = time.monotonic() + 20
    while True:
        text = _slurm_command(
            "sacct",
            "--allusers",
            "--allocations",
            "--parsable2",
            "--starttime",
            "now-1days",
            "--endtime",
            "now",
            "--name",
            run,
            "--format",
            ",".join(fields),
        )
        rows = list(csv.DictReader(io.StringIO(text), delimiter="|"))
        pending = [r for r in rows if r["State"] in ("PENDING", "RUNNING", "COMPLETING")]
        if rows and not pending or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def read_probe(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_gpu_rule_runs_on_fake_gpu(slurm_cluster: None, tmp_path: Path) -> None:
    result = run_snakemake(["--snakefile", str(WORKFLOWS / "probe" / "Snakefile")], tmp_path, PROBE_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    gpu = read_probe(tmp_path / "gpu_probe.txt")
    cpu = read_probe(tmp_path / "cpu_probe.txt")
    # The gres/gpu plugin exports the index of the allocated fake GPU.
    assert gpu["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    assert cpu["CUDA_VISIBLE_DEVICES"] == "unset"
    assert gpu["SLURM_JOB_ID"].isdigit()
    assert cpu["SLURM_JOB_ID"].isdigit()
    assert gpu["SLURM_JOB_PARTITION"] == "gpu"
    assert cpu["SLURM_JOB_PARTITION"] == "cpu"
    assert gpu["SLURMD_NODENAME"] == "localhost"

    jobs = submitted_jobs(output)
    assert sorted(jobs.values()) == ["cpu_probe", "gpu_probe"]
    rows = {row["JobIDRaw"]: row for row in accounting(run_id(output))}
    assert set(rows) == set(jobs)
    gpu_row = rows[gpu["SLURM_JOB_ID"]]
    cpu_row = rows[cpu["SLURM_JOB_ID"]]
    assert jobs[gpu["SLURM_JOB_ID"]] == "gpu_probe"
    assert gpu_row["State"] == "COMPLETED"
    assert "gres/gpu=1" in gpu_row["AllocTRES"].split(",")
    assert gpu_row["NodeList"] == "localhost"
    assert cpu_row["State"] == "COMPLETED"
    assert "gres/gpu" not in cpu_row["AllocTRES"]


def test_failing_job_reported_as_failed(slurm_cluster: None, tmp_path: Path) -> None:
    result = run_snakemake(["--snakefile", str(WORKFLOWS / "failing" / "Snakefile")], tmp_path, PROBE_TIMEOUT_S)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output[-4000:]
    assert "Error in rule deliberate_failure" in output
    assert not (tmp_path / "never_written.txt").exists()
    jobs = submitted_jobs(output)
    assert list(jobs.values()) == ["deliberate_failure"]
    rows = accounting(run_id(output))
    assert len(rows) == 1
    assert rows[0]["JobIDRaw"] in jobs
    assert rows[0]["State"] == "FAILED"
    # The exact code is the job step's (srun runs the rule), so only its being non-zero is checked.
    assert rows[0]["ExitCode"] != "0:0"


def test_sigterm_checkpoint_then_resume(slurm_cluster: None, tmp_path: Path) -> None:
    """SIGTERM to the job steps, as `--signal=TERM@<seconds>` sends it before a time limit.

    The stand-in trainer checkpoints on SIGTERM and exits with 143; the rule's retry resumes
    from the checkpoint instead of starting over.
    """
    command = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "60",
        str(PROBE_TIMEOUT_S),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(PROFILE),
        "--directory",
        str(tmp_path),
        "--snakefile",
        str(WORKFLOWS / "preempt" / "Snakefile"),
    ]
    started_marker = tmp_path / "state" / "started"
    process = subprocess.Popen(
        command, cwd=tmp_path, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not started_marker.exists() or not started_marker.read_text().endswith("\n"):
            assert process.poll() is None, f"snakemake exited early:\n{process.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, "the job did not start within 90 s"
            time.sleep(0.5)
        job_id = started_marker.read_text().split()[1]
        # Without --full, scancel signals the job steps but not the batch shell, as --signal does
        # without the B: prefix.
        _slurm_command("scancel", "--signal=TERM", job_id)
        output, _ = process.communicate(timeout=PROBE_TIMEOUT_S + 70)
    finally:
        if process.poll() is None:
            process.kill()
    (tmp_path / "snakemake_output_0.txt").write_text(output)

    assert process.returncode == 0, output[-4000:]
    assert (tmp_path / "state" / "checkpoint").read_text() == f"job {job_id}\n"
    assert (tmp_path / "resumed.txt").read_text().startswith(f"resumed from job {job_id} in job ")


@pytest.fixture(scope="module")
def demo_run(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """Run the whole demo DAG on the cluster once; return the work directory and Snakemake's output."""
    if not (REPO_ROOT / "Snakefile").is_file():
        pytest.skip("the main workflow (Snakefile) is not in this checkout")
    workdir = tmp_path_factory.mktemp("demo_slurm")
    config_file = workdir / "test_overrides.yaml"
    config_file.write_text(json.dumps(DEMO_CONFIG))
    args = [
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--configfile",
        str(REPO_ROOT / "config.yaml"),
        str(config_file),
    ]
    result = run_snakemake(args, workdir, DEMO_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    yield workdir, output


def test_demo_dag_on_slurm(demo_run: tuple[Path, str]) -> None:
    workdir, output = demo_run
    results = workdir / "results" / "demo"
    for fold in (0, 1):
        assert (results / "pce" / f"fold{fold}" / "metrics.csv").is_file()
    assert (results / "pce" / "summary.csv").is_file()
    assert (results / "comparison.md").is_file()

    jobs = submitted_jobs(output)
    rules = sorted(set(jobs.values()))
    for rule in ("make_demo", "align", "split", "preprocess", "train", "predict", "evaluate", "summarize", "compare"):
        assert rule in rules
    rows = {row["JobIDRaw"]: row for row in accounting(run_id(output))}
    assert set(rows) == set(jobs)
    for job_id, rule in jobs.items():
        assert rows[job_id]["State"] == "COMPLETED", (rule, rows[job_id])
    # Training and edge extraction request one GPU each and go to the GPU partition.
    for job_id, rule in jobs.items():
        tres = rows[job_id]["AllocTRES"].split(",")
        if rule in ("train", "edges"):
            assert "gres/gpu=1" in tres, (rule, tres)
            assert rows[job_id]["Partition"] == "gpu"
        else:
            assert not any(t.startswith("gres/gpu") for t in tres), (rule, tres)
            assert rows[job_id]["Partition"] == "cpu"


def test_single_fold_rerun_resubmits_only_that_fold(demo_run: tuple[Path, str]) -> None:
    workdir, _ = demo_run
    config_file = workdir / "test_overrides.yaml"
    fold0_metrics = workdir / "results" / "demo" / "pce" / "fold0" / "metrics.csv"
    fold0_mtime = fold0_metrics.stat().st_mtime
    # The same one-liner as on a workstation, plus the profile: force fold 1's training.
    args = [
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--configfile",
        str(REPO_ROOT / "config.yaml"),
        str(config_file),
        "--forcerun",
        "train",
        "--config",
        "folds=[1]",
    ]
    result = run_snakemake(args, workdir, RERUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    rows = accounting(run_id(output))
    jobs = [parse_comment(row["Comment"]) for row in rows]
    rules = sorted(rule for rule, _ in jobs)
    # Training fold 1 again makes everything downstream of it in fold 1 stale, and nothing else.
    assert {"train", "predict", "evaluate"} <= set(rules), rules
    assert rules.count("train") == 1, rules
    for rule, wildcards in jobs:
        assert wildcards == "demo_pce_1", (rule, wildcards)
    assert all(row["State"] == "COMPLETED" for row in rows), rows
    assert fold0_metrics.stat().st_mtime == fold0_mtime


def parse_comment(comment: str) -> tuple[str, str]:
    """Split the plugin's job comment `rule_<rule>_wildcards_<values joined by '_'>`."""
    match = re.fullmatch(r"rule_(\w+?)_wildcards_(\S+)", comment)
    assert match, f"unexpected job comment {comment!r}"
    return match.group(1), match.group(2)
