"""Tests of the fold splits: k-fold, presets and split files."""

from __future__ import annotations

import json
import logging
import random

import pytest

from helpnet.cli import main
from helpnet.data.cases import write_manifest
from helpnet.data.splits import (
    file_splits,
    kfold_splits,
    make_splits,
    preset_splits,
    read_splits,
    subject_number,
    write_splits,
)


def row(case: str, subject: str, scribble: bool = True, label: bool = True) -> dict[str, str]:
    return {
        "case": case,
        "subject": subject,
        "frame": case.rsplit("_", 1)[-1],
        "shape": "8x8x2",
        "spacing": "1.5x1.5x10",
        "has_scribble": "true" if scribble else "false",
        "has_label": "true" if label else "false",
        "image_source": "",
        "scribble_source": "",
        "label_source": "",
    }


def acdc_rows(patients=range(1, 11), scribble: bool = True, label: bool = True) -> list[dict[str, str]]:
    return [
        row(f"patient{p:03d}_{frame}", f"patient{p:03d}", scribble, label)
        for p in patients
        for frame in ("ED", "ES")
    ]


def subjects_of(case_ids) -> set[str]:
    return {c.rsplit("_", 1)[0] for c in case_ids}


def numbers_of(case_ids) -> set[int]:
    return {subject_number(s) for s in subjects_of(case_ids)}


# --- k-fold ------------------------------------------------------------------------------------


def test_kfold_keeps_frames_together():
    splits = kfold_splits(acdc_rows(), num_folds=5, seed=42)
    for fold in splits["folds"]:
        assert not subjects_of(fold["train"]) & subjects_of(fold["test"])
        for subject in subjects_of(fold["test"]):
            assert f"{subject}_ED" in fold["test"]
            assert f"{subject}_ES" in fold["test"]


def test_kfold_tests_each_subject_once():
    rows = acdc_rows()
    splits = kfold_splits(rows, num_folds=5, seed=42)
    tested = [s for fold in splits["folds"] for s in subjects_of(fold["test"])]
    assert sorted(tested) == sorted({r["subject"] for r in rows})
    for fold in splits["folds"]:
        assert len(fold["test"]) == 4
        assert len(fold["train"]) == 16
        assert fold["val"] == []
        assert sorted(fold["train"] + fold["test"]) == sorted(r["case"] for r in rows)


def test_kfold_header_fields():
    splits = kfold_splits(acdc_rows(), num_folds=5, seed=7)
    assert splits["scheme"] == "kfold"
    assert splits["seed"] == 7
    assert splits["num_folds"] == 5
    assert [f["fold"] for f in splits["folds"]] == [0, 1, 2, 3, 4]


def test_kfold_deterministic_and_seeded():
    rows = acdc_rows()
    assert kfold_splits(rows, 5, 42) == kfold_splits(rows, 5, 42)
    first = [sorted(subjects_of(f["test"])) for f in kfold_splits(rows, 5, 42)["folds"]]
    other = [sorted(subjects_of(f["test"])) for f in kfold_splits(rows, 5, 43)["folds"]]
    assert first != other


def test_kfold_independent_of_row_order():
    rows = acdc_rows()
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    assert kfold_splits(shuffled, 5, 42, validation_subjects=1) == kfold_splits(rows, 5, 42, validation_subjects=1)


def test_kfold_validation_subjects():
    splits = kfold_splits(acdc_rows(), num_folds=5, seed=42, validation_subjects=2)
    for fold in splits["folds"]:
        val = subjects_of(fold["val"])
        assert len(val) == 2
        assert len(fold["val"]) == 4
        assert not val & subjects_of(fold["test"])
        assert not val & subjects_of(fold["train"])
        assert len(fold["train"]) == 12


def test_kfold_unlabelled_and_unscribbled_subjects():
    rows = acdc_rows(range(1, 7)) + acdc_rows([7, 8], label=False) + acdc_rows([9, 10], scribble=False)
    splits = kfold_splits(rows, num_folds=3, seed=1)
    tested = [s for fold in splits["folds"] for s in subjects_of(fold["test"])]
    # Subjects 7 and 8 have no label and are never tested; 9 and 10 are tested once each.
    assert sorted(tested) == [f"patient{p:03d}" for p in (1, 2, 3, 4, 5, 6, 9, 10)]
    for fold in splits["folds"]:
        assert not {"patient009", "patient010"} & subjects_of(fold["train"])


