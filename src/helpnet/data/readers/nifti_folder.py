"""Generic reader for folders of NIfTI files named by case id, and the demo preset built on it.

Layout: one directory per role (``images``, ``scribbles``, optional ``labels``), or one ``root``
directory holding those three sub-directories. A file's case id is its name without the role's
suffix, so ``images/case07.nii.gz`` pairs with ``scribbles/case07.nii.gz``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from helpnet.data.cases import CanonicalCase
from helpnet.data.readers.common import (
    CasePaths,
    Pairing,
    ReaderResult,
    check_case_id,
    check_class_count,
    check_options,
    default_scribble_mapping,
    enforce_unmatched_policy,
    identity_mapping,
    is_hidden,
    load_nifti_case,
    mapping_for_json,
    pair_by_case_id,
    parse_value_mapping,
)

logger = logging.getLogger(__name__)

ROLES = ("images", "scribbles", "labels")
KNOWN_OPTIONS = (
    "image_suffix",
    "scribble_suffix",
    "label_suffix",
    "recursive",
    "subject_pattern",
    "frame_pattern",
    "scribble_unannotated",
    "scribble_mapping",
    "label_mapping",
)
DEFAULT_SUFFIX = ".nii.gz"

DEMO_OPTIONS = {
    "subject_pattern": r"^(subject\d+)_",
    "frame_pattern": r"_(ED|ES)$",
    "scribble_unannotated": 4,
}
"""Fixed options of the ``demo`` reader: case ids ``subjectNN_ED``/``_ES``, scribble value 4 = unannotated."""


def read_nifti_folder(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read ``images``/``scribbles``/``labels`` NIfTI folders (or one ``root`` holding them)."""
    options = check_options(options, KNOWN_OPTIONS, "nifti_folder")
    folders = _role_folders(sources, "nifti_folder")
    return _read(folders, options, classes, "nifti_folder")


