"""Manifest readers: every row shape, every row error with its line, file-level input errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import count_rows, iter_rows, manifest_fingerprint, manifest_format
from batchrun.manifest.rows import Row

JOB = JobSpec()


def write_jsonl(path: Path, *lines: Any) -> Path:
    """Objects are dumped as JSON; bytes and str are written as they are."""
    out = bytearray()
    for line in lines:
        if isinstance(line, bytes):
            out += line
        elif isinstance(line, str):
            out += line.encode()
        else:
            out += orjson.dumps(line)
        out += b"\n"
    path.write_bytes(bytes(out))
    return path


def rows_of(path: Path, job: JobSpec = JOB, **kwargs: Any) -> list[Row]:
    return list(iter_rows(path, job, **kwargs))


def one(path: Path, job: JobSpec = JOB) -> Row:
    rows = rows_of(path, job)
    assert len(rows) == 1
    return rows[0]


# ------------------------------------------------------------------ shapes


def test_prompt_shape(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        {"id": 7, "prompt": "Hi", "system": "Be brief", "media": ["a.png", "https://x/b.jpg"],
         "lang": "en"},
    )
    row = one(path)
    assert row == Row(id="7", line=1, prompt="Hi", system="Be brief",
                      media=("a.png", "https://x/b.jpg"), fields={"lang": "en"})


def test_prompt_single_media_string_and_custom_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", {"custom_id": "c1", "prompt": "x", "media": "a.pdf"})
    row = one(path)
    assert (row.id, row.media, row.error) == ("c1", ("a.pdf",), None)


def test_empty_prompt_allowed_only_with_media(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", {"id": "a", "prompt": "", "media": "a.png"},
                       {"id": "b", "prompt": "  "})
    ok, bad = rows_of(path)
    assert ok.error is None and ok.media == ("a.png",)
    assert bad.error == "line 2: prompt is empty and the row has no media"


def test_messages_shape(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [
            {"type": "text", "text": "what?"},
            {"type": "image_url", "image_url": {"url": "img/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": "https://x/y.png"},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", {"id": "m1", "messages": messages, "tag": 1})
    row = one(path)
    assert row.error is None
    assert row.messages == tuple(messages)
    assert row.media == ("img/a.png", "https://x/y.png")
    assert row.fields == {"tag": 1}
    assert row.prompt is None and row.body is None


def test_messages_as_json_string(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "hi"}]
    as_text = orjson.dumps(messages).decode()
    path = write_jsonl(tmp_path / "m.jsonl", {"id": "m", "messages": as_text})
    assert one(path).messages == tuple(messages)


def test_openai_batch_line(tmp_path: Path) -> None:
    body: dict[str, Any] = {"model": "gemini-3.1-pro",
                            "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    path = write_jsonl(
        tmp_path / "b.jsonl",
        {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": body},
        {"custom_id": "req-2", "body": body},  # method/url may be left out
    )
    first, second = rows_of(path)
    assert first.id == "req-1" and first.body == body and first.error is None
    assert first.messages == tuple(body["messages"])
    assert first.fields == {}
    assert second.error is None


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ({"custom_id": "r", "method": "GET", "url": "/v1/chat/completions",
          "body": {"messages": [{"role": "user", "content": "x"}]}},
         "line 1: method must be POST, not 'GET'"),
        ({"custom_id": "r", "method": "POST", "url": "/v1/embeddings",
          "body": {"messages": [{"role": "user", "content": "x"}]}},
         "line 1: url must end with /chat/completions"),
        ({"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": {}},
         "line 1: body has no `messages`"),
        ({"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": "{oops"},
         "line 1: body is a string but not valid JSON"),
        ({"custom_id": "r", "method": "POST", "url": "/v1/chat/completions",
          "body": {"messages": "nope"}},
         "line 1: body.messages is a string but not valid JSON"),
    ],
)
def test_batch_line_errors(tmp_path: Path, line: dict[str, Any], error: str) -> None:
    row = one(write_jsonl(tmp_path / "b.jsonl", line))
    assert row.id == "r"
    assert row.error is not None and row.error.startswith(error)


def test_text_body_column_is_not_a_batch_line(tmp_path: Path) -> None:
    job = JobSpec(prompt_template="Summarise {url}: {body}")
    path = write_jsonl(tmp_path / "m.jsonl", {"id": 1, "url": "https://a", "body": "text"})
    row = one(path, job)
    assert row.prompt == "Summarise https://a: text" and row.body is None


def test_prompt_template_and_media_columns(tmp_path: Path) -> None:
    job = JobSpec(prompt_template="Title: {title}\n{prompt!r} {n:03d}",
                  media_columns=("cover", "pages"))
    path = write_jsonl(
        tmp_path / "m.jsonl",
        {"id": 1, "title": "T", "prompt": "p", "n": 5, "cover": "c.png",
         "pages": ["p1.pdf", "p2.pdf"], "system": "S"},
        {"id": 2, "title": "U", "prompt": "q", "n": 6, "cover": None, "pages": []},
    )
    first, second = rows_of(path, job)
    assert first.prompt == "Title: T\n'p' 005"
    assert first.system == "S"
    assert first.media == ("c.png", "p1.pdf", "p2.pdf")
    assert first.fields["title"] == "T" and "id" not in first.fields
    assert second.error is None and second.media == ()


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"id": 1, "n": 1}, "line 1: prompt_template needs column 'title', which this row lacks"),
        ({"id": 1, "title": None, "n": 1},
         "line 1: prompt_template needs column 'title', which is null in this row"),
        ({"id": 1, "title": "t", "n": "x"}, "line 1: prompt_template could not be filled"),
        ({"id": 1, "title": "t", "n": 1, "img": 3},
         "line 1: img must be a path/URL string or a list of them, not integer"),
        ({"id": 1, "title": "t", "n": 1, "img": ["a.png", 4]},
         "line 1: img[1] must be a path or URL string, not integer"),
    ],
)
def test_template_row_errors(tmp_path: Path, record: dict[str, Any], error: str) -> None:
    job = JobSpec(prompt_template="{title} {n:d}", media_columns=("img",))
    record.setdefault("img", None)
    row = one(write_jsonl(tmp_path / "m.jsonl", record), job)
    assert row.id == "1"
    assert row.error is not None and row.error.startswith(error)


def test_missing_media_column_is_a_row_error(tmp_path: Path) -> None:
    job = JobSpec(media_columns=("img",))
    row = one(write_jsonl(tmp_path / "m.jsonl", {"id": 1, "prompt": "x"}), job)
    assert row.error == "line 1: media column 'img' is missing"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{unclosed", "prompt_template is not a valid format string"),
        ("positional {}", "positional field"),
        ("index {0}", "positional field"),
        ("{a!x}", "unknown conversion"),
    ],
)
def test_bad_template_is_an_input_error(tmp_path: Path, template: str, message: str) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", {"id": 1, "a": "x"})
    with pytest.raises(InputError, match=message):
        iter_rows(path, JobSpec(prompt_template=template))


# ------------------------------------------------------------------ row errors


@pytest.mark.parametrize(
    ("record", "row_id", "error"),
    [
        ({"prompt": "x"}, "line-3", "line 3: missing `id` (or `custom_id`)"),
        ({"id": 1.5, "prompt": "x"}, "line-3", "line 3: id must be a string or an integer, "
                                                "not number"),
        ({"id": True, "prompt": "x"}, "line-3", "line 3: id must be a string or an integer, "
                                                 "not boolean"),
        ({"id": " ", "prompt": "x"}, "line-3", "line 3: id is empty"),
        ({"id": "a"}, "a", "line 3: no content: a row needs `messages`, or `prompt`"),
        ({"id": "a", "prompt": 5}, "a", "line 3: prompt must be a string, not integer"),
        ({"id": "a", "prompt": "x", "system": 1}, "a", "line 3: system must be a string, "
                                                       "not integer"),
        ({"id": "a", "prompt": "x", "media": {"p": 1}}, "a", "line 3: media must be a path/URL"),
        ({"id": "a", "messages": {"role": "user"}}, "a", "line 3: messages must be a list of "
                                                         "messages, not object"),
        ({"id": "a", "messages": []}, "a", "line 3: messages is empty"),
        ({"id": "a", "messages": ["hi"]}, "a", "line 3: messages[0] must be an object"),
        ({"id": "a", "messages": [{"content": "x"}]}, "a",
         "line 3: messages[0].role must be a non-empty string, not null"),
        ({"id": "a", "messages": [{"role": "user"}]}, "a", "line 3: messages[0].content is "
                                                           "missing"),
        ({"id": "a", "messages": [{"role": "user", "content": 3}]}, "a",
         "line 3: messages[0].content must be a string or a list of parts, not integer"),
        ({"id": "a", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "a",
         "line 3: messages[0].content[0].type must be a string, not null"),
        ({"id": "a", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "a",
         "line 3: messages[0].content[0].text must be a string, not null"),
        ({"id": "a", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {}}]}]}, "a",
         "line 3: messages[0].content[0].image_url.url must be a URL or path string"),
        ({"id": "a", "messages": [{"role": "user", "content": "x"}], "media": ["a.png"]}, "a",
         "line 3: `media` goes with `prompt`"),
    ],
)
def test_row_errors_name_field_and_line(
    tmp_path: Path, record: dict[str, Any], row_id: str, error: str
) -> None:
    # Line 2 is blank: line numbers stay true to the file.
    path = write_jsonl(tmp_path / "m.jsonl", {"id": "ok", "prompt": "fine"}, "", record)
    ok, row = rows_of(path)
    assert ok.error is None
    assert row.id == row_id and row.line == 3
    assert row.error is not None and row.error.startswith(error), row.error


def test_invalid_json_non_utf8_and_non_objects(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        {"id": "a", "prompt": "x"},
        b'{"id": "b", "prompt": "caf\xe9"}',
        "{not json",
        "   ",
        "42",
        '["an", "array"]',
        {"id": "c", "prompt": "y"},
    )
    rows = rows_of(path)
    assert [r.id for r in rows] == ["a", "line-2", "line-3", "line-5", "line-6", "c"]
    assert rows[1].error == "line 2: not valid UTF-8 (byte 0xe9 at column 27)"
    assert rows[2].error is not None and rows[2].error.startswith("line 3: invalid JSON (")
    assert rows[3].error == "line 5: expected a JSON object, got integer"
    assert rows[4].error == "line 6: expected a JSON object, got array"
    assert rows[5].line == 7 and rows[5].error is None


def test_blank_lines_crlf_bom_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id":"a","prompt":"x"}\r\n\r\n\n  \t\n{"id":"b","prompt":"y"}')
    rows = rows_of(path)
    assert [(r.id, r.line, r.error) for r in rows] == [("a", 1, None), ("b", 5, None)]
    assert count_rows(path) == 2


def test_json_array_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('\n[{"id": 1, "prompt": "x"}]\n')
    with pytest.raises(InputError, match="JSON array; batchrun reads JSON Lines"):
        rows_of(path)


def test_very_long_line_is_just_a_row(tmp_path: Path) -> None:
    big = "x" * (20 * 1024 * 1024)
    path = write_jsonl(tmp_path / "m.jsonl", {"id": "big", "prompt": big}, {"id": "next",
                                                                            "prompt": "y"})
    first, second = rows_of(path)
    assert first.id == "big" and first.prompt is not None and len(first.prompt) == len(big)
    assert second.line == 2 and second.error is None


def test_line_over_the_limit_is_a_row_error_and_reading_goes_on(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        {"id": "a", "prompt": "x"},
        {"id": "big", "prompt": "y" * 5_000_000},
        {"id": "c", "prompt": "z"},
    )
    rows = rows_of(path, max_line_bytes=1_000_000)
    assert [(r.id, r.line) for r in rows] == [("a", 1), ("line-2", 2), ("c", 3)]
    assert rows[1].error == "line 2: longer than 1,000,000 bytes; put media in files and give " \
                            "their paths"


# ------------------------------------------------------------------ duplicates and streaming


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        {"id": "a", "prompt": "x"},
        {"id": 2, "prompt": "x"},
        "",
        {"custom_id": "2", "prompt": "x"},
    )
    with pytest.raises(InputError) as info:
        rows_of(path)
    assert info.value.message == "duplicate id '2' on lines 2 and 4"
    assert len(rows_of(path, check_duplicates=False)) == 3


def test_rows_stream_lazily(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        *({"id": i, "prompt": "x"} for i in range(1000)),
        {"id": 0, "prompt": "dup at the end"},
    )
    rows = iter_rows(path, JOB)
    first = [next(rows) for _ in range(3)]
    assert [r.id for r in first] == ["0", "1", "2"]
    with pytest.raises(InputError, match="lines 1 and 1001"):
        list(rows)


def test_many_rows_unique(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(b'{"id":"r%d","prompt":"p"}\n' % i for i in range(50_000)))
    assert sum(1 for _ in iter_rows(path, JOB)) == 50_000
    assert count_rows(path) == 50_000


# ------------------------------------------------------------------ files


def test_file_level_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest not found"):
        iter_rows(tmp_path / "none.jsonl", JOB)
    with pytest.raises(InputError, match="unknown extension '.xlsx'; use .jsonl, .json, "
                                         ".ndjson, .parquet, .csv"):
        iter_rows(tmp_path / "m.xlsx", JOB)
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        iter_rows(tmp_path / "d.jsonl", JOB)
    with pytest.raises(InputError, match="manifest not found"):
        manifest_fingerprint(tmp_path / "none.jsonl")
    with pytest.raises(InputError, match="manifest not found"):
        count_rows(tmp_path / "none.parquet")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_manifest(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", {"id": 1, "prompt": "x"})
    path.chmod(0)
    with pytest.raises(InputError, match="cannot be read"):
        iter_rows(path, JOB)


def test_manifest_format_by_extension() -> None:
    assert manifest_format(Path("a.JSONL")) == "jsonl"
    assert manifest_format(Path("a.ndjson")) == "jsonl"
    assert manifest_format(Path("a.json")) == "jsonl"
    assert manifest_format(Path("a.parquet")) == "parquet"
    assert manifest_format(Path("a.csv")) == "csv"


def test_fingerprint_is_stable_and_tracks_bytes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    data = b"".join(b'{"id":%d,"prompt":"p"}\n' % i for i in range(100_000))  # > one chunk
    path.write_bytes(data)
    first = manifest_fingerprint(path)
    assert first == manifest_fingerprint(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data + b"\n")
    assert manifest_fingerprint(path) != first


def test_count_rows_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    long_line = b'{"id":1,"prompt":"' + b"x" * 3_000_000 + b'"}'
    path.write_bytes(long_line + b"\n\n" + b" " * 2_000_000 + b"\n" + long_line)
    assert count_rows(path) == 2


# ------------------------------------------------------------------ Parquet


def write_parquet(path: Path, table: pa.Table, row_group_size: int | None = None) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_prompt_rows_across_batches(tmp_path: Path) -> None:
    table = pa.table({
        "id": pa.array(range(1, 8), pa.int64()),
        "prompt": ["a", "b", None, "d", "e", "f", "g"],
        "media": [["x.png"], None, None, [], ["y.pdf", "https://z"], None, None],
        "lang": ["en"] * 7,
    })
    path = write_parquet(tmp_path / "m.parquet", table, row_group_size=3)
    rows = rows_of(path, batch_size=2)
    assert [r.line for r in rows] == list(range(1, 8))
    assert [r.id for r in rows] == [str(i) for i in range(1, 8)]
    assert rows[0].media == ("x.png",) and rows[0].fields == {"lang": "en"}
    assert rows[2].error is not None and rows[2].error.startswith("row 3: no content")
    assert rows[4].media == ("y.pdf", "https://z")
    assert count_rows(path) == 7


def test_parquet_messages_list_of_structs_and_json_strings(tmp_path: Path) -> None:
    part = pa.struct([("type", pa.string()), ("text", pa.string()),
                      ("image_url", pa.struct([("url", pa.string())]))])
    message = pa.struct([("role", pa.string()), ("content", pa.list_(part))])
    messages = pa.array(
        [[{"role": "user", "content": [{"type": "text", "text": "hi"},
                                       {"type": "image_url", "image_url": {"url": "a.png"}}]}]],
        pa.list_(message),
    )
    path = write_parquet(tmp_path / "m.parquet", pa.table({"id": ["s"], "messages": messages}))
    row = one(path)
    assert row.error is None
    # Absent struct fields come back as None from Arrow; they are dropped, not sent as null.
    assert row.messages == ({"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "a.png"}}]},)
    assert row.media == ("a.png",)

    as_json = pa.table({"id": ["j", "k"], "messages": [
        orjson.dumps([{"role": "user", "content": "x"}]).decode(), "[oops"]})
    good, bad = rows_of(write_parquet(tmp_path / "j.parquet", as_json))
    assert good.messages == ({"role": "user", "content": "x"},)
    assert bad.error is not None and bad.error.startswith("row 2: messages is a string but not")


def test_parquet_batch_body_struct(tmp_path: Path) -> None:
    body = pa.array([{"model": "m", "messages": [{"role": "user", "content": "x"}]}])
    table = pa.table({"custom_id": ["b1"], "method": ["POST"], "url": ["/v1/chat/completions"],
                      "body": body})
    row = one(write_parquet(tmp_path / "b.parquet", table))
    assert row.error is None and row.body == {"model": "m",
                                              "messages": [{"role": "user", "content": "x"}]}


def test_parquet_template(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b"], "title": ["T", None], "img": ["p.png", None]})
    job = JobSpec(prompt_template="About {title}", media_columns=("img",))
    first, second = rows_of(write_parquet(tmp_path / "t.parquet", table), job)
    assert (first.prompt, first.media) == ("About T", ("p.png",))
    assert second.error == "row 2: prompt_template needs column 'title', which is null in " \
                           "this row"


@pytest.mark.parametrize(
    ("columns", "job", "message"),
    [
        ({"prompt": ["x"]}, JOB, "no `id` or `custom_id` column; columns: prompt"),
        ({"id": ["a"], "note": ["x"]}, JOB, "no usable columns"),
        ({"id": ["a"], "prompt": pa.array([1], pa.int64())}, JOB,
         "column 'prompt' has type int64; it must hold string values"),
        ({"id": pa.array([1.0]), "prompt": ["x"]}, JOB, "column 'id' has type double"),
        ({"id": ["a"], "messages": pa.array([1])}, JOB, "column 'messages' has type int64"),
        ({"id": ["a"], "t": ["x"]}, JobSpec(prompt_template="{title}"),
         "column(s) 'title', which it lacks"),
        ({"id": ["a"], "prompt": ["x"]}, JobSpec(media_columns=("img",)),
         "column(s) 'img', which it lacks"),
        ({"id": ["a"], "prompt": ["x"], "img": pa.array([1])}, JobSpec(media_columns=("img",)),
         "media column 'img' has type int64"),
    ],
)
def test_parquet_unusable_columns(
    tmp_path: Path, columns: dict[str, Any], job: JobSpec, message: str
) -> None:
    path = write_parquet(tmp_path / "m.parquet", pa.table(columns))
    with pytest.raises(InputError) as info:
        iter_rows(path, job)
    assert message in info.value.message


def test_parquet_duplicates_and_corrupt_file(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "a"], "prompt": ["x", "y", "z"]})
    path = write_parquet(tmp_path / "m.parquet", table, row_group_size=1)
    with pytest.raises(InputError, match="duplicate id 'a' on rows 1 and 3"):
        rows_of(path, batch_size=1)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        iter_rows(broken, JOB)
    with pytest.raises(InputError, match="not a readable Parquet file"):
        count_rows(broken)


def test_parquet_row_level_type_errors(tmp_path: Path) -> None:
    # An all-null id column has type null: every row is an error naming its row number.
    table = pa.table({"id": pa.array([None, None], pa.null()), "prompt": ["x", "y"]})
    rows = rows_of(write_parquet(tmp_path / "m.parquet", table))
    assert [(r.id, r.error) for r in rows] == [
        ("row-1", "row 1: missing `id` (or `custom_id`)"),
        ("row-2", "row 2: missing `id` (or `custom_id`)"),
    ]


class _SameHash(str):
    """An id whose hash collides with every other: the rescan must tell them apart."""

    def __hash__(self) -> int:
        return 1


def test_hash_collisions_are_not_duplicates() -> None:
    from batchrun.manifest.reader import _check_unique

    def rows() -> Any:
        yield from (Row(id=_SameHash(name), line=n) for n, name in enumerate("abca", start=1))

    checked = _check_unique(rows(), rescan=rows, unit="lines")
    assert [r.id for r in (next(checked), next(checked), next(checked))] == ["a", "b", "c"]
    with pytest.raises(InputError, match="duplicate id 'a' on lines 1 and 4"):
        next(checked)
