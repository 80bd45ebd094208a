"""Writing manifests and job files, running ``batchrun`` and reading what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from batchrun.cli import cli

ROOT = Path(__file__).resolve().parent.parent.parent
# Long and distinctive, so that a test that greps for it cannot be fooled by a short match.
KEY = "sk-faultkit-7f3a9c1e5b2d4f60a8e1"


QUESTION = "Question {number}: why is the sky blue?"
# The example extraction job's JSON Schema (jobs/extract_invoice_fields.toml uses it).
INVOICE_SCHEMA = ROOT / "jobs" / "schemas" / "invoice.schema.json"


def write_manifest(path: Path, rows: int, *, prefix: str = "row", prompt: str = QUESTION) -> Path:
    """``rows`` prompt rows with ids ``{prefix}-0`` …; ``prompt`` is formatted with
    ``number``."""
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(rows):
            handle.write(json.dumps({"id": f"{prefix}-{number}",
                                     "prompt": prompt.format(number=number)}) + "\n")
    return path


def write_invoices(path: Path, rows: int) -> Path:
    """``rows`` invoice texts to extract fields from, ids ``inv-0`` …"""
    path.write_text("".join(
        json.dumps({"id": f"inv-{n}", "text": f"Invoice {n} from vendor {n % 7}, "
                    f"total {n * 3.5:.2f} EUR"}) + "\n" for n in range(rows)))
    return path


def write_job(path: Path, **fields: Any) -> Path:
    """A job TOML; small values only (strings, numbers, booleans, inline tables)."""
    def literal(value: Any) -> str:
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{k} = {literal(v)}" for k, v in value.items()) + " }"
        return json.dumps(value)

    fields = {"max_retry_wait_s": 0.2, "concurrency": 8, **fields}
    path.write_text("[job]\n" + "".join(f"{k} = {literal(v)}\n" for k, v in fields.items()))
    return path


def fast_job(tmp_path: Path, **fields: Any) -> Path:
    """``tmp_path/job.toml`` with ``write_job``'s quick defaults and ``fields``."""
    return write_job(tmp_path / "job.toml", **fields)


def run_cli(args: list[str], key: str | None = KEY) -> Result:
    """``batchrun`` in-process (CliRunner); stderr is mixed into ``.output``."""
    env = {"BATCHRUN_API_KEY": key} if key else {}
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def run_process(args: list[str], key: str | None = KEY, timeout: float = 120,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m batchrun.cli ARGS`` as a real process; never a traceback on stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("BATCHRUN_API_KEY", None)
    if key:
        full_env["BATCHRUN_API_KEY"] = key
    done = subprocess.run([sys.executable, "-m", "batchrun.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr
    assert "Traceback" not in done.stdout, done.stdout
    return done


def results(run_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(run_dir / "results.parquet").to_pylist()


def by_id(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in results(run_dir)}


def journal(run_dir: Path) -> list[dict[str, Any]]:
    """Every whole journal line (torn ones skipped, as the store does)."""
    lines = []
    for raw in (run_dir / "journal.jsonl").read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return lines


def latest(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest journal line of every id (what results.parquet is built from)."""
    return {line["id"]: line for line in journal(run_dir)}


def reap(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` if it still runs, wait for it, close its pipes (a test's teardown)."""
    if process.poll() is None:
        process.kill()
        process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def status_json(out: Path) -> dict[str, Any]:
    """``batchrun status OUT --json``, checked to succeed, as a dict."""
    result = run_cli(["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data