def test_kfold_spreads_labelled_subjects():
    rows = acdc_rows(range(1, 6)) + acdc_rows(range(6, 11), label=False)
    splits = kfold_splits(rows, num_folds=5, seed=0)
    for fold in splits["folds"]:
        assert len(fold["test"]) == 2


def test_kfold_too_many_folds():
    with pytest.raises(ValueError, match=r"cannot make 5 folds from 3 subjects.*--folds 3 or fewer"):
        kfold_splits(acdc_rows(range(1, 4)), num_folds=5, seed=0)


def test_kfold_one_fold_rejected():
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_splits(acdc_rows(), num_folds=1, seed=0)


def test_kfold_too_few_labelled_subjects():
    rows = acdc_rows(range(1, 3)) + acdc_rows(range(3, 11), label=False)
    with pytest.raises(ValueError, match=r"only 2 of 10 subjects have a dense label.*--folds 2 or fewer"):
        kfold_splits(rows, num_folds=3, seed=0)


def test_kfold_too_many_validation_subjects():
    with pytest.raises(ValueError, match=r"validation_subjects is 5 but only 4"):
        kfold_splits(acdc_rows(range(1, 6)), num_folds=5, seed=0, validation_subjects=5)


def test_duplicate_case_rejected():
    rows = acdc_rows(range(1, 4)) + [row("patient001_ED", "patient001")]
    with pytest.raises(ValueError, match="patient001_ED"):
        kfold_splits(rows, num_folds=2, seed=0)


def test_bad_flag_rejected():
    rows = acdc_rows(range(1, 4))
    rows[0]["has_label"] = "maybe"
    with pytest.raises(ValueError, match="'maybe'"):
        kfold_splits(rows, num_folds=2, seed=0)


# --- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "number"),
    [("patient005", 5), ("subject12", 12), ("patient38", 38), ("t2_patient38", 38), ("7", 7), ("Case_010", 10)],
)
def test_subject_number(subject, number):
    assert subject_number(subject) == number


@pytest.mark.parametrize("subject", ["anonymous", "a1b2"])
def test_subject_number_ambiguous(subject):
    with pytest.raises(ValueError, match=subject):
        subject_number(subject)


CHAOS_FOLDS = [{5, 36, 13, 21}, {3, 33, 8, 37}, {15, 2, 32, 1}, {39, 38, 20, 34}, {19, 31, 22, 10}]
CHAOS_PATIENTS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def chaos_rows(patients=CHAOS_PATIENTS) -> list[dict[str, str]]:
    return [row(f"patient{p}_{m}", f"patient{p}") for p in patients for m in ("t1", "t2")]


def test_pacingpseudo_folds():
    splits = preset_splits(chaos_rows(), "pacingpseudo_chaos_5fold")
    assert splits["scheme"] == "fixed"
    assert splits["num_folds"] == 5
    for fold, expected in zip(splits["folds"], CHAOS_FOLDS):
        assert numbers_of(fold["test"]) == expected
        assert numbers_of(fold["train"]) == set(CHAOS_PATIENTS) - expected
        assert len(fold["test"]) == 8
        assert fold["val"] == []
    assert numbers_of(splits["folds"][2]["test"]) == {15, 2, 32, 1}


def test_pacingpseudo_ignores_other_patients():
    # Patients outside the 20 MR training patients of the preset neither train nor test.
    splits = preset_splits(chaos_rows(CHAOS_PATIENTS + [40]), "pacingpseudo_chaos_5fold")
    for fold in splits["folds"]:
        assert 40 not in numbers_of(fold["train"] + fold["test"])


def test_wsl4mis_folds_validate_on_test(caplog):
    with caplog.at_level(logging.WARNING, logger="helpnet.data.splits"):
        splits = preset_splits(acdc_rows(range(1, 101)), "wsl4mis_acdc_5fold")
    assert "optimistic" in caplog.text
    for k, fold in enumerate(splits["folds"]):
        expected = set(range(20 * k + 1, 20 * k + 21))
        assert numbers_of(fold["test"]) == expected
        assert fold["val"] == fold["test"]
        assert numbers_of(fold["train"]) == set(range(1, 101)) - expected
        assert len(fold["train"]) == 160
    assert numbers_of(splits["folds"][3]["test"]) == set(range(61, 81))


HELPNET_TEST = {5, 10, 24, 30, 36, 39, 41, 60, 64, 72, 73, 77, 78, 80, 82}


