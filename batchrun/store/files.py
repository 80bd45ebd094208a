"""Durable small writes: a file replaced atomically, a directory entry made durable; and the
files a user names for a command's output."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from batchrun.core.errors import InputError


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a file's creation or rename durable, not only its bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_output(path: Path, write: Callable[[Path], object]) -> None:
    """``write(path)`` for a file the user named (``--output``): its folder is made when
    missing, and a folder or file that cannot be written is bad input (exit 2, one line that
    names it), not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
