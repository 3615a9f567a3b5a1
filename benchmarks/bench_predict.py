"""Time `predict_cases` on one real ACDC volume: batched over slices against one slice at a time.

Usage: python benchmarks/bench_predict.py [--shared DIR] [--network unet_upstream] [--threads 2]
The volume is DIR/data/acdc/training/patient005/patient005_frame01.nii.gz; DIR defaults to
$HELPNET_SHARED_DIR, else ../shared.
Trains nothing: the network has random weights, which costs the same as trained ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpnet.data.cases import CanonicalCase, write_case
from helpnet.io import load_nifti
from helpnet.model import build_network
from helpnet.training.checkpoint import save_checkpoint
from helpnet.training.inference import predict_cases
from helpnet.training.runtime import tune_host_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("HELPNET_SHARED_DIR", "../shared")),
                        help="folder with data/acdc/ (default: $HELPNET_SHARED_DIR, else ../shared)")
    parser.add_argument("--network", default="unet_upstream", help="unet_upstream, unet_light or unet_light_wsl4mis")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per setting; best and median are printed")
    args = parser.parse_args()
    tune_host_allocator()  # as `helpnet predict` does
    torch.set_num_threads(args.threads)

    image_path = args.shared / "data/acdc/training/patient005/patient005_frame01.nii.gz"
    if not image_path.is_file():
        parser.error(f"ACDC volume not found: {image_path}; pass --shared DIR or set HELPNET_SHARED_DIR")
    image, header = load_nifti(image_path)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_case(CanonicalCase("patient005_frame01", "patient005", "ED", image, header), work / "cases" / "patient005_frame01")
        print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
              f"{args.network}, volume {image.shape}")
        for precision in ("fp32", "bf16"):
            model = build_network(args.network, num_classes=4)
            meta = {"network": args.network, "num_classes": 4, "patch_size": 224, "target_spacing": 1.36719,
                    "precision": precision, "channels_last": True}
            save_checkpoint(work / f"{precision}.pt", {"model": model.state_dict(), "meta": meta})
            for batch_size in (1, 32):
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    predict_cases([work / f"{precision}.pt"], work / "cases", ["patient005_frame01"], work / "out", "cpu", batch_size)
                    times.append(time.perf_counter() - start)
                print(f"{precision} batch {batch_size:>2}: best {min(times):.2f} s, median {float(np.median(times)):.2f} s "
                      f"for {image.shape[2]} slices")


if __name__ == "__main__":
    main()