def test_helpnet_acdc_test_preset():
    splits = preset_splits(acdc_rows(range(1, 101)), "helpnet_acdc_test")
    (fold,) = splits["folds"]
    assert numbers_of(fold["test"]) == HELPNET_TEST
    assert len(fold["test"]) == 30
    assert numbers_of(fold["train"]) == set(range(1, 101)) - HELPNET_TEST
    assert fold["val"] == []
    assert splits["seed"] is None


def test_helpnet_acdc_test_with_validation():
    rows = acdc_rows(range(1, 101))
    splits = preset_splits(rows, "helpnet_acdc_test", validation_subjects=3, seed=42)
    (fold,) = splits["folds"]
    assert len(numbers_of(fold["val"])) == 3
    assert not numbers_of(fold["val"]) & HELPNET_TEST
    assert not numbers_of(fold["val"]) & numbers_of(fold["train"])
    assert len(fold["train"]) == 170 - 6
    assert splits == preset_splits(list(reversed(rows)), "helpnet_acdc_test", validation_subjects=3, seed=42)


MSCMR_TRAIN = {2, 4, 6, 7, 9, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25, 26, 27, 31, 32, 34, 37, 39, 42, 44, 45}
MSCMR_VAL = {1, 8, 29, 36, 41}
MSCMR_TEST = {3, 5, 10, 11, 12, 16, 17, 23, 28, 30, 33, 35, 38, 40, 43}


def mscmr_rows(subjects=range(1, 46)) -> list[dict[str, str]]:
    # As in the CycleMix copy: scribbles only for training subjects, labels only for the others.
    return [row(f"subject{n}", f"subject{n}", scribble=n in MSCMR_TRAIN, label=n not in MSCMR_TRAIN) for n in subjects]


def test_cyclemix_preset():
    splits = preset_splits(mscmr_rows(), "cyclemix_mscmr")
    (fold,) = splits["folds"]
    assert {int(c.removeprefix("subject")) for c in fold["train"]} == MSCMR_TRAIN
    assert {int(c.removeprefix("subject")) for c in fold["val"]} == MSCMR_VAL
    assert {int(c.removeprefix("subject")) for c in fold["test"]} == MSCMR_TEST


def test_preset_skips_absent_subjects(caplog):
    rows = mscmr_rows([n for n in range(1, 46) if n not in (3, 8)])
    with caplog.at_level(logging.WARNING, logger="helpnet.data.splits"):
        splits = preset_splits(rows, "cyclemix_mscmr")
    (fold,) = splits["folds"]
    assert len(fold["test"]) == 14
    assert len(fold["val"]) == 4
    assert "2 of the 45 subjects" in caplog.text


def test_preset_empty_test_is_error():
    rows = acdc_rows(n for n in range(1, 101) if n not in HELPNET_TEST)
    with pytest.raises(ValueError, match=r"preset 'helpnet_acdc_test', fold 0.*--scheme kfold"):
        preset_splits(rows, "helpnet_acdc_test")


def test_preset_unknown_name():
    with pytest.raises(ValueError, match=r"unknown split preset 'acdc'.*cyclemix_mscmr"):
        preset_splits(acdc_rows(), "acdc")


def test_preset_with_own_val_rejects_validation_subjects():
    with pytest.raises(ValueError, match="defines its own validation set"):
        preset_splits(mscmr_rows(), "cyclemix_mscmr", validation_subjects=2)


def test_preset_duplicate_subject_numbers():
    rows = chaos_rows() + [row("patient05_t1", "patient05")]
    with pytest.raises(ValueError, match="share the number 5"):
        preset_splits(rows, "pacingpseudo_chaos_5fold")


# --- split files -------------------------------------------------------------------------------


def write_file(path, folds, **extra):
    path.write_text(json.dumps({"folds": folds, **extra}))
    return path


def test_file_scheme_accepts_valid(tmp_path):
    rows = acdc_rows(range(1, 4))
    path = write_file(
        tmp_path / "mine.json",
        [{"fold": 0, "train": ["patient002_ED", "patient001_ED"], "val": ["patient003_ED"], "test": ["patient003_ES"]}],
        seed=9,
    )
    splits = file_splits(rows, path)
    assert splits["scheme"] == "fixed"
    assert splits["seed"] == 9
    assert splits["num_folds"] == 1
    assert splits["folds"][0]["train"] == ["patient001_ED", "patient002_ED"]


