"""The sample media generator (`sample_inputs/make_media.py`), loaded once for the media suites."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SAMPLES = Path(__file__).resolve().parent.parent.parent / "sample_inputs"


def load_make_media() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_media", SAMPLES / "make_media.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_media = load_make_media()
