"""The reader interface and the input checks that every dataset reader shares.

A reader turns one public dataset layout into :class:`~helpnet.data.cases.CanonicalCase` objects.
It is a function ``read(sources, options, classes) -> ReaderResult``:

- ``sources`` maps a source name (as in the config's ``sources``) to a local path;
- ``options`` is the config's ``reader_options`` (JSON values; mapping keys may be strings);
- ``classes`` lists the K foreground class names, canonical values 1..K.

Pairing is by case id, never by position in a sorted list, so one missing file cannot shift
every later pair. Scribbles and labels are aligned to the image in voxel space, so shapes and
zooms must be equal. Affines may differ, because several public releases store a different
affine for the scribble or the label than for the image.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from helpnet.data.cases import IGNORE_INDEX, CanonicalCase

logger = logging.getLogger(__name__)

UNMATCHED_KEYS = ("images_without_scribble", "scribbles_without_image", "labels_without_image")
"""Keys of :attr:`ReaderResult.unmatched`, in the order they are reported."""

POLICY_OPTIONS = ("allow_extra_scribbles", "allow_unscribbled_labelled", "allow_extra_labels")
"""Reader options, shared by every reader, that turn an unmatched file from an error into a report entry."""

ZOOM_RTOL = 1e-3
"""Relative tolerance when comparing the zooms of two headers of one case."""

_HIDDEN_PREFIXES = ("._", ".")
_CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class ReaderResult:
    """Output of a reader: the cases plus what it could not pair."""

    cases: Iterable[CanonicalCase]
    """Canonical cases; a generator is fine, so that only one case is in memory at a time."""
    unmatched: dict[str, list[str]]
    """Files left unpaired, under the keys of :data:`UNMATCHED_KEYS` (file paths as strings)."""
    label_mapping: dict
    """Source value -> canonical value per role (``scribble``, ``label``), written to dataset.json."""
    notes: str = ""
    """Free text about the source (preprocessing already applied, guessed fields), for dataset.json."""
    num_cases: int | None = None
    """Number of cases ``cases`` yields, when known up front (progress bar total)."""


ReaderFn = Callable[[dict[str, Path], dict, list[str]], ReaderResult]


class UnmatchedFilesError(ValueError):
    """Unmatched files that the reader options do not allow; ``unmatched`` lists every one of them."""

    def __init__(self, message: str, unmatched: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.unmatched = unmatched


@dataclass
class CasePaths:
    """The files of one case after pairing by case id."""

    case_id: str
    image: Path
    scribble: Path | None = None
    label: Path | None = None


@dataclass
class Pairing:
    """Result of :func:`pair_by_case_id`."""

    pairs: list[CasePaths]
    """One entry per image, sorted by case id; ``scribble``/``label`` are None where missing."""
    unmatched: dict[str, list[str]] = field(default_factory=dict)


# --- options -----------------------------------------------------------------------------------


def check_options(options: Mapping | None, known: Iterable[str], reader: str) -> dict:
    """Return ``options`` as a dict; raise ValueError on a key that ``reader`` does not know."""
    options = dict(options or {})
    allowed = set(known) | set(POLICY_OPTIONS)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"reader {reader!r}: unknown reader option(s) {unknown}; valid options are {sorted(allowed)}"
        )
    return options


def require_sources(sources: Mapping[str, Path], required: Iterable[str], optional: Iterable[str], reader: str) -> dict[str, Path]:
    """Check source names and that each path exists; return them as ``Path`` objects."""
    required = list(required)
    allowed = set(required) | set(optional)
    missing = [name for name in required if name not in sources]
    if missing:
        raise ValueError(
            f"reader {reader!r}: missing source(s) {missing}; pass them as --source NAME=PATH "
            f"(required: {required}, optional: {sorted(set(optional))})"
        )
    unknown = sorted(set(sources) - allowed)
    if unknown:
        raise ValueError(f"reader {reader!r}: unknown source(s) {unknown}; valid sources are {sorted(allowed)}")
    paths = {name: Path(path) for name, path in sources.items()}
    for name, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"reader {reader!r}: source {name!r} not found at {path}; check the path")
    return paths


def parse_value_mapping(mapping: Mapping, option: str) -> dict[int, int]:
    """Parse a JSON value mapping (keys may be strings) into ``{int: int}``.

    A canonical value may be written as ``"ignore"`` for the canonical ignore value (255).
    """
    parsed: dict[int, int] = {}
    for key, value in mapping.items():
        try:
            source = int(key)
            target = IGNORE_INDEX if value in ("ignore", "unannotated") else int(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"option {option!r}: invalid entry {key!r}: {value!r}; use integer source values mapped to "
                f"integers or to \"ignore\", e.g. {{\"0\": 0, \"1\": 1, \"4\": \"ignore\"}}"
            ) from None
        if not 0 <= target <= 255:
            raise ValueError(f"option {option!r}: canonical value {target} for source value {source} is outside 0..255")
        parsed[source] = target
    return parsed


def mapping_for_json(mapping: Mapping[int, int]) -> dict[str, int]:
    """Return ``mapping`` with string keys, sorted by source value, as stored in dataset.json."""
    return {str(k): int(v) for k, v in sorted(mapping.items())}


def check_class_count(classes: list[str], expected: int, reader: str, names: str) -> None:
    """Raise ValueError unless ``classes`` has the ``expected`` number of entries."""
    if len(classes) != expected:
        raise ValueError(
            f"reader {reader!r}: the dataset has {expected} classes ({names}) but --classes gives "
            f"{len(classes)}: {classes}; pass {expected} class names in the order of the canonical values 1..{expected}"
        )


# --- file discovery ----------------------------------------------------------------------------


def is_hidden(path: Path) -> bool:
    """True for macOS AppleDouble files (``._*``), dot files and anything under ``__MACOSX``."""
    return path.name.startswith(_HIDDEN_PREFIXES) or "__MACOSX" in path.parts


def find_files(root: Path, pattern: re.Pattern[str], recursive: bool = True) -> dict[str, Path]:
    """Map ``pattern``'s first group to the file under ``root`` whose name fully matches.

    Hidden and ``__MACOSX`` entries are skipped. Two files that yield the same key raise
    ValueError, because pairing would otherwise depend on directory order.
    """
    found: dict[str, Path] = {}
    candidates = root.rglob("*") if recursive else root.iterdir()
    for path in sorted(candidates):
        if is_hidden(path.relative_to(root)) or not path.is_file():
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        key = match.group(1)
        if key in found:
            raise ValueError(
                f"two files for case {key!r}: {found[key]} and {path}; remove one of them from {root}"
            )
        found[key] = path
    return found


def check_case_id(case_id: str, file: Path | str) -> None:
    """Raise ValueError unless ``case_id`` is usable as a directory name and in a TSV cell."""
    if not _CASE_ID_PATTERN.fullmatch(case_id):
        raise ValueError(
            f"{file}: case id {case_id!r} is invalid; case ids may contain only letters, digits, '.', '_' and '-' "
            "(rename the file or adjust the suffix options)"
        )


def pair_by_case_id(
    images: Mapping[str, Path],
    scribbles: Mapping[str, Path],
    labels: Mapping[str, Path] | None = None,
) -> Pairing:
    """Pair files by case id and list what is left over.

    Every image gives one :class:`CasePaths`; its scribble and label are looked up by the same
    id. Scribbles and labels without an image, and images without a scribble, go into
    ``unmatched``. Whether those are acceptable is decided by :func:`enforce_unmatched_policy`.
    """
    labels = labels or {}
    pairs = [
        CasePaths(case_id, Path(images[case_id]), _opt_path(scribbles.get(case_id)), _opt_path(labels.get(case_id)))
        for case_id in sorted(images)
    ]
    unmatched = {
        "images_without_scribble": [str(images[c]) for c in sorted(images) if c not in scribbles],
        "scribbles_without_image": [str(scribbles[c]) for c in sorted(scribbles) if c not in images],
        "labels_without_image": [str(labels[c]) for c in sorted(labels) if c not in images],
    }
    return Pairing(pairs, unmatched)


def _opt_path(path: Path | str | None) -> Path | None:
    return None if path is None else Path(path)


def enforce_unmatched_policy(pairing: Pairing, options: Mapping) -> list[CasePaths]:
    """Raise ValueError on unmatched files that ``options`` do not allow; return the usable pairs.

    - an image without a scribble is kept as an evaluation-only case when it has a dense label
      and ``allow_unscribbled_labelled`` is true; an image with neither is always an error;
    - scribbles without an image are allowed by ``allow_extra_scribbles``;
    - labels without an image are allowed by ``allow_extra_labels``.
    """
    problems: list[str] = []
    unscribbled = [p for p in pairing.pairs if p.scribble is None]
    bare = [str(p.image) for p in unscribbled if p.label is None]
    labelled_only = [str(p.image) for p in unscribbled if p.label is not None]
    if bare:
        problems.append(
            f"{len(bare)} image(s) have neither a scribble nor a label: {_preview(bare)}; "
            "add the missing scribbles or remove these images from the source"
        )
    if labelled_only and not options.get("allow_unscribbled_labelled", False):
        problems.append(
            f"{len(labelled_only)} image(s) have a label but no scribble: {_preview(labelled_only)}; add the "
            "scribbles, or set reader option allow_unscribbled_labelled: true to keep them as evaluation-only cases"
        )
    extra_scribbles = pairing.unmatched.get("scribbles_without_image", [])
    if extra_scribbles and not options.get("allow_extra_scribbles", False):
        problems.append(
            f"{len(extra_scribbles)} scribble(s) have no image: {_preview(extra_scribbles)}; add the images, or set "
            "reader option allow_extra_scribbles: true to ignore them"
        )
    extra_labels = pairing.unmatched.get("labels_without_image", [])
    if extra_labels and not options.get("allow_extra_labels", False):
        problems.append(
            f"{len(extra_labels)} label(s) have no image: {_preview(extra_labels)}; add the images, or set "
            "reader option allow_extra_labels: true to ignore them"
        )
    if problems:
        raise UnmatchedFilesError("unmatched files: " + " | ".join(problems), pairing.unmatched)
    for key in UNMATCHED_KEYS:
        if pairing.unmatched.get(key):
            logger.info("%d %s (listed in alignment_report.json)", len(pairing.unmatched[key]), key.replace("_", " "))
    return [p for p in pairing.pairs if p.scribble is not None or p.label is not None]


def _preview(items: list[str], limit: int = 20) -> str:
    listed = ", ".join(items[:limit])
    return listed if len(items) <= limit else f"{listed}, ... ({len(items) - limit} more)"


# --- array checks ------------------------------------------------------------------------------


def load_volume(path: Path) -> tuple[np.ndarray, nib.Nifti1Header, np.ndarray]:
    """Load a 3D NIfTI with nibabel's scaling applied; return (array, header copy, affine)."""
    image = nib.load(str(path))
    if len(image.shape) != 3:
        raise ValueError(f"{path}: expected a 3D volume, found shape {image.shape}; pass single-frame 3D files")
    # dataobj applies scl_slope/scl_inter and keeps integer dtypes when there is no scaling.
    array = np.asanyarray(image.dataobj)
    return array, image.header.copy(), image.affine.copy()


