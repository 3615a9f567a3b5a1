"""Train/val/test splits of a dataset's cases, written as ``splits.json``.

Three schemes build the folds from the manifest (``cases.tsv``):

- ``kfold``: subject-level k-fold cross-validation. Subjects with a dense label are shuffled
  (seeded) and dealt round-robin to the folds first, then the subjects without one, so that
  every fold gets labelled subjects to test. Optionally a few labelled training subjects of
  each fold move to validation.
- ``preset``: a published split from :mod:`helpnet.data.presets`, matched by subject number.
- ``file``: a ``splits.json`` written by hand, validated against the manifest.

Rules common to all schemes: the frames of one subject never end up on both sides of a fold,
train cases have scribbles, and val and test cases have dense labels. The output format is::

    {"scheme": "kfold" | "fixed", "seed": int | null, "num_folds": int, "source": str,
     "folds": [{"fold": 0, "train": [...], "val": [...], "test": [...]}, ...]}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from helpnet.data.cases import read_manifest
from helpnet.data.presets import PRESETS, VAL_IS_TEST, PresetFold, SplitPreset
from helpnet.io import write_json

logger = logging.getLogger(__name__)

SCHEMES = ("kfold", "preset", "file")
ROLES = ("train", "val", "test")

_NAMED_NUMBER = re.compile(r"(?:patient|subject|case)[_-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


# --- manifest rows -----------------------------------------------------------------------------


def _flag(row: Mapping[str, object], column: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no", ""}:
        return False
    raise ValueError(
        f"manifest row of case {row.get('case')!r}: column {column!r} is {value!r}, expected true or false; "
        "rerun the align stage to rewrite cases.tsv"
    )


class _Manifest:
    """Cases of a manifest indexed by case id and by subject."""

    def __init__(self, cases: Iterable[Mapping[str, object]]):
        self.subject_of: dict[str, str] = {}
        self.has_scribble: dict[str, bool] = {}
        self.has_label: dict[str, bool] = {}
        self.cases_of: dict[str, list[str]] = {}
        for row in cases:
            for column in ("case", "subject"):
                if not str(row.get(column) or "").strip():
                    raise ValueError(
                        f"manifest row {dict(row)!r} has no {column!r}; rerun the align stage to rewrite cases.tsv"
                    )
            case, subject = str(row["case"]), str(row["subject"])
            if case in self.subject_of:
                raise ValueError(f"case {case!r} appears twice in the manifest; rerun the align stage")
            self.subject_of[case] = subject
            self.has_scribble[case] = _flag(row, "has_scribble")
            self.has_label[case] = _flag(row, "has_label")
            self.cases_of.setdefault(subject, []).append(case)
        if not self.subject_of:
            raise ValueError("the manifest has no cases; run the align stage on a dataset with images first")
        for case_ids in self.cases_of.values():
            case_ids.sort()

    @property
    def subjects(self) -> list[str]:
        return sorted(self.cases_of)

    def labelled_subjects(self, subjects: Iterable[str]) -> list[str]:
        return sorted(s for s in subjects if any(self.has_label[c] for c in self.cases_of[s]))

    def train_cases(self, subjects: Iterable[str]) -> list[str]:
        return sorted(c for s in subjects for c in self.cases_of[s] if self.has_scribble[c])

    def labelled_cases(self, subjects: Iterable[str]) -> list[str]:
        return sorted(c for s in subjects for c in self.cases_of[s] if self.has_label[c])


def _draw_validation(
    manifest: _Manifest, train_subjects: list[str], count: int, rng: np.random.Generator, where: str
) -> list[str]:
    """Pick ``count`` labelled subjects from ``train_subjects`` for validation."""
    if count < 0:
        raise ValueError(f"validation_subjects must be 0 or more, got {count}")
    if count == 0:
        return []
    candidates = manifest.labelled_subjects(train_subjects)
    if len(candidates) < count:
        raise ValueError(
            f"{where}: validation_subjects is {count} but only {len(candidates)} training subjects have a dense "
            f"label; lower --validation-subjects to {len(candidates)} or fewer"
        )
    chosen = rng.choice(len(candidates), size=count, replace=False)
    return sorted(candidates[i] for i in chosen)


def _fold(
    manifest: _Manifest, index: int, train: Iterable[str], val: Iterable[str], test: Iterable[str]
) -> dict[str, object]:
    """Build one fold entry from subject lists: scribbled cases train, labelled cases validate and test."""
    return {
        "fold": index,
        "train": manifest.train_cases(train),
        "val": manifest.labelled_cases(val),
        "test": manifest.labelled_cases(test),
    }


# --- k-fold ------------------------------------------------------------------------------------


def kfold_splits(
    cases: Sequence[Mapping[str, object]], num_folds: int, seed: int, validation_subjects: int = 0
) -> dict[str, object]:
    """Build subject-level k-fold splits of manifest rows.

    Each subject is tested in exactly one fold; only its labelled cases are tested. The result
    depends on the seed and on the set of rows, not on their order. Raises ValueError when there
    are fewer subjects, or fewer labelled subjects, than folds.
    """
    manifest = _Manifest(cases)
    subjects = manifest.subjects
    if num_folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {num_folds}; use --folds 2 or more")
    if num_folds > len(subjects):
        raise ValueError(
            f"cannot make {num_folds} folds from {len(subjects)} subjects: every fold needs at least one test "
            f"subject; use --folds {len(subjects)} or fewer"
        )
    labelled = manifest.labelled_subjects(subjects)
    if len(labelled) < num_folds:
        raise ValueError(
            f"cannot make {num_folds} folds: only {len(labelled)} of {len(subjects)} subjects have a dense label "
            f"to test; use --folds {len(labelled)} or fewer"
        )

    rng = np.random.default_rng(seed)
    unlabelled = [s for s in subjects if s not in set(labelled)]
    # Labelled subjects are dealt first so that each fold gets its share of them to test.
    order = [labelled[i] for i in rng.permutation(len(labelled))]
    order += [unlabelled[i] for i in rng.permutation(len(unlabelled))]
    test_subjects: list[list[str]] = [[] for _ in range(num_folds)]
    for position, subject in enumerate(order):
        test_subjects[position % num_folds].append(subject)

    folds = []
    for index, test in enumerate(test_subjects):
        rest = [s for s in subjects if s not in set(test)]
        val = _draw_validation(
            manifest, rest, validation_subjects, np.random.default_rng([seed, index]), f"fold {index}"
        )
        train = [s for s in rest if s not in set(val)]
        fold = _fold(manifest, index, train, val, test)
        if not fold["train"]:
            raise ValueError(
                f"fold {index} has no training case with scribbles: its training subjects {train} have none; "
                "provide scribbles for more subjects or use fewer --validation-subjects"
            )
        folds.append(fold)

    return {
        "scheme": "kfold",
        "seed": int(seed),
        "num_folds": num_folds,
        "source": f"kfold over {len(subjects)} subjects, seed {seed}, {validation_subjects} validation subject(s) per fold",
        "folds": folds,
    }


# --- presets -----------------------------------------------------------------------------------


def subject_number(subject: str) -> int:
    """Return the number in a subject id: ``patient005`` -> 5, ``subject12`` -> 12, ``7`` -> 7.

    A number after ``patient``, ``subject`` or ``case`` wins; otherwise the id must contain
    exactly one number. Raises ValueError for ids without an unambiguous number.
    """
    named = _NAMED_NUMBER.search(subject)
    if named:
        return int(named.group(1))
    numbers = _NUMBER.findall(subject)
    if len(numbers) == 1:
        return int(numbers[0])
    raise ValueError(
        f"subject id {subject!r} has no unambiguous subject number, which split presets need to match it; "
        "use --scheme kfold or --scheme file for this dataset"
    )


def preset_splits(
    cases: Sequence[Mapping[str, object]], name: str, validation_subjects: int = 0, seed: int = 42
) -> dict[str, object]:
    """Build the folds of the preset ``name``, restricted to the cases in the manifest.

    Preset subjects missing from the manifest are skipped and counted in the log. Validation
    subjects are drawn (seeded by ``seed``) only for presets whose folds define no validation
    set. Raises ValueError for an unknown preset or a fold left without test or train cases.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown split preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    manifest = _Manifest(cases)

    by_number: dict[int, str] = {}
    for subject in manifest.subjects:
        number = subject_number(subject)
        if number in by_number:
            raise ValueError(
                f"preset {name!r}: subjects {by_number[number]!r} and {subject!r} share the number {number}, so the "
                "preset cannot tell them apart; use --scheme file with case ids"
            )
        by_number[number] = subject

    covered = set(preset.subjects) if preset.subjects is not None else set(by_number)
    ignored = sorted(by_number[n] for n in by_number if n not in covered)
    if ignored:
        logger.info("preset %s: %d manifest subject(s) are outside the preset and are not used: %s", name, len(ignored), ignored)
    listed = _preset_numbers(preset)
    absent = sorted(n for n in listed if n not in by_number)
    if absent:
        logger.warning(
            "preset %s: %d of the %d subjects it lists are not in the manifest and are skipped: %s",
            name, len(absent), len(listed), absent,
        )
    if preset.note:
        logger.warning("preset %s: %s", name, preset.note)

    folds = []
    for index, preset_fold in enumerate(preset.folds):
        folds.append(_preset_fold(manifest, preset, index, preset_fold, by_number, covered, validation_subjects, seed))

    return {
        "scheme": "fixed",
        "seed": int(seed) if validation_subjects else None,
        "num_folds": len(folds),
        "source": f"preset {name}: {preset.description}",
        "folds": folds,
    }


