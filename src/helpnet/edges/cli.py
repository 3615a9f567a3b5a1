"""Subcommands ``helpnet edges`` (one case's edge map) and ``helpnet edges-qc`` (overview figure)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from helpnet.edges.classical import SOBEL_CLIP_PERCENTILE, SOBEL_SIGMA, sobel_edges
from helpnet.edges.extract import default_converted, extract_edges, validate_edges, write_edges
from helpnet.edges.pidinet import CONFIGS, VARIANTS, load_pidinet
from helpnet.edges.qc import collect_panels, render_qc
from helpnet.io import load_nifti

logger = logging.getLogger(__name__)

METHODS = ("pidinet", "sobel")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``edges`` and ``edges-qc`` subcommands."""
    edges = subparsers.add_parser(
        "edges",
        help="compute the edge map of one case (uint8 0..255 on the image grid)",
        description="Compute a per-slice edge map of a canonical image and write it as uint8 NIfTI "
        "with the image's header.",
    )
    edges.add_argument("--image", required=True, type=Path, help="canonical image, e.g. results/D/cases/C/image.nii.gz")
    edges.add_argument("--output", required=True, type=Path, help="edge map to write, e.g. results/D/edges/C.nii.gz")
    edges.add_argument("--method", required=True, choices=METHODS, help="pidinet (pretrained network) or sobel (classical)")
    edges.add_argument("--checkpoint", type=Path, help="official PiDiNet checkpoint (.pth); required for --method pidinet")
    edges.add_argument("--variant", default="pidinet", choices=sorted(VARIANTS), help="PiDiNet width (default: pidinet)")
    edges.add_argument(
        "--config",
        default="carv4",
        choices=sorted(CONFIGS),
        help="pixel-difference layout the checkpoint was trained with (default: carv4; table5_baseline.pth: baseline)",
    )
    edges.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CSAM attention modules; the -l checkpoints need --no-attention (default: on)",
    )
    edges.add_argument(
        "--dilation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CDCM dilation modules; the -l checkpoints need --no-dilation (default: on)",
    )
    edges.add_argument(
        "--converted",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold the pixel-difference kernels into plain convolutions, with the same output "
        "(default: helpnet.edges.extract.DEFAULT_CONVERTED, converted for every variant)",
    )
    edges.add_argument("--device", default="auto", help="torch device: auto (CUDA if available), cpu, cuda, cuda:1 ...")
    edges.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    edges.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads; set it to the CPUs reserved for the job (default: torch's own choice)",
    )
    edges.add_argument("--sobel-sigma", type=float, default=SOBEL_SIGMA, help="Gaussian sigma in pixels for --method sobel")
    edges.set_defaults(func=run_edges)

    qc = subparsers.add_parser(
        "edges-qc",
        help="draw edge maps over a few slices of a few cases into a PNG",
        description="Draw edge maps over a few slices of a few cases into one PNG for visual checking.",
    )
    qc.add_argument("--cases-dir", required=True, type=Path, help="folder of canonical cases, e.g. results/D/cases")
    qc.add_argument("--edges-dir", required=True, type=Path, help="folder of edge maps, e.g. results/D/edges")
    qc.add_argument("--output", required=True, type=Path, help="PNG to write, e.g. results/D/edges_qc.png")
    qc.add_argument("--cases", nargs="+", metavar="CASE", help="case ids to show (default: the first --max-cases)")
    qc.add_argument("--max-cases", type=int, default=3, help="cases to show when --cases is not given (default: 3)")
    qc.add_argument("--slices", type=int, default=3, help="slices per case (default: 3)")
    qc.set_defaults(func=run_edges_qc)


def _describe(args: argparse.Namespace) -> str:
    """Return the method text stored in the edge file's ``descrip`` field (shown by edges-qc)."""
    if args.method == "sobel":
        return f"sobel sigma={args.sobel_sigma:g} clip=p{SOBEL_CLIP_PERCENTILE:g}"
    flags = "+".join(name for name, on in (("sa", args.attention), ("dil", args.dilation)) if on) or "plain"
    return f"pidinet {args.variant} {args.config} {flags} {args.checkpoint.name}"


def run_edges(args: argparse.Namespace) -> int:
    """Compute, check and write the edge map of one image."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        # More threads than free cores makes PyTorch's CPU kernels stall at their barriers.
        torch.set_num_threads(args.threads)
    if not args.image.is_file():
        raise FileNotFoundError(f"image not found: {args.image}; run `helpnet align` for this dataset first")
    volume, header = load_nifti(args.image)
    source = str(args.image)

    if args.method == "pidinet":
        if args.checkpoint is None:
            raise ValueError("--method pidinet needs --checkpoint PATH (an official PiDiNet .pth file)")
        converted = default_converted(args.variant) if args.converted is None else args.converted
        model = load_pidinet(
            args.checkpoint,
            variant=args.variant,
            attention=args.attention,
            dilation=args.dilation,
            converted=converted,
            device="cpu",
            config=args.config,
        )
        edges = extract_edges(volume, model, device=args.device, batch_size=args.batch_size, source=source)
    else:
        edges = sobel_edges(volume, sigma=args.sobel_sigma, source=source)

    validate_edges(edges, volume, source=f"{args.output} (from {source})")
    write_edges(args.output, edges, header, _describe(args))
    logger.info(
        "wrote %s: %s, shape %s, %.1f%% of pixels > 127",
        args.output,
        args.method,
        edges.shape,
        100.0 * float(np.mean(edges > 127)),
    )
    return 0


def run_edges_qc(args: argparse.Namespace) -> int:
    """Write the edge QC figure."""
    if args.max_cases < 1 or args.slices < 1:
        raise ValueError(f"--max-cases and --slices must be >= 1, got {args.max_cases} and {args.slices}")
    panels = collect_panels(
        args.cases_dir, args.edges_dir, case_ids=args.cases, max_cases=args.max_cases, slices_per_case=args.slices
    )
    render_qc(panels, args.output, columns=args.slices)
    return 0