def image_header(header: nib.Nifti1Header) -> nib.Nifti1Header:
    """Return a copy of a source image header fit for the float32 canonical image.

    Affine, orientation codes and zooms are kept; the scaling is dropped because the array is
    stored already scaled.
    """
    header = header.copy()
    header.set_slope_inter(None, None)
    header.set_data_dtype(np.float32)
    return header


def remap_values(array: np.ndarray, mapping: Mapping[int, int], file: Path | str, role: str) -> np.ndarray:
    """Map source values to canonical values and return a uint8 array.

    Raises ValueError naming the file when a value is not integral or not a key of ``mapping``.
    """
    array = np.asarray(array)
    if array.dtype.kind == "f":
        fractional = array != np.round(array)
        if fractional.any():
            example = array[fractional].flat[0]
            raise ValueError(
                f"{file}: {role} contains non-integral value {float(example):.10g}; {role} files must hold integer "
                f"class values (expected {sorted(mapping)}); check that the file is a {role} and not an image"
            )
    if array.dtype.kind not in "uif":
        raise ValueError(f"{file}: {role} has unsupported dtype {array.dtype}; store it as an integer NIfTI")
    values = array.astype(np.int64, copy=False)
    present = np.unique(values)
    invalid = [int(v) for v in present if int(v) not in mapping]
    if invalid:
        raise ValueError(
            f"{file}: {role} contains value {invalid[0]} outside the declared set {sorted(mapping)} "
            f"(all invalid values: {invalid[:10]}); fix the file or declare the {role} encoding it uses"
        )
    lookup_offset = int(present.min()) if present.size else 0
    lookup = np.zeros(int(present.max()) - lookup_offset + 1 if present.size else 1, dtype=np.uint8)
    for value in present:
        lookup[int(value) - lookup_offset] = mapping[int(value)]
    return lookup[values - lookup_offset]


