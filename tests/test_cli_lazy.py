"""Each command's module is imported when that command runs: ``batchrun --help`` lists every
command with its short help without importing them, and a plain ``estimate`` loads neither
the wire (aiohttp), dispatch, the live panel (rich) nor the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
from support.kit import ROOT, write_manifest

from batchrun.cli.app import COMMANDS, cli

# What a plain estimate must not load: the wire, sending, the panel, the emulator.
HEAVY = ("aiohttp", "rich", "batchrun.api", "batchrun.dispatch", "batchrun.emulator",
         "batchrun.store", "batchrun.reporting", "batchrun.plan.session", "batchrun.cli.run")

PROBE = """
import json, sys
from batchrun.cli import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _loaded(*args: str) -> tuple[str, set[str]]:
    """stdout of ``batchrun ARGS`` in a fresh interpreter, and the modules it had loaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules
                  if any(name == top or name.startswith(top + ".") for top in HEAVY))


def test_help_lists_every_command_with_its_own_short_help() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name, (_, _, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        # The string in app.py is the command's own first sentence: they cannot drift apart.
        assert command.get_short_help_str(limit=1000) == short, name
    assert cli.get_command(ctx, "no-such-command") is None

    out, modules = _loaded("--help")
    for name, (_, _, short) in COMMANDS.items():
        assert f"  {name}  " in out and short[:30] in out, (name, out)
    assert not _heavy(modules), _heavy(modules)
    assert "batchrun.cli.estimate" not in modules and "batchrun.cli.inspect" not in modules


def test_a_plain_estimate_loads_nothing_of_the_wire(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "rows.jsonl", 30)
    out, modules = _loaded("estimate", str(manifest), "--json")
    assert json.loads(out)["rows"] == 30
    assert not _heavy(modules), _heavy(modules)
    # The row-by-row fallback still works the same way (a manifest that is not plain rows).
    lines = manifest.read_text().splitlines()
    lines[3] = json.dumps({"id": "odd", "prompt": "hi", "reasoning_effort": "low"})
    manifest.write_text("\n".join(lines) + "\n")
    out, modules = _loaded("estimate", str(manifest), "--json")
    assert json.loads(out)["rows"] == 30
    assert not _heavy(modules), _heavy(modules)


def test_a_command_that_sends_still_finds_its_modules(tmp_path: Path) -> None:
    out, modules = _loaded("run", "--help")
    assert "--allow-job-change" in out and "batchrun.cli.run" in modules
    out, _ = _loaded("emulator", "--help")
    assert "--port" in out
