"""``run --reuse OLD_RUN_DIR``: only rows whose request changed are sent (and paid) again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer
from batchrun.store.cache import REUSED_EXTRA_KEY
from batchrun.store.keys import cache_key

KEY = "sk-reuse-test-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


def cli_run(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, env={"BATCHRUN_API_KEY": KEY}, catch_exceptions=False)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(manifest: Path, out: Path, server: EmulatorServer, *flags: str) -> Result:
    result = cli_run(["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
                      "--concurrency", "8", *flags])
    assert result.exit_code == 0, result.output
    return result


def by_id(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in pq.read_table(out / "results.parquet").to_pylist()}


def test_cache_key_covers_the_endpoint_and_the_body() -> None:
    body = "ab" * 32
    assert cache_key("http://a/v1", body) == cache_key("http://a/v1/", body)
    assert cache_key("http://a/v1", body) != cache_key("http://b/v1", body)
    assert cache_key("http://a/v1", body) != cache_key("http://a/v1", "cd" * 32)


def test_an_edited_manifest_sends_only_the_changed_rows(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG + b"b")
    rows = [{"id": f"r{n}", "prompt": f"Question {n}?"} for n in range(20)]
    rows += [{"id": "img-a", "prompt": "Describe", "media": ["a.png"]},
             {"id": "img-b", "prompt": "Describe", "media": ["b.png"]}]
    old = tmp_path / "old"
    run(write_rows(tmp_path / "v1.jsonl", rows), old, emulator, "--quiet")
    old_rows = by_id(old)
    assert emulator.stats.billed_requests == 22

    edited = [dict(row) for row in rows]
    edited[3]["prompt"] = "Question 3, reworded?"
    edited[7]["id"] = "renamed-7"  # same request under another id: still reused
    edited.append({"id": "new", "prompt": "A new question?"})
    (tmp_path / "b.png").write_bytes(PNG + b"changed")  # same path, other bytes
    new = tmp_path / "new"
    result = run(write_rows(tmp_path / "v2.jsonl", edited), new, emulator,
                 "--reuse", str(old))
    assert "rows to send 4 of 23" in result.output  # r3, new and both images (local media
    assert "reuse: 19 rows answered by" in result.output  # are only hashed when sent)
    assert emulator.stats.billed_requests == 22 + 3  # r3, new, img-b
    sent_now = {body for body, count in emulator.stats.billed_by_body.items()}
    assert len(sent_now) == 25

    rows_now = by_id(new)
    assert len(rows_now) == 23 and all(row["status"] == "ok" for row in rows_now.values())
    reused = {row_id for row_id, row in rows_now.items() if row["attempts"] == 0}
    assert reused == {f"r{n}" for n in range(20) if n not in (3, 7)} | {"renamed-7", "img-a"}
    sample = rows_now["r5"]
    assert sample["content"] == old_rows["r5"]["content"]
    assert sample["response_id"] == old_rows["r5"]["response_id"]
    assert (sample["credits"], sample["cost_usd"]) == (0.0, 0.0)
    origin = orjson.loads(sample["extra"])[REUSED_EXTRA_KEY]
    assert origin["id"] == "r5" and origin["credits"] == old_rows["r5"]["credits"]
    assert origin["run_dir"] == str(old.resolve())

    status = json.loads(cli_run(["status", str(new), "--json"]).stdout)
    assert status["rows_ok"] == 23 and status["rows_reused"] == 20
    paid_now = sum(rows_now[i]["credits"] for i in ("r3", "new", "img-b"))
    assert status["credits"] == paid_now  # reused answers are not spent again

    # A resume of the new run keeps --reuse in its command and sends nothing.
    again = cli_run(["run", str(tmp_path / "v2.jsonl"), "--out", str(new), "--endpoint",
                     emulator.base_url, "--reuse", str(old), "--json"])
    assert again.exit_code == 0 and emulator.stats.billed_requests == 25


def test_another_endpoint_or_job_option_is_another_request(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    first, second = make_emulator(), make_emulator()
    manifest = write_rows(tmp_path / "m.jsonl",
                          [{"id": f"r{n}", "prompt": f"Question {n}?"} for n in range(5)])
    old = tmp_path / "old"
    run(manifest, old, first, "--quiet")
    run(manifest, tmp_path / "other-endpoint", second, "--quiet", "--reuse", str(old))
    assert second.stats.billed_requests == 5  # a peer's cache once served stale answers here
    job = tmp_path / "job.toml"
    job.write_text('[job]\nreasoning_effort = "low"\n')
    run(manifest, tmp_path / "other-job", first, "--quiet", "--reuse", str(old), "--job",
        str(job))
    assert first.stats.billed_requests == 10
    run(manifest, tmp_path / "same", first, "--quiet", "--reuse", str(old))
    assert first.stats.billed_requests == 10


def test_reuse_must_name_another_run_directory(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_rows(tmp_path / "m.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "run"
    run(manifest, out, emulator, "--quiet")
    itself = cli_run(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                      "--reuse", str(out)])
    assert itself.exit_code == 2 and "itself" in itself.output
    (tmp_path / "empty").mkdir()
    nothing = cli_run(["run", str(manifest), "--out", str(tmp_path / "r2"), "--endpoint",
                       emulator.base_url, "--reuse", str(tmp_path / "empty")])
    assert nothing.exit_code == 2 and "holds no batchrun run" in nothing.output