def check_same_shape(image_file: Path | str, other_file: Path | str, image_shape: tuple, other_shape: tuple, role: str) -> None:
    """Raise ValueError unless a scribble or label has the image's array shape."""
    if tuple(image_shape) != tuple(other_shape):
        raise ValueError(
            f"{other_file}: {role} shape {tuple(other_shape)} differs from image shape {tuple(image_shape)} of "
            f"{image_file}; the {role} must be on the image's voxel grid (same array shape and axis order)"
        )


def _in_plane_zooms(header: nib.Nifti1Header) -> tuple[float, float]:
    zooms = header.get_zooms()
    return float(zooms[0]), float(zooms[1])


def _close(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=ZOOM_RTOL, atol=0.0))


def check_swapped_axes(
    image_file: Path | str,
    image_header: nib.Nifti1Header,
    other_file: Path | str,
    other_header: nib.Nifti1Header | None,
    shape: tuple,
    role: str,
    scribble: np.ndarray | None = None,
    label: np.ndarray | None = None,
    label_file: Path | str | None = None,
) -> None:
    """Detect a scribble or label whose in-plane axes are swapped relative to the image.

    Only square in-plane grids need this, because elsewhere a transposed array fails the shape
    check. Two detections:

    - header: the other file's in-plane zooms are the image's (px, py) swapped, with px != py;
    - content: when both a canonical scribble and a label are given, the scribble agrees much
      better with the transposed label than with the label itself.
    """
    if shape[0] != shape[1]:
        return
    if other_header is not None:
        px, py = _in_plane_zooms(image_header)
        qx, qy = _in_plane_zooms(other_header)
        if not _close(px, py) and _close(px, qy) and _close(py, qx):
            raise ValueError(
                f"{other_file}: in-plane axes swapped relative to {image_file}: {role} zooms ({qx:g}, {qy:g}) are the "
                f"image zooms ({px:g}, {py:g}) in reverse order; transpose the first two array axes of the {role}"
            )
    if scribble is not None and label is not None:
        direct, swapped, foreground = transpose_disagreement(scribble, label)
        if is_swapped(direct, swapped, foreground):
            raise ValueError(
                f"{other_file}: in-plane axes swapped: the foreground scribble disagrees with the label "
                f"{label_file or ''} on {direct} of {foreground} voxels but only on {swapped} after transposing the "
                f"label's first two axes; transpose the first two array axes of whichever of the two does not match "
                f"the image {image_file}"
            )


