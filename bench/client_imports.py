"""The floor of every RSS figure: the interpreter with batchrun's command-line imports loaded."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402,F401

import batchrun.cli  # noqa: E402,F401

print('{"requests": 0, "ok": 0, "elapsed_s": 0, "cpu_s": 0}')
