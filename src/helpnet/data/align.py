"""The align stage: run a dataset reader and write the canonical cases, manifest and reports.

Output under ``output_dir``::

    cases/{case}/image.nii.gz, scribble.nii.gz, label.nii.gz
    dataset.json               classes, ignore value, source -> canonical value mapping, notes
    alignment_report.json      unmatched files and per-case annotation statistics
    cases.tsv                  the manifest, written last because the workflow waits for it
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from helpnet.data.cases import IGNORE_INDEX, CanonicalCase, write_case, write_dataset_info, write_manifest
from helpnet.data.readers import get_reader
from helpnet.data.readers.common import AFFINE_DIFFERS_KEY, UNMATCHED_KEYS, ReaderFn, ReaderResult, UnmatchedFilesError
from helpnet.io import write_json

logger = logging.getLogger(__name__)

CASE_FILES = ("image.nii.gz", "scribble.nii.gz", "label.nii.gz")
DISAGREEMENT_WARNING = 0.05
"""Fraction of annotated voxels disagreeing with the label above which a case is flagged in the log."""


def align_dataset(
    reader: str | ReaderFn,
    sources: dict[str, str | os.PathLike],
    options: dict | None,
    classes: list[str],
    output_dir: str | os.PathLike,
) -> list[dict[str, str]]:
    """Read a dataset with ``reader`` and write its canonical form into ``output_dir``.

    Returns the manifest rows. Files of an earlier run that the new run does not produce
    (stale cases, a scribble that no longer exists) are removed, so that the folder matches
    ``cases.tsv``.
    """
    output_dir = Path(output_dir)
    reader_name = reader if isinstance(reader, str) else getattr(reader, "__name__", str(reader))
    read: Callable = get_reader(reader) if isinstance(reader, str) else reader
    if not classes:
        raise ValueError("no classes given; pass the foreground class names, e.g. --classes RV Myo LV")
    source_paths = {name: Path(path) for name, path in sources.items()}
    options = dict(options or {})

    # The manifest marks a finished run; remove it first so a failed run leaves none behind.
    manifest_path = output_dir / "cases.tsv"
    if manifest_path.exists():
        manifest_path.unlink()

    logger.info("aligning %s with reader %r from %s", output_dir, reader_name, {k: str(v) for k, v in source_paths.items()})
    try:
        result: ReaderResult = read(source_paths, options, list(classes))
    except UnmatchedFilesError as error:
        # The message shows at most 20 files per list; the report keeps them all for the user.
        write_json(
            output_dir / "alignment_report.json",
            {"reader": reader_name, "sources": {k: str(v) for k, v in source_paths.items()}, "options": options,
             "error": str(error), "unmatched": {key: error.unmatched.get(key, []) for key in UNMATCHED_KEYS}},
        )  # fmt: skip
        raise
    rows: list[dict[str, str]] = []
    case_reports: dict[str, dict] = {}
    for case in tqdm(result.cases, total=result.num_cases, desc=f"align {output_dir.name}", unit="case"):
        if case.case_id in case_reports:
            raise ValueError(f"reader {reader_name!r} produced case {case.case_id!r} twice ({case.sources}); case ids must be unique")
        _check_case(case, len(classes))
        case_dir = output_dir / "cases" / case.case_id
        rows.append(write_case(case, case_dir))
        _remove_absent_files(case, case_dir)
        case_reports[case.case_id] = case_statistics(case, classes)

    if not rows:
        raise ValueError(f"reader {reader_name!r} found no cases in {source_paths}; check the sources")
    _remove_stale_cases(output_dir / "cases", set(case_reports))

    report = build_report(reader_name, source_paths, options, classes, result, case_reports)
    _log_summary(report)
    write_dataset_info(output_dir / "dataset.json", list(classes), result.label_mapping, result.notes)
    write_json(output_dir / "alignment_report.json", report)
    write_manifest(manifest_path, rows)
    logger.info("wrote %d cases to %s", len(rows), output_dir)
    return rows


def _check_case(case: CanonicalCase, num_classes: int) -> None:
    """Check the canonical invariants, so a reader bug cannot write an invalid case."""
    if case.image.ndim != 3 or case.image.dtype != np.float32:
        raise ValueError(f"case {case.case_id}: image must be a 3D float32 array, got {case.image.dtype} {case.image.shape}")
    for role, array, allowed in (
        ("scribble", case.scribble, set(range(num_classes + 1)) | {IGNORE_INDEX}),
        ("label", case.label, set(range(num_classes + 1))),
    ):
        if array is None:
            continue
        if array.shape != case.image.shape or array.dtype != np.uint8:
            raise ValueError(
                f"case {case.case_id}: {role} must be uint8 with the image shape {case.image.shape}, got {array.dtype} {array.shape}"
            )
        invalid = sorted(set(np.unique(array).tolist()) - allowed)
        if invalid:
            raise ValueError(
                f"case {case.case_id} ({case.sources.get(role, role)}): {role} value {invalid[0]} outside {sorted(allowed)}"
            )
    if case.scribble is None and case.label is None:
        raise ValueError(f"case {case.case_id} ({case.sources.get('image')}): neither a scribble nor a label")


def _remove_absent_files(case: CanonicalCase, case_dir: Path) -> None:
    for name, array in (("scribble.nii.gz", case.scribble), ("label.nii.gz", case.label)):
        path = case_dir / name
        if array is None and path.exists():
            path.unlink()


def _remove_stale_cases(cases_dir: Path, keep: set[str]) -> None:
    if not cases_dir.is_dir():
        return
    for folder in sorted(cases_dir.iterdir()):
        # Only folders that look like case folders are removed; anything else is left alone.
        if folder.is_dir() and folder.name not in keep and (folder / "image.nii.gz").exists():
            logger.info("removing stale case folder %s from an earlier run", folder)
            shutil.rmtree(folder)


def case_statistics(case: CanonicalCase, classes: list[str]) -> dict:
    """Return the alignment report entry of one case: annotation counts and scribble-label agreement."""
    names = ["background", *classes]
    entry: dict = {
        "subject": case.subject,
        "frame": case.frame,
        "shape": list(case.image.shape),
        "spacing": [round(s, 6) for s in case.spacing],
        "has_scribble": case.scribble is not None,
        "has_label": case.label is not None,
    }
    if case.scribble is not None:
        counts = np.bincount(case.scribble.ravel(), minlength=IGNORE_INDEX + 1)
        annotated = int(counts[:IGNORE_INDEX].sum())
        entry["annotated_voxels"] = annotated
        entry["annotated_fraction"] = annotated / case.scribble.size
        entry["scribble_counts"] = {name: int(counts[i]) for i, name in enumerate(names)}
        entry["scribble_counts"]["unannotated"] = int(counts[IGNORE_INDEX])
        entry["slices_with_scribble"] = int(np.count_nonzero((case.scribble != IGNORE_INDEX).any(axis=(0, 1))))
    if case.label is not None:
        counts = np.bincount(case.label.ravel(), minlength=len(names))
        entry["label_counts"] = {name: int(counts[i]) for i, name in enumerate(names)}
    if case.scribble is not None and case.label is not None:
        annotated = entry["annotated_voxels"]
        disagreeing = int(np.count_nonzero((case.scribble != IGNORE_INDEX) & (case.scribble != case.label)))
        entry["disagreeing_voxels"] = disagreeing
        entry["disagreement_fraction"] = disagreeing / annotated if annotated else 0.0
    affine_roles = case.sources.get(AFFINE_DIFFERS_KEY, "")
    entry["affine_differs"] = affine_roles.split(",") if affine_roles else []
    entry["sources"] = {role: case.sources[role] for role in case.sources if role != AFFINE_DIFFERS_KEY}
    return entry


def build_report(
    reader_name: str,
    sources: dict[str, Path],
    options: dict,
    classes: list[str],
    result: ReaderResult,
    case_reports: dict[str, dict],
) -> dict:
    """Assemble ``alignment_report.json``: inputs, unmatched files, totals and per-case entries."""
    both = [r for r in case_reports.values() if "disagreeing_voxels" in r]
    annotated_both = sum(r["annotated_voxels"] for r in both)
    disagreeing = sum(r["disagreeing_voxels"] for r in both)
    scribbled = [r for r in case_reports.values() if r["has_scribble"]]
    scribble_totals: dict[str, int] = {}
    for entry in scribbled:
        for name, count in entry["scribble_counts"].items():
            scribble_totals[name] = scribble_totals.get(name, 0) + count
    total_voxels = sum(sum(r["scribble_counts"].values()) for r in scribbled)
    annotated_total = sum(r["annotated_voxels"] for r in scribbled)
    return {
        "reader": reader_name,
        "sources": {name: str(path) for name, path in sources.items()},
        "options": options,
        "classes": ["background", *classes],
        "num_cases": len(case_reports),
        "num_with_scribble": len(scribbled),
        "num_with_label": sum(r["has_label"] for r in case_reports.values()),
        "unmatched": {key: list(result.unmatched.get(key, [])) for key in UNMATCHED_KEYS},
        "totals": {
            "annotated_voxels": annotated_total,
            "annotated_fraction": annotated_total / total_voxels if total_voxels else 0.0,
            "scribble_counts": scribble_totals,
            "cases_with_scribble_and_label": len(both),
            "annotated_voxels_with_label": annotated_both,
            "disagreeing_voxels": disagreeing,
            "disagreement_fraction": disagreeing / annotated_both if annotated_both else 0.0,
            "cases_with_differing_affine": sorted(c for c, r in case_reports.items() if r["affine_differs"]),
        },
        "cases": dict(sorted(case_reports.items())),
    }


def _log_summary(report: dict) -> None:
    totals = report["totals"]
    logger.info(
        "%d cases (%d with scribble, %d with label); %.2f%% of scribbled voxels annotated",
        report["num_cases"],
        report["num_with_scribble"],
        report["num_with_label"],
        100 * totals["annotated_fraction"],
    )
    if totals["cases_with_scribble_and_label"]:
        logger.info(
            "scribble vs label: %d of %d annotated voxels disagree (%.3f%%)",
            totals["disagreeing_voxels"],
            totals["annotated_voxels_with_label"],
            100 * totals["disagreement_fraction"],
        )
    for case_id, entry in report["cases"].items():
        if entry.get("disagreement_fraction", 0.0) > DISAGREEMENT_WARNING:
            logger.warning(
                "%s: scribble disagrees with the label on %.1f%% of annotated voxels; check that they are aligned",
                case_id,
                100 * entry["disagreement_fraction"],
            )
    if totals["cases_with_differing_affine"]:
        logger.info(
            "%d case(s) have a scribble or label affine that differs from the image's; aligned in voxel space",
            len(totals["cases_with_differing_affine"]),
        )
    for key, files in report["unmatched"].items():
        if files:
            logger.info("%s: %d file(s)", key.replace("_", " "), len(files))


# --- command line ------------------------------------------------------------------------------


def _parse_source(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"invalid --source {text!r}; use NAME=PATH, e.g. images=resources/acdc/images")
    return name, path


def _parse_options(text: str) -> dict:
    """Parse --options: a JSON object, or @FILE naming a JSON file."""
    try:
        value = json.loads(Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text)
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"invalid --options {text!r}: {error}; pass a JSON object or @file.json") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"invalid --options {text!r}: expected a JSON object, got {type(value).__name__}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``align`` subcommand."""
    parser = subparsers.add_parser(
        "align",
        help="convert a dataset into canonical cases (cases/, cases.tsv, dataset.json, alignment_report.json)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--reader", required=True, help="dataset reader: acdc, wsl4mis, mscmr, chaos, nifti_folder or demo")
    parser.add_argument(
        "--source",
        dest="sources",
        action="append",
        type=_parse_source,
        required=True,
        metavar="NAME=PATH",
        help="reader source as NAME=PATH; repeat for each source",
    )
    parser.add_argument("--classes", nargs="+", required=True, help="foreground class names, canonical values 1..K in order")
    parser.add_argument(
        "--options", type=_parse_options, default={}, help="reader options as a JSON object, or @FILE with one (default {})"
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="dataset results folder, e.g. results/acdc")
    parser.set_defaults(func=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    sources = dict(args.sources)
    if len(sources) != len(args.sources):
        names = [name for name, _ in args.sources]
        raise ValueError(f"--source given twice for {sorted({n for n in names if names.count(n) > 1})}; pass each source once")
    align_dataset(args.reader, sources, args.options, args.classes, args.output_dir)
    return 0


__all__ = ["align_dataset", "build_report", "case_statistics", "register"]