SWAP_MIN_FOREGROUND = 50
"""Foreground scribble voxels below which the content check does not decide (too little evidence)."""
SWAP_MIN_DISAGREEMENT = 0.02
"""Fraction of foreground scribble voxels that must disagree with the label before a swap is reported."""


def transpose_disagreement(scribble: np.ndarray, label: np.ndarray) -> tuple[int, int, int]:
    """Count foreground scribble voxels that disagree with the label, as is and transposed in-plane.

    Background strokes are left out because they mostly lie on background either way and would
    dilute the evidence. Returns (disagreeing voxels, disagreeing voxels against the transposed
    label, foreground scribble voxels).
    """
    foreground = (scribble != IGNORE_INDEX) & (scribble != 0)
    direct = int(np.count_nonzero(foreground & (scribble != label)))
    swapped = int(np.count_nonzero(foreground & (scribble != label.transpose(1, 0, 2))))
    return direct, swapped, int(np.count_nonzero(foreground))


def is_swapped(direct: int, swapped: int, foreground: int) -> bool:
    """Decide from :func:`transpose_disagreement` counts whether the in-plane axes look swapped."""
    if foreground < SWAP_MIN_FOREGROUND:
        return False
    # Aligned ACDC scribbles disagree on at most 1.3% of foreground voxels per volume, and their
    # transposes on 7-100% (square centre crops of 10 patients). A swap must therefore both
    # exceed a small floor and beat the transposed comparison by a wide margin.
    return direct > SWAP_MIN_DISAGREEMENT * foreground and swapped * 4 < direct