def _preset_numbers(preset: SplitPreset) -> set[int]:
    numbers: set[int] = set(preset.subjects or ())
    for fold in preset.folds:
        numbers.update(fold.test)
        numbers.update(fold.train or ())
        if fold.val != VAL_IS_TEST:
            numbers.update(fold.val)
    return numbers


def _preset_fold(
    manifest: _Manifest,
    preset: SplitPreset,
    index: int,
    preset_fold: PresetFold,
    by_number: dict[int, str],
    covered: set[int],
    validation_subjects: int,
    seed: int,
) -> dict[str, object]:
    def present(numbers: Iterable[int]) -> list[str]:
        return sorted(by_number[n] for n in numbers if n in by_number and n in covered)

    test = present(preset_fold.test)
    if preset_fold.val == VAL_IS_TEST:
        val = list(test)
    else:
        val = present(preset_fold.val)
    if preset_fold.train is not None:
        train = present(preset_fold.train)
    else:
        excluded = set(test) | set(val)
        train = [s for s in present(covered) if s not in excluded]

    if validation_subjects:
        if preset_fold.val:
            raise ValueError(
                f"preset {preset.name!r} defines its own validation set, so validation_subjects must be 0 "
                f"(got {validation_subjects}); drop --validation-subjects"
            )
        val = _draw_validation(
            manifest, train, validation_subjects, np.random.default_rng([seed, index]), f"preset {preset.name} fold {index}"
        )
        train = [s for s in train if s not in set(val)]

    fold = _fold(manifest, index, train, val, test)
    _log_dropped(manifest, preset.name, index, train, val, test, fold)
    if not fold["test"]:
        raise ValueError(
            f"preset {preset.name!r}, fold {index}: none of its test subjects {sorted(preset_fold.test)} is in the "
            "manifest with a dense label; check that the manifest comes from the dataset the preset was made for, "
            "or use --scheme kfold"
        )
    if not fold["train"]:
        raise ValueError(
            f"preset {preset.name!r}, fold {index}: no training subject in the manifest has scribbles; check that "
            "the dataset's scribble source is configured, or use --scheme file"
        )
    return fold


