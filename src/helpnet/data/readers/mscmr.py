"""Reader for MSCMRseg LGE CMR in the CycleMix layout, pairing files by subject number.

Sources:

- ``dataset``: the CycleMix ``MSCMR_dataset`` folder. Under it, at any depth, images are
  ``subjectN_DE.nii.gz`` (in ``images/`` folders), scribbles ``subjectN_DE_scribble.nii.gz`` and
  dense labels ``subjectN_DE_manual.nii.gz`` (``train/labels`` holds scribbles, ``val`` and
  ``TestSet`` hold dense labels);
- ``scribbles`` (optional): an extra folder of ``subjectN_DE_scribble.nii.gz`` (CycleMix's
  ``MSCMR_scribbles``); a subject scribbled in both places must have identical scribbles;
- ``labels`` (optional): official dense labels ``subjectN_DE_manual.nii.gz``, in the official
  encoding (200 Myo, 500 LV, 600 RV) or already remapped to 0..3.

Upstream loaders pair images and labels by sorted file order; this reader pairs by subject
number. Image, scribble and label share one array grid, but their affines may differ (the
TestSet label of subject43 is axis-aligned while its image is oblique), so they are aligned in
voxel space.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from helpnet.data.cases import CanonicalCase
from helpnet.data.readers.common import (
    ReaderResult,
    check_class_count,
    check_options,
    default_scribble_mapping,
    enforce_unmatched_policy,
    find_files,
    identity_mapping,
    load_nifti_case,
    load_volume,
    mapping_for_json,
    pair_by_case_id,
    remap_values,
    require_sources,
)

logger = logging.getLogger(__name__)

IMAGE_FILE = re.compile(r"(subject\d+)_DE\.nii\.gz")
SCRIBBLE_FILE = re.compile(r"(subject\d+)_DE_scribble\.nii\.gz")
LABEL_FILE = re.compile(r"(subject\d+)_DE_manual\.nii\.gz")
SCRIBBLE_UNANNOTATED = 4
OFFICIAL_LABEL_MAPPING = {0: 0, 200: 2, 500: 3, 600: 1}
"""Official MSCMRseg release: 200 myocardium, 500 LV cavity, 600 RV cavity."""


def read_mscmr(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read MSCMRseg subjects from the CycleMix folder, plus optional extra scribbles and official labels."""
    options = check_options(options, (), "mscmr")
    paths = require_sources(sources, ["dataset"], ["scribbles", "labels"], "mscmr")
    check_class_count(classes, 3, "mscmr", "RV, Myo, LV")

    images = find_files(paths["dataset"], IMAGE_FILE)
    if not images:
        raise FileNotFoundError(
            f"no MSCMRseg images (subjectN_DE.nii.gz) found under {paths['dataset']}; pass CycleMix's MSCMR_dataset "
            "folder as source 'dataset'"
        )
    scribbles = find_files(paths["dataset"], SCRIBBLE_FILE)
    if "scribbles" in paths:
        scribbles = _merge_scribbles(scribbles, find_files(paths["scribbles"], SCRIBBLE_FILE))
    labels = find_files(paths["dataset"], LABEL_FILE)
    if "labels" in paths:
        labels = _merge_labels(labels, find_files(paths["labels"], LABEL_FILE))

    pairing = pair_by_case_id(images, scribbles, labels)
    pairs = enforce_unmatched_policy(pairing, options)
    scribble_mapping = default_scribble_mapping(3, SCRIBBLE_UNANNOTATED)
    logger.info(
        "MSCMRseg: %d subjects, %d with scribbles, %d with dense labels",
        len(pairs),
        sum(p.scribble is not None for p in pairs),
        sum(p.label is not None for p in pairs),
    )

    def cases() -> Iterator[CanonicalCase]:
        for case_paths in pairs:
            yield load_nifti_case(case_paths, case_paths.case_id, "DE", scribble_mapping, label_mapping_for)

    return ReaderResult(
        cases=cases(),
        unmatched=pairing.unmatched,
        label_mapping={
            "scribble": mapping_for_json(scribble_mapping),
            "label": mapping_for_json(identity_mapping(3)),
            "label_official": mapping_for_json(OFFICIAL_LABEL_MAPPING),
        },
        notes=(
            "MSCMRseg LGE (CycleMix layout), paired by subject number; images scaled by their NIfTI scl_slope/scl_inter "
            "and cast to float32; label files containing 200, 500 or 600 read in the official encoding (label_official)."
        ),
        num_cases=len(pairs),
    )


def label_mapping_for(raw: np.ndarray, file: Path) -> dict[int, int]:
    """Pick the label encoding of one file: official when it contains 200, 500 or 600, else 0..3."""
    if np.isin(raw, [200, 500, 600]).any():
        logger.debug("%s: official MSCMRseg label encoding (200/500/600)", file)
        return OFFICIAL_LABEL_MAPPING
    return identity_mapping(3)


def _merge_scribbles(own: dict[str, Path], extra: dict[str, Path]) -> dict[str, Path]:
    """Add the extra scribble folder; a subject present in both must have the same scribble."""
    merged = dict(own)
    for subject, path in extra.items():
        if subject in merged and not _same_volume(merged[subject], path, "scribble"):
            raise ValueError(
                f"{path}: scribble differs from {merged[subject]} for {subject}; keep only one version of the scribble"
            )
        merged.setdefault(subject, path)
    return merged


def _merge_labels(own: dict[str, Path], extra: dict[str, Path]) -> dict[str, Path]:
    """Add the official labels; a subject present in both must have the same label after remapping."""
    merged = dict(own)
    for subject, path in extra.items():
        if subject in merged:
            if not _same_volume(merged[subject], path, "label"):
                raise ValueError(
                    f"{path}: label differs from {merged[subject]} for {subject} after remapping; keep only one version"
                )
            continue
        merged[subject] = path
    return merged


def _same_volume(first: Path, second: Path, role: str) -> bool:
    if _sha256(first) == _sha256(second):
        return True
    arrays = []
    for path in (first, second):
        raw = load_volume(path)[0]
        mapping = label_mapping_for(raw, path) if role == "label" else default_scribble_mapping(3, SCRIBBLE_UNANNOTATED)
        arrays.append(remap_values(raw, mapping, path, role))
    return arrays[0].shape == arrays[1].shape and bool(np.array_equal(arrays[0], arrays[1]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
