"""The ``batchrun`` command: one module per command family, each command a thin function that
parses flags, calls ``plan`` or ``reporting``, renders what they report and decides the exit
code. The top layer: it may import every other one, and is the only one that imports
``emulator``."""

from batchrun.cli.app import cli, main

__all__ = ["cli", "main"]
