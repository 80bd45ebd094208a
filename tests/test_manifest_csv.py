"""CSV manifests (finding 10 of issue 16: they were refused): the same rows as JSONL, streamed
block by block, every cell text, errors naming the row; then a real run over HTTP to the
emulator, its resume and its export joined back onto the CSV's columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.kit import by_id, run_cli

from batchrun.core.errors import InputError
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest import csv as csv_manifest
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import count_rows, iter_records, iter_rows, manifest_format
from batchrun.manifest.rows import Row

MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Which colour?"},
                                          {"type": "image_url", "image_url": {"url": "c.png"}}]}]
BODY = {"model": "gemini-3.1-pro", "messages": [{"role": "user", "content": "Name a prime."}],
        "max_tokens": 20}


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def comparable(row: Row) -> tuple[Any, ...]:
    """What a row sends and why it cannot (not its extra columns, whose empties differ; an
    error without its "line 5" / "row 5", which the row's ``line`` holds)."""
    return (row.id, row.line, row.messages, row.prompt, row.system, row.media,
            dict(row.body) if row.body else None, row.error and row.error.split(": ", 1)[1])


def test_csv_rows_are_the_rows_jsonl_gives(tmp_path: Path) -> None:
    header = ["id", "custom_id", "prompt", "system", "media", "messages", "method", "url", "body"]
    cells = [
        ["007", "", "Hello, world.\nSecond line, with commas.", "Be brief.", "", "", "", "", ""],
        ["8", "", "Describe.", "", "a.png", "", "", "", ""],
        ["9", "", "", "", "", json.dumps(MESSAGES), "", "", ""],
        ["", "batch-1", "", "", "", "", "POST", "/v1/chat/completions", json.dumps(BODY)],
        ["11", "", "", "", "", "", "", "", ""],  # nothing to send
        ["12", "", "", "", "c.png", "", "", "", ""],  # media alone
    ]
    as_jsonl = [
        {"id": "007", "prompt": "Hello, world.\nSecond line, with commas.", "system": "Be brief."},
        {"id": "8", "prompt": "Describe.", "media": "a.png"},
        {"id": "9", "prompt": "", "messages": MESSAGES},
        {"custom_id": "batch-1", "method": "POST", "url": "/v1/chat/completions", "body": BODY},
        {"id": "11", "prompt": ""},
        {"id": "12", "prompt": "", "media": "c.png"},
    ]
    from_csv = list(iter_rows(write_csv(tmp_path / "m.csv", header, cells), JobSpec()))
    from_jsonl = list(iter_rows(write_jsonl(tmp_path / "m.jsonl", as_jsonl), JobSpec()))
    # The same shapes, the same errors (a JSONL line number is a CSV row number here).
    assert [comparable(row) for row in from_csv] == [comparable(row) for row in from_jsonl]
    assert from_csv[0].id == "007"  # text, never inferred as the number 7
    assert from_csv[4].error == "row 5: prompt is empty and the row has no media"
    assert manifest_format(tmp_path / "M.CSV") == "csv"
    assert count_rows(tmp_path / "m.csv") == 6  # a quoted line break does not make a row


def test_csv_template_and_media_columns(tmp_path: Path) -> None:
    job = JobSpec(prompt_template="Summarise {title}: {text}{notes}", media_columns=("cover",))
    path = write_csv(tmp_path / "m.csv", ["id", "title", "text", "notes", "cover"], [
        ["a", "Tides", "Two a day.", "", "covers/a.png"],
        ["b", "Frost", "Autumn.", " (short)", ""],
    ])
    first, second = iter_rows(path, job)
    # An empty cell in a column the template reads is empty text, not a missing value.
    assert (first.prompt, first.media) == ("Summarise Tides: Two a day.", ("covers/a.png",))
    assert (second.prompt, second.media) == ("Summarise Frost: Autumn. (short)", ())
    with pytest.raises(InputError, match=r"the job names column\(s\) 'summary'"):
        iter_rows(path, JobSpec(prompt_template="{summary}"))


def test_csv_row_errors_and_duplicate_ids_name_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"id,prompt\nr1,fine\nr2,caf\xe9 in latin-1\nr1,again\n")
    with pytest.raises(InputError, match="duplicate id 'r1' on rows 1 and 3"):
        list(iter_rows(path, JobSpec()))
    rows = list(iter_rows(path, JobSpec(), check_duplicates=False))
    assert rows[1].id == "r2"
    assert rows[1].error == "row 2: column(s) 'prompt' not valid UTF-8"
    assert rows[0].error is None and rows[2].error is None


