"""Trainer, data pipeline and inference on tiny synthetic cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from helpnet.data.cases import IGNORE_INDEX, CanonicalCase, write_case, write_dataset_info
from helpnet.io import make_header
from helpnet.training import trainer as trainer_module
from helpnet.training.data import SliceStore, StepBatches, augment_sample, center_crop_or_pad
from helpnet.training.inference import _paste_window, predict_cases
from helpnet.training.preprocess import preprocess_case
from helpnet.training.settings import TrainingSettings
from helpnet.training.trainer import NonFiniteLossError, train_fold

SPACING = (1.5, 1.5, 8.0)


def synthetic_case(seed: int, shape=(40, 36, 3)) -> CanonicalCase:
    """A bright disk (class 1) in a dark background, with scribble strokes inside and outside."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[: shape[0], : shape[1]]
    cx, cy = shape[0] / 2 + rng.integers(-3, 4), shape[1] / 2 + rng.integers(-3, 4)
    disk = (x - cx) ** 2 + (y - cy) ** 2 < 8**2
    label = np.repeat(disk[:, :, None], shape[2], axis=2).astype(np.uint8)
    image = (label * 100 + rng.normal(0, 10, shape)).astype(np.float32)
    scribble = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    scribble[int(cx), int(cy) - 3 : int(cy) + 3, :] = 1
    scribble[2, :, :] = 0
    return CanonicalCase(f"case{seed}", f"subject{seed}", "ED", image, make_header(SPACING), scribble, label)


@pytest.fixture()
def fold_dir(tmp_path: Path) -> Path:
    """Five canonical cases, preprocessed at 1.5 mm, with splits.json (fold 0: 4 train, 1 val+test)."""
    cases = [synthetic_case(seed) for seed in range(5)]
    for case in cases:
        write_case(case, tmp_path / "cases" / case.case_id)
        edge = (np.abs(np.gradient(case.label.astype(float), axis=0)) > 0).astype(np.uint8) * 255
        nib.save(nib.Nifti1Image(edge, None, case.header), str(tmp_path / f"{case.case_id}_edge.nii.gz"))
        preprocess_case(tmp_path / "cases" / case.case_id, tmp_path / "pre" / f"{case.case_id}.npz", 1.5,
                        tmp_path / f"{case.case_id}_edge.nii.gz")
    ids = [c.case_id for c in cases]
    splits = {"scheme": "kfold", "seed": 0, "num_folds": 1, "source": "test",
              "folds": [{"fold": 0, "train": ids[:4], "val": ids[4:], "test": ids[4:]}]}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    write_dataset_info(tmp_path / "dataset.json", ["disk"], {})
    return tmp_path


def tiny_settings(**overrides) -> TrainingSettings:
    values = {"network": "unet_light", "patch_size": 32, "batch_size": 2, "epochs": 2, "lr": 1e-3,
              "checkpoint_every": 3, "log_every": 2, "precision": "fp32", "num_workers": 0}
    values.update(overrides)
    return TrainingSettings.from_dict(values, {"hpc": True, "egpl": True, "spr_connectivity": True, "spr_edges": True})


def run_fold(fold_dir: Path, out: str, settings: TrainingSettings) -> dict:
    return train_fold(fold_dir / "pre", fold_dir / "splits.json", 0, fold_dir / "dataset.json", settings, fold_dir / out)


def test_center_crop_or_pad_exact():
    array = np.arange(12).reshape(3, 4)
    out = center_crop_or_pad(array, 2, fill=-1)
    assert out.tolist() == [[1, 2], [5, 6]]
    padded = center_crop_or_pad(np.ones((1, 2)), 4, fill=9)
    assert padded.tolist() == [[9, 9, 9, 9], [9, 1, 1, 9], [9, 9, 9, 9], [9, 9, 9, 9]]


def test_paste_window_inverts_crop_and_pad():
    probs = np.random.default_rng(0).random((2, 6, 6)).astype(np.float32)
    canvas = _paste_window(probs, (4, 9))
    assert canvas.shape == (2, 4, 9)
    assert np.array_equal(canvas[:, :, 1:7], probs[:, 1:5, :])
    assert np.all(canvas[:, :, 0] == 0)
    assert np.all(canvas[:, :, 7:] == 0)


