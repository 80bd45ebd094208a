"""What a command is given before any session opens: the API key (the flag, the environment,
the emulator's), the job spec with the flags on top, the manifest's path checked, the endpoint
(the caller's emulator for ``--emulate``). Light on purpose: the plain ``estimate`` needs these
and nothing of the wire or of dispatch."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec, load_job

API_KEY_ENV = "BATCHRUN_API_KEY"
EMULATOR_KEY = "sk-batchrun-emulator"
DEFAULT_CONFIRM_ABOVE = 1000.0  # credits ($5): above this, a run asks first

# Starts an emulator and yields its base URL (the CLI gives one: this layer never imports it).
Emulator = Callable[[], contextlib.AbstractContextManager[str]]


def check_manifest(manifest: Path) -> None:
    if not manifest.exists():
        raise InputError(f"manifest not found: {manifest}")
    if manifest.is_dir():
        raise InputError(f"manifest is a directory, not a file: {manifest}")


def load_spec(job_file: Path | None, **overrides: Any) -> JobSpec:
    """The job file (or the defaults) with the flags given on top, validated."""
    spec = load_job(job_file)
    if job_file is not None and spec.name == "job":
        overrides.setdefault("name", job_file.stem)
    spec = spec.with_overrides(**overrides)
    spec.validate()
    return spec


def api_key_for(api_key: str | None, *, emulate: bool, why: str = "") -> str:
    """The key to send: the flag, then the environment; the emulator's without a key."""
    key = api_key or os.environ.get(API_KEY_ENV)
    if key:
        return key
    if emulate:
        return EMULATOR_KEY
    raise InputError(why or f"no API key: set {API_KEY_ENV} or pass --api-key (or --emulate "
                             "to try it locally)")


@contextlib.contextmanager
def endpoint_for(spec: JobSpec, emulator: Emulator | None) -> Iterator[JobSpec]:
    """``spec`` with its endpoint: the emulator's while it runs, when one is given."""
    if emulator is None:
        yield spec
        return
    with emulator() as base_url:
        yield spec.with_overrides(endpoint=base_url)
