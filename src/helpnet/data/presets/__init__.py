"""Published train/val/test splits, by subject number, for ``helpnet split --scheme preset``.

Subjects are matched by the number in their subject id (``patient005``, ``subject5`` and
``patient5`` are all subject 5), so a preset works with the subject ids of any reader. Sources:

- ``cyclemix_mscmr``: the MSCMRseg split of CycleMix (``BWGZK/CycleMix``, folder
  ``MSCMR_dataset``), which HELPNet also uses. Only the 25 training subjects have scribbles.
- ``helpnet_acdc_test``: the 15 ACDC test patients of HELPNet (``IPMI-NWU/HELPNet``, folder
  ``data/datasets/ACDC_dataset/TestSet``). HELPNet does not publish its train/val ids, so every
  other patient with scribbles trains.
- ``wsl4mis_acdc_5fold``: the ACDC 5-fold cross-validation of WSL4MIS
  (``HiLab-git/WSL4MIS``, ``code/dataloaders/dataset.py`` at commit ``027198c``). WSL4MIS
  selects its checkpoint on the test patients of each fold, so the validation set equals the
  test set and its scores are optimistic. The preset reproduces that protocol for comparison.
- ``pacingpseudo_chaos_5fold``: the CHAOS MR 5-fold split of PacingPseudo
  (``zefanyang/pacingpseudo``, ``data/chaos/main.py`` at commit ``e7a3733``): the 20 training
  patients shuffled by NumPy's legacy generator with seed 1 and cut into 5 consecutive parts.
"""

from __future__ import annotations

from dataclasses import dataclass

VAL_IS_TEST = "test"
"""``PresetFold.val`` value meaning that the fold validates on its test subjects."""


@dataclass(frozen=True)
class PresetFold:
    """Subject numbers of one fold."""

    test: tuple[int, ...]
    val: tuple[int, ...] | str = ()
    """Subject numbers, or :data:`VAL_IS_TEST`."""
    train: tuple[int, ...] | None = None
    """Subject numbers; None means every subject of the preset that is not in test or val."""


@dataclass(frozen=True)
class SplitPreset:
    """A published split: its folds and the subjects it covers."""

    name: str
    description: str
    folds: tuple[PresetFold, ...]
    subjects: tuple[int, ...] | None = None
    """Subject numbers the preset covers; None means every subject of the manifest."""
    note: str = ""
    """Caveat logged whenever the preset is used."""


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(token) for token in text.replace(",", " ").split())


_MSCMR_TRAIN = _numbers("2, 4, 6, 7, 9, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25, 26, 27, 31, 32, 34, 37, 39, 42, 44, 45")
_MSCMR_VAL = _numbers("1, 8, 29, 36, 41")
_MSCMR_TEST = _numbers("3, 5, 10, 11, 12, 16, 17, 23, 28, 30, 33, 35, 38, 40, 43")

_HELPNET_ACDC_TEST = _numbers("5, 10, 24, 30, 36, 39, 41, 60, 64, 72, 73, 77, 78, 80, 82")

_CHAOS_TEST_FOLDS = (
    _numbers("5, 36, 13, 21"),
    _numbers("3, 33, 8, 37"),
    _numbers("15, 2, 32, 1"),
    _numbers("39, 38, 20, 34"),
    _numbers("19, 31, 22, 10"),
)

PRESETS: dict[str, SplitPreset] = {
    preset.name: preset
    for preset in (
        SplitPreset(
            name="cyclemix_mscmr",
            description="MSCMRseg, CycleMix/HELPNet split: train 25 scribbled subjects, val 5, test 15",
            folds=(PresetFold(test=_MSCMR_TEST, val=_MSCMR_VAL, train=_MSCMR_TRAIN),),
            subjects=tuple(sorted(_MSCMR_TRAIN + _MSCMR_VAL + _MSCMR_TEST)),
        ),
        SplitPreset(
            name="helpnet_acdc_test",
            description="ACDC, HELPNet test set of 15 patients (ED and ES); all other scribbled patients train",
            folds=(PresetFold(test=_HELPNET_ACDC_TEST),),
        ),
        SplitPreset(
            name="wsl4mis_acdc_5fold",
            description="ACDC, WSL4MIS 5-fold: fold k tests patients 20k+1 to 20k+20 and validates on them too",
            folds=tuple(
                PresetFold(test=tuple(range(20 * k + 1, 20 * k + 21)), val=VAL_IS_TEST) for k in range(5)
            ),
            subjects=tuple(range(1, 101)),
            note="the validation set of each fold equals its test set, as in WSL4MIS, so checkpoint "
            "selection sees the test patients and test scores are optimistic",
        ),
        SplitPreset(
            name="pacingpseudo_chaos_5fold",
            description="CHAOS MR, PacingPseudo 5-fold over the 20 training patients (4 test patients per fold)",
            folds=tuple(PresetFold(test=fold) for fold in _CHAOS_TEST_FOLDS),
            subjects=tuple(sorted(n for fold in _CHAOS_TEST_FOLDS for n in fold)),
        ),
    )
}
"""Preset name -> split."""

__all__ = ["PRESETS", "VAL_IS_TEST", "PresetFold", "SplitPreset"]