def _log_dropped(
    manifest: _Manifest,
    name: str,
    index: int,
    train: list[str],
    val: list[str],
    test: list[str],
    fold: Mapping[str, list[str]],
) -> None:
    unscribbled = len([c for s in train for c in manifest.cases_of[s]]) - len(fold["train"])
    unlabelled = len([c for s in set(val) | set(test) for c in manifest.cases_of[s]]) - len(
        set(fold["val"]) | set(fold["test"])
    )
    if unscribbled:
        logger.info("preset %s fold %d: %d training case(s) without scribbles are left out", name, index, unscribbled)
    if unlabelled:
        logger.info("preset %s fold %d: %d val/test case(s) without a dense label are left out", name, index, unlabelled)


# --- split files -------------------------------------------------------------------------------


def file_splits(cases: Sequence[Mapping[str, object]], path: str | os.PathLike) -> dict[str, object]:
    """Load a hand-written ``splits.json`` and validate it against the manifest rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; check --split-file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"split file {path} is not valid JSON: {error}") from None
    splits = normalise_splits(data, str(path))
    validate_against_manifest(splits, cases, str(path))
    seed = data.get("seed")
    return {
        "scheme": "fixed",
        "seed": seed if isinstance(seed, int) else None,
        "num_folds": len(splits["folds"]),
        "source": f"file {path}",
        "folds": splits["folds"],
    }


def normalise_splits(data: object, where: str) -> dict[str, object]:
    """Check the structure of a splits mapping and return it with sorted case lists.

    ``fold`` may be omitted (folds are numbered in order) and ``val`` may be omitted (empty).
    Raises ValueError naming ``where`` and the offending entry.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("folds"), list) or not data["folds"]:
        raise ValueError(
            f"{where}: expected a JSON object with a non-empty list \"folds\" of "
            "{\"fold\": 0, \"train\": [...], \"val\": [...], \"test\": [...]}"
        )
    folds = []
    for index, fold in enumerate(data["folds"]):
        if not isinstance(fold, Mapping):
            raise ValueError(f"{where}: folds[{index}] must be an object with train, val and test lists, got {fold!r}")
        if fold.get("fold", index) != index:
            raise ValueError(
                f"{where}: folds[{index}] has \"fold\": {fold.get('fold')!r}; folds must be numbered 0, 1, ... in order"
            )
        unknown = sorted(set(fold) - {"fold", *ROLES})
        if unknown:
            raise ValueError(f"{where}: fold {index} has unknown key(s) {unknown}; allowed are fold, train, val, test")
        entry: dict[str, object] = {"fold": index}
        for role in ROLES:
            ids = fold.get(role, [] if role == "val" else None)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"{where}: fold {index}: {role!r} must be a list of case id strings, got {ids!r}")
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"{where}: fold {index}: {role} lists case(s) {duplicates} more than once")
            entry[role] = sorted(ids)
        folds.append(entry)
    return {**data, "folds": folds}