def test_file_scheme_unknown_ids(tmp_path):
    path = write_file(tmp_path / "s.json", [{"train": ["patient001_ED", "ghost_1"], "val": [], "test": ["ghost_2"]}])
    with pytest.raises(ValueError, match=r"\['ghost_1', 'ghost_2'\]"):
        file_splits(acdc_rows(range(1, 3)), path)


def test_file_scheme_train_without_scribble(tmp_path):
    rows = acdc_rows([1]) + acdc_rows([2], scribble=False)
    path = write_file(tmp_path / "s.json", [{"train": ["patient002_ED"], "val": [], "test": ["patient001_ED"]}])
    with pytest.raises(ValueError, match=r"training case\(s\) \['patient002_ED'\] have no scribble"):
        file_splits(rows, path)


def test_file_scheme_test_without_label(tmp_path):
    rows = acdc_rows([1]) + acdc_rows([2], label=False)
    path = write_file(tmp_path / "s.json", [{"train": ["patient001_ED"], "val": [], "test": ["patient002_ES"]}])
    with pytest.raises(ValueError, match=r"test case\(s\) \['patient002_ES'\] have no dense label"):
        file_splits(rows, path)


def test_file_scheme_subject_leak(tmp_path):
    path = write_file(tmp_path / "s.json", [{"train": ["patient001_ED"], "val": [], "test": ["patient001_ES"]}])
    with pytest.raises(ValueError, match=r"\['patient001'\] have cases in both train and test"):
        file_splits(acdc_rows(range(1, 3)), path)


def test_file_scheme_bad_structure(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"folds": [{"fold": 1, "train": [], "test": []}]}))
    with pytest.raises(ValueError, match="numbered 0, 1"):
        file_splits(acdc_rows(), path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        file_splits(acdc_rows(), path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        file_splits(acdc_rows(), tmp_path / "missing.json")


def test_write_and_read_splits(tmp_path):
    rows = acdc_rows()
    splits = kfold_splits(rows, 5, 42)
    path = tmp_path / "out" / "splits.json"
    write_splits(path, splits)
    assert json.loads(path.read_text()) == splits
    assert read_splits(path, rows)["folds"] == splits["folds"]


def test_write_splits_rejects_malformed(tmp_path):
    path = tmp_path / "splits.json"
    with pytest.raises(ValueError, match="folds"):
        write_splits(path, {"scheme": "kfold", "folds": []})
    assert not path.exists()


def test_make_splits_from_config():
    rows = acdc_rows()
    spec = {"scheme": "kfold", "folds": 5, "seed": 42, "validation_subjects": 0}
    assert make_splits(rows, spec) == kfold_splits(rows, 5, 42)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['fold'\]"):
        make_splits(rows, {"scheme": "kfold", "fold": 5})
    with pytest.raises(ValueError, match="'random'"):
        make_splits(rows, {"scheme": "random"})


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_kfold(tmp_path):
    manifest = tmp_path / "cases.tsv"
    write_manifest(manifest, acdc_rows())
    output = tmp_path / "splits.json"
    code = main(
        ["split", "--manifest", str(manifest), "--output", str(output), "--scheme", "kfold",
         "--folds", "5", "--seed", "42", "--validation-subjects", "1"]
    )
    assert code == 0
    assert json.loads(output.read_text()) == kfold_splits(acdc_rows(), 5, 42, validation_subjects=1)


def test_cli_preset(tmp_path):
    manifest = tmp_path / "cases.tsv"
    write_manifest(manifest, chaos_rows())
    output = tmp_path / "splits.json"
    code = main(["split", "--manifest", str(manifest), "--output", str(output), "--scheme", "preset",
                 "--preset", "pacingpseudo_chaos_5fold"])
    assert code == 0
    folds = json.loads(output.read_text())["folds"]
    assert numbers_of(folds[0]["test"]) == {5, 36, 13, 21}


def test_cli_error_exit_code(tmp_path):
    manifest = tmp_path / "cases.tsv"
    write_manifest(manifest, acdc_rows(range(1, 3)))
    output = tmp_path / "splits.json"
    assert main(["split", "--manifest", str(manifest), "--output", str(output), "--scheme", "kfold", "--folds", "5"]) == 1
    assert not output.exists()
    assert main(["split", "--manifest", str(manifest), "--output", str(output), "--scheme", "file"]) == 1
