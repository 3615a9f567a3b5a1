"""Stand-in for a resumable trainer: wait for SIGTERM, checkpoint, and resume on the next run.

First run: writes state/started, then waits. On SIGTERM it takes 3 s (a slow checkpoint write)
to write state/checkpoint and exits with 143, as `helpnet train` does. A run that finds
state/checkpoint writes the output right away and records the attempt that resumed.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--state", type=Path, required=True)
parser.add_argument("--output", type=Path, required=True)
args = parser.parse_args()
args.state.mkdir(exist_ok=True)
job_id = os.environ.get("SLURM_JOB_ID", "none")

checkpoint = args.state / "checkpoint"
if checkpoint.exists():
    args.output.write_text(f"resumed from {checkpoint.read_text().strip()} in job {job_id}\n")
    sys.exit(0)


def save_and_exit(signum: int, _frame: object) -> None:
    time.sleep(3)
    checkpoint.write_text(f"job {job_id}\n")
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, save_and_exit)
(args.state / "started").write_text(f"job {job_id}\n")
time.sleep(240)
args.output.write_text("finished without a signal\n")