def validate_against_manifest(splits: Mapping[str, object], cases: Sequence[Mapping[str, object]], where: str) -> None:
    """Raise ValueError unless every fold of ``splits`` fits the manifest rows.

    Checks: every case id is in the manifest, train cases have scribbles, val and test cases
    have dense labels, each fold has train and test cases, and no subject is both trained on
    and tested in one fold.
    """
    manifest = _Manifest(cases)
    for fold in splits["folds"]:  # type: ignore[union-attr]
        index = fold["fold"]
        unknown = sorted(c for role in ROLES for c in fold[role] if c not in manifest.subject_of)
        if unknown:
            raise ValueError(
                f"{where}: fold {index} names case id(s) not in the manifest: {unknown}; fix the ids or rerun align"
            )
        unscribbled = [c for c in fold["train"] if not manifest.has_scribble[c]]
        if unscribbled:
            raise ValueError(
                f"{where}: fold {index}: training case(s) {unscribbled} have no scribble; remove them from train"
            )
        for role in ("val", "test"):
            unlabelled = [c for c in fold[role] if not manifest.has_label[c]]
            if unlabelled:
                raise ValueError(
                    f"{where}: fold {index}: {role} case(s) {unlabelled} have no dense label; remove them from {role}"
                )
        for role in ("train", "test"):
            if not fold[role]:
                raise ValueError(f"{where}: fold {index} has an empty {role} list; every fold needs train and test cases")
        leaked = sorted({manifest.subject_of[c] for c in fold["train"]} & {manifest.subject_of[c] for c in fold["test"]})
        if leaked:
            raise ValueError(
                f"{where}: fold {index}: subject(s) {leaked} have cases in both train and test; keep all cases "
                "of a subject on one side"
            )


