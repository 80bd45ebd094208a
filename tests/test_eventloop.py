"""The dispatch loop: uvloop unless asked otherwise, and a collector that is put back after."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.dispatch.eventloop import LOOP_ENV, YOUNG_THRESHOLD, lean_collector, run_dispatch


def test_lean_collector_freezes_raises_the_threshold_and_restores_both() -> None:
    before = gc.get_threshold()
    with lean_collector():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0  # the objects of the imports are out of the way
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made during dispatch are still collected
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_lean_collector_restores_after_an_exception() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), lean_collector():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_lean_collector_leaves_a_callers_freeze_in_place() -> None:
    gc.freeze()
    try:
        with lean_collector():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _loop_module() -> str:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    return run_dispatch(which)


def test_dispatch_runs_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert _loop_module().startswith("uvloop")


def test_the_environment_can_ask_for_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert _loop_module().startswith("asyncio")


def test_without_uvloop_installed_dispatch_runs_on_asyncio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Windows, where uvloop is not installed (and anyio would import winloop)."""
    monkeypatch.delenv(LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert _loop_module().startswith("asyncio")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_real_run_on_either_loop_ends_all_ok(loop: str, tmp_path: Path) -> None:
    """The whole run path (emulator subprocess included) on each loop, as a user starts it."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(f'{{"id": "r{i}", "prompt": "row {i}"}}\n' for i in range(40)),
                        encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", LOOP_ENV: loop, "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out",
         str(tmp_path / "out"), "--emulate", "--yes", "--quiet", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    status = json.loads(done.stdout)
    assert (status["rows_ok"], status["rows_failed"], status["stop_reason"]) == (40, 0, None)