def test_augmentation_fills_scribble_with_ignore():
    image = np.ones((20, 20), np.float32)
    scribble = np.zeros((20, 20), np.uint8)
    rng = np.random.default_rng(1)
    _, out, _ = augment_sample(image, scribble, None, rng, 32, IGNORE_INDEX, flip_rot90=False, rotate=False)
    assert out.shape == (32, 32)
    assert out[0, 0] == IGNORE_INDEX
    assert np.count_nonzero(out == 0) == 400
    _, out_bg, _ = augment_sample(image, scribble, None, np.random.default_rng(1), 32, 0, False, False)
    assert np.count_nonzero(out_bg == 0) == 32 * 32


def test_step_batches_depend_only_on_step(fold_dir: Path):
    store = SliceStore.from_cases(fold_dir / "pre", ["case0", "case1", "case2"], need_edges=True)
    full = StepBatches(store, 2, seed=5, first_step=0, total_steps=6, patch_size=32, label_fill=IGNORE_INDEX)
    resumed = StepBatches(store, 2, seed=5, first_step=4, total_steps=6, patch_size=32, label_fill=IGNORE_INDEX)
    assert torch.equal(full[4]["image"], resumed[0]["image"])
    assert torch.equal(full[5]["scribble"], resumed[1]["scribble"])
    epoch_slices = np.concatenate([full.slice_indices(s) for s in range(full.steps_per_epoch)])
    assert len(set(epoch_slices.tolist())) == len(epoch_slices)


def test_training_writes_outputs_and_log(fold_dir: Path):
    summary = run_fold(fold_dir, "run", tiny_settings())
    out = fold_dir / "run"
    for name in ("checkpoint_final.pt", "checkpoint_best.pt", "training_log.csv", "training_summary.json"):
        assert (out / name).exists(), name
    assert not (out / "resume").exists()
    header = (out / "training_log.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["step", "epoch", "lr", "loss"]
    assert "edge" in header
    assert "val_dice" in header
    # 4 cases x 3 slices = 12 slices, batch 2 -> 6 steps per epoch, 2 epochs.
    assert summary["total_steps"] == 12
    assert summary["lr_step_steps"] == 6
    assert summary["best_val_dice"] is not None


def test_resume_after_kill_matches_uninterrupted_run(fold_dir: Path, monkeypatch):
    reference = run_fold(fold_dir, "reference", tiny_settings())
    original = trainer_module.HelpnetObjective

    class KilledAtStep7(original):
        calls = 0

        def __call__(self, *args, **kwargs):
            KilledAtStep7.calls += 1
            if KilledAtStep7.calls == 8:
                raise KeyboardInterrupt("simulated kill")
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "HelpnetObjective", KilledAtStep7)
    with pytest.raises(KeyboardInterrupt):
        run_fold(fold_dir, "resumed", tiny_settings())
    assert (fold_dir / "resumed" / "resume" / "checkpoint_latest.pt").exists()
    monkeypatch.setattr(trainer_module, "HelpnetObjective", original)
    run_fold(fold_dir, "resumed", tiny_settings())
    ref_state = torch.load(fold_dir / "reference" / "checkpoint_final.pt", weights_only=False)["model"]
    new_state = torch.load(fold_dir / "resumed" / "checkpoint_final.pt", weights_only=False)["model"]
    for key, value in ref_state.items():
        assert torch.equal(value, new_state[key]), key
    assert reference["total_steps"] == 12


def test_non_finite_loss_names_step_and_term(fold_dir: Path, monkeypatch):
    original = trainer_module.HelpnetObjective

    class NanEdge(original):
        def __call__(self, *args, **kwargs):
            total, terms = super().__call__(*args, **kwargs)
            terms = dict(terms, edge=torch.tensor(float("nan")))
            return total, terms

    monkeypatch.setattr(trainer_module, "HelpnetObjective", NanEdge)
    with pytest.raises(NonFiniteLossError, match=r"step 0 in term\(s\) \['edge'\]"):
        run_fold(fold_dir, "nan", tiny_settings())