def read_splits(path: str | os.PathLike, cases: Sequence[Mapping[str, object]] | None = None) -> dict[str, object]:
    """Load ``splits.json``, check its structure and, given manifest rows, check it against them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file {path} not found; run `helpnet split` first")
    data = normalise_splits(json.loads(path.read_text(encoding="utf-8")), str(path))
    if cases is not None:
        validate_against_manifest(data, cases, str(path))
    return data


def write_splits(path: str | os.PathLike, splits: Mapping[str, object]) -> None:
    """Write ``splits`` to ``path`` atomically after checking its structure."""
    normalise_splits(splits, str(path))
    write_json(path, dict(splits))


# --- config and CLI ----------------------------------------------------------------------------


def make_splits(cases: Sequence[Mapping[str, object]], spec: Mapping[str, object]) -> dict[str, object]:
    """Build splits from a config ``split`` mapping.

    Accepted forms: ``{scheme: kfold, folds, seed, validation_subjects}``,
    ``{scheme: preset, name, validation_subjects, seed}`` and ``{scheme: file, path}``.
    """
    allowed = {
        "kfold": {"scheme", "folds", "seed", "validation_subjects"},
        "preset": {"scheme", "name", "validation_subjects", "seed"},
        "file": {"scheme", "path"},
    }
    scheme = spec.get("scheme")
    if scheme not in allowed:
        raise ValueError(f"split scheme {scheme!r} is invalid; use one of {', '.join(SCHEMES)}")
    unknown = sorted(set(spec) - allowed[scheme])
    if unknown:
        raise ValueError(f"split scheme {scheme}: unknown key(s) {unknown}; allowed keys are {sorted(allowed[scheme])}")

    if scheme == "kfold":
        return kfold_splits(
            cases, int(spec.get("folds", 5)), int(spec.get("seed", 42)), int(spec.get("validation_subjects", 0))
        )
    if scheme == "preset":
        if not spec.get("name"):
            raise ValueError(f"split scheme preset needs a name; known presets: {', '.join(sorted(PRESETS))}")
        return preset_splits(
            cases, str(spec["name"]), int(spec.get("validation_subjects", 0)), int(spec.get("seed", 42))
        )
    if not spec.get("path"):
        raise ValueError("split scheme file needs a path to a splits.json file")
    return file_splits(cases, str(spec["path"]))


def _run_split(args: argparse.Namespace) -> int:
    cases = read_manifest(args.manifest)
    if args.scheme == "kfold":
        spec: dict[str, object] = {
            "scheme": "kfold", "folds": args.folds, "seed": args.seed, "validation_subjects": args.validation_subjects,
        }
    elif args.scheme == "preset":
        if not args.preset:
            raise ValueError(f"--scheme preset needs --preset NAME; known presets: {', '.join(sorted(PRESETS))}")
        spec = {"scheme": "preset", "name": args.preset, "validation_subjects": args.validation_subjects, "seed": args.seed}
    else:
        if not args.split_file:
            raise ValueError("--scheme file needs --split-file PATH (a splits.json to validate and copy)")
        spec = {"scheme": "file", "path": args.split_file}

    splits = make_splits(cases, spec)
    write_splits(args.output, splits)
    for fold in splits["folds"]:  # type: ignore[union-attr]
        logger.info(
            "fold %d: %d train, %d val, %d test cases", fold["fold"], len(fold["train"]), len(fold["val"]), len(fold["test"])
        )
    logger.info("wrote %s (%s)", args.output, splits["source"])
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``split`` subcommand."""
    parser = subparsers.add_parser(
        "split",
        help="write the train/val/test folds of a dataset (splits.json)",
        description="Build subject-level folds from cases.tsv by k-fold cross-validation, a published "
        "preset or a hand-written split file.",
    )
    parser.add_argument("--manifest", required=True, type=Path, help="cases.tsv written by helpnet align")
    parser.add_argument("--output", required=True, type=Path, help="splits.json to write")
    parser.add_argument("--scheme", required=True, choices=SCHEMES, help="how to build the folds")
    parser.add_argument("--folds", type=int, default=5, help="number of folds for kfold (default: 5)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the subject shuffle and validation draw (default: 42)")
    parser.add_argument(
        "--validation-subjects", type=int, default=0,
        help="labelled training subjects per fold to move to validation (default: 0)",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="preset name for --scheme preset")
    parser.add_argument("--split-file", type=Path, help="splits.json to validate for --scheme file")
    parser.set_defaults(func=_run_split)