def read_demo(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult:
    """Read the synthetic dataset written by ``helpnet demo`` (the nifti_folder layout, fixed options).

    Takes one source of any name, the directory the demo wrote, or the three role folders.
    """
    options = check_options(options, (), "demo")
    check_class_count(classes, 3, "demo", "RV, Myo, LV")
    if len(sources) == 1 and not set(sources) & set(ROLES):
        sources = {"root": next(iter(sources.values()))}
    folders = _role_folders(sources, "demo")
    return _read(folders, {**DEMO_OPTIONS, **options}, classes, "demo")


def _role_folders(sources: Mapping[str, Path], reader: str) -> dict[str, Path]:
    names = set(sources)
    if "root" in names:
        if names != {"root"}:
            raise ValueError(
                f"reader {reader!r}: pass either source 'root' or the sources {list(ROLES)}, not both (got {sorted(names)})"
            )
        root = Path(sources["root"])
        if not (root / "images").is_dir():
            raise FileNotFoundError(f"reader {reader!r}: {root / 'images'} not found; 'root' must contain images/ and scribbles/")
        return {role: root / role for role in ROLES if (root / role).is_dir()}
    unknown = sorted(names - set(ROLES))
    if unknown or "images" not in names:
        raise ValueError(
            f"reader {reader!r}: invalid sources {sorted(names)}; pass 'images' (required), 'scribbles' and 'labels', "
            "or a single 'root' directory that holds images/, scribbles/ and labels/"
        )
    folders = {role: Path(path) for role, path in sources.items()}
    for role, path in folders.items():
        if not path.is_dir():
            raise FileNotFoundError(f"reader {reader!r}: source {role!r} directory {path} not found; check the path")
    return folders


def _read(folders: dict[str, Path], options: dict, classes: list[str], reader: str) -> ReaderResult:
    suffixes = {
        "images": options.get("image_suffix", DEFAULT_SUFFIX),
        "scribbles": options.get("scribble_suffix", DEFAULT_SUFFIX),
        "labels": options.get("label_suffix", DEFAULT_SUFFIX),
    }
    files = _collect(folders, suffixes, bool(options.get("recursive", False)))
    pairing: Pairing = pair_by_case_id(files["images"], files.get("scribbles", {}), files.get("labels", {}))
    pairs = enforce_unmatched_policy(pairing, options)

    num_classes = len(classes)
    if "scribble_mapping" in options:
        scribble_mapping = parse_value_mapping(options["scribble_mapping"], "scribble_mapping")
    else:
        scribble_mapping = default_scribble_mapping(num_classes, int(options.get("scribble_unannotated", num_classes + 1)))
    if "label_mapping" in options:
        label_mapping = parse_value_mapping(options["label_mapping"], "label_mapping")
    else:
        label_mapping = identity_mapping(num_classes)
    _check_targets(scribble_mapping, num_classes, "scribble_mapping", allow_ignore=True)
    _check_targets(label_mapping, num_classes, "label_mapping", allow_ignore=False)

    subject_pattern = _compile(options.get("subject_pattern"), "subject_pattern")
    frame_pattern = _compile(options.get("frame_pattern"), "frame_pattern")
    names = {p.case_id: (_extract(subject_pattern, p, "subject_pattern") or p.case_id, _extract(frame_pattern, p, "frame_pattern")) for p in pairs}

    def cases() -> Iterator[CanonicalCase]:
        for paths in pairs:
            subject, frame = names[paths.case_id]
            yield load_nifti_case(paths, subject, frame, scribble_mapping, label_mapping)

    return ReaderResult(
        cases=cases(),
        unmatched=pairing.unmatched,
        label_mapping={"scribble": mapping_for_json(scribble_mapping), "label": mapping_for_json(label_mapping)},
        notes=f"{reader} reader: case id = file name without its suffix ({suffixes}).",
        num_cases=len(pairs),
    )


def _collect(folders: dict[str, Path], suffixes: dict[str, str], recursive: bool) -> dict[str, dict[str, Path]]:
    """List each role's files by case id; a file goes to the role with the longest matching suffix."""
    files: dict[str, dict[str, Path]] = {role: {} for role in folders}
    for role, folder in folders.items():
        # Roles that scan this same folder compete for its files.
        rivals = [r for r, f in folders.items() if r != role and f.resolve() == folder.resolve()]
        candidates = folder.rglob("*") if recursive else folder.iterdir()
        for path in sorted(candidates):
            if not path.is_file() or is_hidden(path.relative_to(folder)):
                continue
            suffix = suffixes[role]
            if not path.name.endswith(suffix) or len(path.name) == len(suffix):
                continue
            if any(len(suffixes[r]) > len(suffix) and path.name.endswith(suffixes[r]) for r in rivals):
                continue
            case_id = path.name[: -len(suffix)]
            check_case_id(case_id, path)
            if case_id in files[role]:
                raise ValueError(f"two {role} for case {case_id!r}: {files[role][case_id]} and {path}; remove one")
            files[role][case_id] = path
    if not files["images"]:
        raise FileNotFoundError(
            f"no image files ending in {suffixes['images']!r} found in {folders['images']}; check the path and image_suffix"
        )
    return files


def _check_targets(mapping: dict[int, int], num_classes: int, option: str, allow_ignore: bool) -> None:
    allowed = set(range(num_classes + 1)) | ({255} if allow_ignore else set())
    bad = {k: v for k, v in mapping.items() if v not in allowed}
    if bad:
        raise ValueError(
            f"option {option!r}: canonical values {bad} are outside {sorted(allowed)} for {num_classes} classes; "
            "map every source value to 0 (background), 1..K" + (" or \"ignore\"" if allow_ignore else "")
        )


def _compile(pattern: str | None, option: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"option {option!r}: invalid regular expression {pattern!r}: {error}") from None
    if compiled.groups < 1:
        raise ValueError(f"option {option!r}: regular expression {pattern!r} needs one capturing group")
    return compiled


def _extract(pattern: re.Pattern[str] | None, paths: CasePaths, option: str) -> str:
    if pattern is None:
        return ""
    match = pattern.search(paths.case_id)
    if match is None:
        raise ValueError(
            f"{paths.image}: case id {paths.case_id!r} does not match {option} {pattern.pattern!r}; fix the file name or the option"
        )
    return match.group(1)