@pytest.mark.parametrize(("content", "message"), [
    (b"id,prompt\n1,a\n2,b,c\n", "row 2 has 3 cells where the header has 2: '2,b,c' (quote a "
                                 "cell that holds a comma"),
    (b"id,prompt,id\n1,a,b\n", "column(s) 'id' appear more than once in the header"),
    (b"name,text\nx,y\n", "has no `id` or `custom_id` column; columns: name, text"),
    (b"id,text\n1,y\n", "no usable columns"),
    (b"", "is not a readable CSV file: Empty CSV file"),
])
def test_csv_file_errors_stop_before_any_row(tmp_path: Path, content: bytes,
                                             message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        list(iter_rows(path, JobSpec()))
    assert message in raised.value.message


def test_csv_streams_in_blocks_and_skips_rows_marked_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "m.csv", ["id", "prompt"],
                     [[f"r{n}", f"question {n}\nover two lines"] for n in range(1, 301)])
    monkeypatch.setattr(csv_manifest, "BLOCK_BYTES", 512)  # many batches, rows across edges
    batches = list(csv_manifest._Reading(path, ["id", "prompt"]).open())
    assert len(batches) > 10
    done = bytearray(301)
    for row in (*range(1, 120), 150, 151, 299, 300):
        done[row] = 1
    rows = list(iter_rows(path, JobSpec(), check_duplicates=False, done_lines=bytes(done)))
    assert [row.line for row in rows] == [n for n in range(1, 301) if not done[n]]
    assert all(row.id == f"r{row.line}" and row.prompt == f"question {row.line}\nover two lines"
               for row in rows)


def test_csv_manifest_runs_resumes_and_exports_with_its_columns(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_csv(tmp_path / "m.csv", ["id", "prompt", "lang"], [
        [f"{n:03d}", f"Say hello, number {n}.", "en" if n % 2 else "fr"] for n in range(1, 21)
    ] + [["bad", "", "en"]])
    estimate = run_cli(["estimate", str(manifest), "--json"])
    assert estimate.exit_code == 0, estimate.output
    assert json.loads(estimate.output)["rows_unsendable"] == 1

    out = tmp_path / "run"
    first = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                     "--quiet"])
    assert first.exit_code == 1, first.output  # one row cannot be sent
    rows = by_id(out)
    assert [row["status"] for row in rows.values()].count("ok") == 20
    assert list(rows)[:2] == ["001", "002"] and rows["bad"]["status"] == "error"
    sent = emulator.stats.requests_total
    assert sent == 20

    again = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                     "--quiet"])
    assert again.exit_code == 1, again.output
    assert emulator.stats.requests_total == sent  # a resume sends none of the done rows

    joined = tmp_path / "joined.parquet"
    exported = run_cli(["export", str(out), "--output", str(joined), "--with-input"])
    assert exported.exit_code == 0, exported.output
    table = pq.read_table(joined).to_pylist()
    assert [(row["id"], row["lang"], row["prompt"]) for row in table[:2]] == [
        ("001", "en", "Say hello, number 1."), ("002", "fr", "Say hello, number 2.")]
    assert [record for _, record in iter_records(manifest)][0]["id"] == "001"