def check_same_grid(
    image_file: Path | str,
    image_header: nib.Nifti1Header,
    image_shape: tuple,
    image_affine: np.ndarray | None,
    other_file: Path | str,
    other_header: nib.Nifti1Header,
    other_shape: tuple,
    other_affine: np.ndarray | None,
    role: str,
) -> bool:
    """Check that a scribble or label NIfTI lies on the image's voxel grid.

    Shapes must be equal and zooms must agree within :data:`ZOOM_RTOL`; a swapped pair of
    in-plane zooms gets its own message. A differing affine is not an error, because the data
    are aligned in voxel space; the return value says whether the affines differ.
    """
    check_swapped_axes(image_file, image_header, other_file, other_header, tuple(image_shape), role)
    check_same_shape(image_file, other_file, image_shape, other_shape, role)
    image_zooms = [float(z) for z in image_header.get_zooms()[:3]]
    other_zooms = [float(z) for z in other_header.get_zooms()[:3]]
    if not all(_close(a, b) for a, b in zip(image_zooms, other_zooms)):
        raise ValueError(
            f"{other_file}: {role} voxel spacing {tuple(round(z, 6) for z in other_zooms)} mm differs from image "
            f"spacing {tuple(round(z, 6) for z in image_zooms)} mm of {image_file}; the {role} must be on the image's "
            "voxel grid"
        )
    differs = image_affine is not None and other_affine is not None and not np.allclose(image_affine, other_affine, atol=1e-3)
    if differs:
        logger.debug(
            "%s: affine differs from the image's (orientation %s vs %s); aligned in voxel space",
            other_file,
            "".join(nib.aff2axcodes(other_affine)),
            "".join(nib.aff2axcodes(image_affine)),
        )
    return bool(differs)


# --- building a case from NIfTI files ------------------------------------------------------------

AFFINE_DIFFERS_KEY = "affine_differs"
"""Key in ``CanonicalCase.sources`` listing the roles (comma-separated) whose affine differs from the image's."""

LabelMappingFn = Callable[[np.ndarray, Path], Mapping[int, int]]


def load_nifti_case(
    paths: CasePaths,
    subject: str,
    frame: str,
    scribble_mapping: Mapping[int, int],
    label_mapping: Mapping[int, int] | LabelMappingFn,
) -> CanonicalCase:
    """Load one case from NIfTI files and convert it to the canonical encoding.

    The image keeps its own header; the scribble and the label must lie on its voxel grid.
    ``label_mapping`` may be a function of (raw label array, file) for sources whose label
    encoding differs between files.
    """
    check_case_id(paths.case_id, paths.image)
    affine_differs: list[str] = []
    image, header, affine = load_volume(paths.image)
    case = CanonicalCase(
        case_id=paths.case_id,
        subject=subject,
        frame=frame,
        image=image.astype(np.float32, copy=False),
        header=image_header(header),
        sources={"image": str(paths.image)},
    )
    if paths.scribble is not None:
        raw, other_header, other_affine = load_volume(paths.scribble)
        if check_same_grid(paths.image, header, image.shape, affine, paths.scribble, other_header, raw.shape, other_affine, "scribble"):
            affine_differs.append("scribble")
        case.scribble = remap_values(raw, scribble_mapping, paths.scribble, "scribble")
        case.sources["scribble"] = str(paths.scribble)
    if paths.label is not None:
        raw, other_header, other_affine = load_volume(paths.label)
        if check_same_grid(paths.image, header, image.shape, affine, paths.label, other_header, raw.shape, other_affine, "label"):
            affine_differs.append("label")
        mapping = label_mapping(raw, paths.label) if callable(label_mapping) else label_mapping
        case.label = remap_values(raw, mapping, paths.label, "label")
        case.sources["label"] = str(paths.label)
    if affine_differs:
        case.sources[AFFINE_DIFFERS_KEY] = ",".join(affine_differs)
    if case.scribble is not None and case.label is not None:
        check_swapped_axes(
            paths.image,
            header,
            paths.scribble,
            None,
            image.shape,
            "scribble",
            scribble=case.scribble,
            label=case.label,
            label_file=paths.label,
        )
    return case


def default_scribble_mapping(num_classes: int, unannotated: int) -> dict[int, int]:
    """Identity for 0..K plus ``unannotated`` -> 255 (the ACDC and MSCMRseg scribble encoding when K = 3)."""
    mapping = {value: value for value in range(num_classes + 1)}
    if unannotated in mapping:
        raise ValueError(
            f"scribble value {unannotated} cannot mean 'unannotated' because it is class value {unannotated} of "
            f"0..{num_classes}; set scribble_unannotated to a value above {num_classes} (or 255)"
        )
    mapping[unannotated] = IGNORE_INDEX
    return mapping


def identity_mapping(num_classes: int) -> dict[int, int]:
    """Identity for 0..K, the dense label encoding of ACDC and the CycleMix copy of MSCMRseg."""
    return {value: value for value in range(num_classes + 1)}