def test_sigterm_saves_checkpoint_and_resumes(fold_dir: Path):
    settings = {"network": "unet_light", "patch_size": 32, "batch_size": 2, "epochs": 400, "lr": 1e-3,
                "checkpoint_every": 100000, "log_every": 1, "precision": "fp32", "num_workers": 0}
    command = [sys.executable, "-m", "helpnet.cli", "train", "--preprocessed-dir", str(fold_dir / "pre"),
               "--splits", str(fold_dir / "splits.json"), "--fold", "0", "--dataset-info", str(fold_dir / "dataset.json"),
               "--settings", json.dumps(settings), "--experiment", json.dumps({"hpc": False, "egpl": False,
               "spr_connectivity": False, "spr_edges": False}), "--output-dir", str(fold_dir / "sig")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    log = fold_dir / "sig" / "training_log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output.decode()[-2000:]
    state = torch.load(fold_dir / "sig" / "resume" / "checkpoint_latest.pt", weights_only=False)
    assert state["step"] >= 3
    assert not (fold_dir / "sig" / "checkpoint_final.pt").exists()


def test_predict_writes_original_geometry(fold_dir: Path):
    run_fold(fold_dir, "run", tiny_settings())
    written = predict_cases([fold_dir / "run" / "checkpoint_best.pt"] * 2, fold_dir / "cases", ["case4"],
                            fold_dir / "predictions", device="cpu", batch_size=1)
    prediction = nib.load(str(written[0]))
    image = nib.load(str(fold_dir / "cases" / "case4" / "image.nii.gz"))
    assert prediction.shape == image.shape
    assert np.allclose(prediction.affine, image.affine)
    assert prediction.header.get_zooms() == image.header.get_zooms()
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1}


def test_predict_precision_override(fold_dir: Path, monkeypatch):
    import helpnet.training.inference as inference_module

    run_fold(fold_dir, "run", tiny_settings(epochs=1))
    checkpoint = [fold_dir / "run" / "checkpoint_final.pt"]
    used = []
    original = inference_module.autocast_context

    def recording_autocast(device, precision):
        used.append(precision)
        return original(device, precision)

    monkeypatch.setattr(inference_module, "autocast_context", recording_autocast)
    predict_cases(checkpoint, fold_dir / "cases", ["case4"], fold_dir / "p_default", device="cpu")
    assert set(used) == {"fp32"}  # tiny_settings trains in fp32
    used.clear()
    predict_cases(checkpoint, fold_dir / "cases", ["case4"], fold_dir / "p_bf16", device="cpu", precision="bf16")
    assert set(used) == {"bf16"}
    with pytest.raises(ValueError, match="fp16 is only supported on CUDA"):
        predict_cases(checkpoint, fold_dir / "cases", ["case4"], fold_dir / "p_fp16", device="cpu", precision="fp16")


def test_batched_inference_equals_slice_by_slice(fold_dir: Path):
    from helpnet.training.checkpoint import load_model_for_inference
    from helpnet.training.inference import predict_probabilities, prepare_volume

    run_fold(fold_dir, "run", tiny_settings(epochs=1))
    model, meta = load_model_for_inference(fold_dir / "run" / "checkpoint_final.pt", torch.device("cpu"))
    image = nib.load(str(fold_dir / "cases" / "case1" / "image.nii.gz"))
    windows, _ = prepare_volume(np.asarray(image.dataobj, dtype=np.float32), SPACING, 1.5, meta["patch_size"])
    one_by_one = predict_probabilities([model], windows, torch.device("cpu"), "fp32", batch_size=1)
    batched = predict_probabilities([model], windows, torch.device("cpu"), "fp32", batch_size=32)
    assert np.allclose(one_by_one, batched, atol=1e-5)


def test_slice_store_rejects_mixed_spacing(fold_dir: Path):
    # case1 resampled again at 2.0 mm while case0 stays at 1.5 mm.
    preprocess_case(fold_dir / "cases" / "case1", fold_dir / "pre" / "case1.npz", 2.0)
    assert SliceStore.from_cases(fold_dir / "pre", ["case0", "case2"], need_edges=False).target_spacing == 1.5
    with pytest.raises(ValueError, match=r"case1.npz: resampled to 2.0 mm but case0 to 1.5 mm"):
        SliceStore.from_cases(fold_dir / "pre", ["case0", "case1"], need_edges=False)
