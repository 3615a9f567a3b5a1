"""Dataset readers: one function per public layout, all returning canonical cases.

A reader is ``read(sources: dict[str, Path], options: dict, classes: list[str]) -> ReaderResult``
(see :mod:`helpnet.data.readers.common`). Readers are imported lazily so that, for example,
the DICOM stack of the CHAOS reader loads only when CHAOS is aligned.
"""

from __future__ import annotations

import importlib

from helpnet.data.readers.common import ReaderFn, ReaderResult

READERS: dict[str, str] = {
    "acdc": "helpnet.data.readers.acdc:read_acdc",
    "wsl4mis": "helpnet.data.readers.wsl4mis:read_wsl4mis",
    "mscmr": "helpnet.data.readers.mscmr:read_mscmr",
    "chaos": "helpnet.data.readers.chaos:read_chaos",
    "nifti_folder": "helpnet.data.readers.nifti_folder:read_nifti_folder",
    "demo": "helpnet.data.readers.nifti_folder:read_demo",
}
"""Reader name (the config's ``reader``) -> ``module:function``."""


def get_reader(name: str) -> ReaderFn:
    """Import and return the reader function registered as ``name``."""
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}; known readers: {', '.join(sorted(READERS))}")
    module_name, function_name = READERS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, function_name)


__all__ = ["READERS", "ReaderFn", "ReaderResult", "get_reader"]
