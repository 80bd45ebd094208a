"""The column-wise estimate of plain prompt rows gives exactly what the row-by-row scan gives
(rows, tokens, credits, unused columns, duplicate ids), and hands every other manifest to it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support.kit import run_cli

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.plan.fast_estimate import fast_preflight
from batchrun.plan.preflight import scan_manifest

ALPHABET = "abc xyz\n\t\"éü日本語한국어Привет😀𠀀ﾟȀɏɐЀ"


def _rows(count: int, seed: int = 5, int_ids: bool = False) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        row: dict[str, Any] = {"id": number if int_ids else f"r{number}",
                               "prompt": "p " + "".join(rng.choice(ALPHABET)
                                                        for _ in range(rng.randint(0, 80)))}
        if number % 4 == 0:
            row["system"] = rng.choice(["", "Be brief. 简洁", None, "Answer in French."])
        if number % 5 == 0:
            row["notes"] = "n"
        rows.append(row)
    return rows


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=number % 2 == 0) + "\n"
                            for number, row in enumerate(rows)))
    return path


def _compare(manifest: Path, job: JobSpec) -> None:
    price = job.resolved_price()
    fast = fast_preflight(manifest, job, price)
    assert fast is not None, "a plain manifest was not read column-wise"
    slow = scan_manifest(manifest, job, price)
    assert fast.to_send.as_dict() == slow.to_send.as_dict()
    assert (fast.rows_total, fast.rows_sendable) == (slow.rows_total, slow.rows_sendable)
    assert list(fast.columns) == [c for c in slow.columns if c not in ("system",)]


@pytest.mark.parametrize("system, int_ids", [(None, False), ("You are terse. 简洁に", True)])
def test_plain_jsonl_rows_estimate_exactly_as_row_by_row(tmp_path: Path, system: str | None,
                                                        int_ids: bool) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", _rows(3000, int_ids=int_ids))
    _compare(manifest, JobSpec(system=system))


def test_plain_parquet_rows_estimate_exactly_as_row_by_row(tmp_path: Path) -> None:
    rows = _rows(3000)
    table = pa.table({"id": [str(row["id"]) for row in rows],
                      "prompt": [row["prompt"] for row in rows],
                      "system": [row.get("system") for row in rows],
                      "notes": [row.get("notes") for row in rows]})
    manifest = tmp_path / "m.parquet"
    pq.write_table(table, manifest, row_group_size=700)
    _compare(manifest, JobSpec(system="Be exact."))


@pytest.mark.parametrize("extra_line", [
    '{"id": "x", "prompt": "   "}',  # a blank prompt: that row's error
    '{"id": "x", "prompt": ""}',  # an empty one
    '{"id": "x", "prompt": "\\u3000\\u2028\\u001c\\u0085 \\t"}',  # blank beyond ASCII
    '{"id": "x", "messages": [{"role": "user", "content": "hi"}]}',  # another shape
    '{"id": "x", "prompt": "hi", "reasoning_effort": "low"}',  # a per-row setting
    '{"id": "x", "prompt": "hi"',  # not JSON
    '{"id": true, "prompt": "hi"}',  # an id of the wrong type
])
def test_anything_else_is_left_to_the_row_by_row_scan(tmp_path: Path, extra_line: str) -> None:
    manifest = _jsonl(tmp_path / "m.jsonl", _rows(50))
    with open(manifest, "a") as handle:
        handle.write(extra_line + "\n")
    job = JobSpec()
    assert fast_preflight(manifest, job, job.resolved_price()) is None
    assert fast_preflight(manifest, JobSpec(prompt_template="{prompt}"),
                          job.resolved_price()) is None


def test_arrow_counts_as_space_every_character_python_strips() -> None:
    # The premise of the blank check's cheap first pass (``arrow_rows._any_blank``).
    spaces = [chr(code) for code in range(0x110000) if chr(code).isspace()]
    assert len(spaces) == 29
    assert all(pc.utf8_is_space(pa.array(spaces)).to_pylist())
    assert all(pc.utf8_is_space(pa.array(["".join(spaces)])).to_pylist())


def test_a_prompt_of_spaces_around_one_letter_stays_plain(tmp_path: Path) -> None:
    rows = _rows(50)
    rows[20]["prompt"] = "\u3000\u2028 x \x1c"
    manifest = _jsonl(tmp_path / "m.jsonl", rows)
    _compare(manifest, JobSpec())


def test_a_duplicate_id_is_named_with_both_lines(tmp_path: Path) -> None:
    rows = _rows(40)
    rows[30]["id"] = rows[7]["id"]
    manifest = _jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(InputError, match="duplicate id 'r7' on lines 8 and 31"):
        fast_preflight(manifest, JobSpec(), JobSpec().resolved_price())


def test_the_estimate_command_gives_the_same_json_either_way(tmp_path: Path) -> None:
    rows = _rows(500)
    plain = _jsonl(tmp_path / "plain.jsonl", rows)
    # The same rows, one of them in messages form: the whole file is read row by row.
    mixed_rows = [*rows[:-1], {"id": rows[-1]["id"],
                               "messages": [{"role": "user", "content": rows[-1]["prompt"]}]}]
    mixed = _jsonl(tmp_path / "mixed.jsonl", mixed_rows)
    first = json.loads(run_cli(["estimate", str(plain), "--json"]).stdout)
    second = json.loads(run_cli(["estimate", str(mixed), "--json"]).stdout)
    assert first["rows"] == second["rows"] == 500
    assert first["prompt_tokens"] == second["prompt_tokens"]
    assert first["unused_columns"] == [{"name": "notes", "did_you_mean": None}]
