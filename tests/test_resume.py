"""Resuming: the manifest reader skips done rows unparsed, the preflight sees only the rest."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.cli import cli
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest import jsonl as manifest_module
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows

KEY = "sk-resume-test-0123456789"

lines_strategy = st.lists(
    st.one_of(
        st.integers(0, 10_000).map(
            lambda n: orjson.dumps({"id": f"r{n}", "prompt": "p" * (n % 7)})),
        st.just(b""),
        st.just(b"{not json"),
        st.just(b'{"id": "long", "prompt": "' + b"x" * 40 + b'"}'),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(lines=lines_strategy, done_bits=st.lists(st.booleans(), max_size=50),
       trailing_newline=st.booleans(), chunk=st.sampled_from([1, 5, 64, 1 << 20]))
def test_jsonl_rows_marked_done_are_skipped_exactly(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], done_bits: list[bool],
    trailing_newline: bool, chunk: int,
) -> None:
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline and lines else b""))
    done = bytes([0]) + bytes(int(bit) for bit in done_bits)
    every = list(iter_rows(path, JobSpec(), check_duplicates=False, max_line_bytes=30))
    original_chunk = manifest_module._CHUNK
    manifest_module._CHUNK = chunk  # chunk edges anywhere: inside lines, on newlines
    try:
        skipped = list(iter_rows(path, JobSpec(), check_duplicates=False, max_line_bytes=30,
                                 done_lines=done))
    finally:
        manifest_module._CHUNK = original_chunk
    expected = [row for row in every if not (row.line < len(done) and done[row.line])]
    assert skipped == expected


def test_parquet_rows_marked_done_are_skipped_exactly(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": [f"r{n}" for n in range(1, 101)],
                             "prompt": [f"q{n}" for n in range(1, 101)]}), path)
    done = bytearray(101)
    for row in (*range(1, 40), 45, 46, 77, 100):  # whole batches, parts of batches, the end
        done[row] = 1
    rows = list(iter_rows(path, JobSpec(), batch_size=16, check_duplicates=False,
                          done_lines=bytes(done)))
    assert [row.line for row in rows] == [n for n in range(1, 101) if not done[n]]
    assert all(row.id == f"r{row.line}" and row.prompt == f"q{row.line}" for row in rows)


def test_a_resume_estimates_and_sends_only_what_is_left(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(revoke_after=12)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{n}", "prompt": f"Question {n}?"}) + "\n"
                                for n in range(60)))
    out = tmp_path / "run"
    args = ["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
            "--concurrency", "2"]
    runner = CliRunner()
    first = runner.invoke(cli, args, env={"BATCHRUN_API_KEY": KEY})
    assert first.exit_code == 3, first.output  # 401 after 12 requests: fatal, resumable
    done = pq.read_table(out / "results.parquet").to_pylist()
    ok = sum(row["status"] == "ok" for row in done)
    assert 0 < ok <= 12

    server.config.revoke_after = None
    second = runner.invoke(cli, args, env={"BATCHRUN_API_KEY": KEY})
    assert second.exit_code == 0, second.output
    match = re.search(r"rows to send (\d+) of 60", second.output)
    assert match and int(match.group(1)) == 60 - ok  # the 401'd rows are resent too
    assert f"resuming: {ok} rows already done" in second.output
    assert server.stats.billed_requests == 60
    assert max(server.stats.billed_by_body.values()) == 1
