"""Bad input: a clear message and exit 2, or a row error, never a traceback.

The main case of each kind runs the real ``batchrun`` process (``faultkit.run_process`` asserts
no traceback on stdout or stderr); the many variants of a kind run in-process through click's
CliRunner with ``catch_exceptions=False``, where any traceback fails the test just the same.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from support.kit import by_id, journal, run_cli, run_process, write_job, write_manifest

from batchrun.emulator.server import EmulatorServer

MakeEmulator = Callable[..., EmulatorServer]


def run(manifest: Path, out: Path, server: EmulatorServer, *extra: str) -> (
        subprocess.CompletedProcess[str]):
    """The real process."""
    return run_process(["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
                        "--yes", *extra])


def run_inline(manifest: Path, out: Path, server: EmulatorServer, *extra: str) -> Result:
    """In-process; ``.output`` holds stderr too."""
    return run_cli(["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
                    "--yes", *extra])


# ---------------------------------------------------------------- JSONL rows


def test_bad_input_malformed_jsonl_lines(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "good-1", "prompt": "hello"}\n'
        '{not json at all\n'
        '{"id": "cut", "prompt": "unterminated\n'
        '[1, 2, 3]\n'
        '"just a string"\n'
        '{"prompt": "no id"}\n'
        '{"id": "good-2", "prompt": "hi"}\n'
    )
    out = tmp_path / "run"
    done = run(manifest, out, emulator)
    assert done.returncode == 1, done.stderr
    rows = by_id(out)
    assert rows["good-1"]["status"] == rows["good-2"]["status"] == "ok"
    errors = {row["id"]: row["error_message"] for row in rows.values() if row["status"] == "error"}
    assert errors["line-2"].startswith("line 2: invalid JSON")
    assert errors["line-3"].startswith("line 3: invalid JSON")
    assert errors["line-4"] == "line 4: expected a JSON object, got array"
    assert errors["line-5"] == "line 5: expected a JSON object, got string"
    assert errors["line-6"].startswith("line 6: missing `id`")
    assert emulator.stats.requests_total == 2  # bad rows are never sent
    assert "unsendable: line 2: invalid JSON" in done.stderr  # named in the estimate too


def test_bad_input_non_utf8_bytes(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b'{"id": "fine", "prompt": "ok"}\n'
        b'{"id": "latin1", "prompt": "caf\xe9 cr\xe8me"}\n'
        b'\xff\xfe{\x00"\x00i\x00d\x00"\x00\n'
        b'{"id": "fine-2", "prompt": "ok"}\n'
    )
    out = tmp_path / "run"
    done = run(manifest, out, emulator)
    assert done.returncode == 1, done.stderr
    rows = by_id(out)
    assert rows["line-2"]["error_message"] == "line 2: not valid UTF-8 (byte 0xe9 at column 32)"
    assert rows["line-3"]["error_message"] == "line 3: not valid UTF-8 (byte 0xff at column 1)"
    assert rows["fine"]["status"] == rows["fine-2"]["status"] == "ok"
    assert emulator.stats.requests_total == 2


def test_bad_input_line_of_100_mb(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.jsonl"
    with open(manifest, "wb") as handle:
        handle.write(b'{"id": "small", "prompt": "hello"}\n')
        handle.write(b'{"id": "huge", "prompt": "')
        block = b"lorem ipsum " * (1024 * 1024 // 12 + 1)
        for _ in range(100):
            handle.write(block[: 1024 * 1024])
        handle.write(b'"}\n{"id": "small-2", "prompt": "hi"}\n')
    assert manifest.stat().st_size > 100 * 1024 * 1024
    out = tmp_path / "run"
    done = run(manifest, out, emulator)
    assert done.returncode == 1, done.stderr
    rows = by_id(out)
    huge = rows["huge"]
    assert huge["status"] == "error" and huge["error_code"] == "context_length_exceeded"
    assert "1,000,000-token context window; not sent" in huge["error_message"]
    assert rows["small"]["status"] == rows["small-2"]["status"] == "ok"
    assert emulator.stats.requests_total == 2  # 100 MB never went on the wire
    assert "unsendable: huge: prompt of about" in done.stderr


def test_bad_input_wrong_types_in_rows(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.jsonl"
    lines = [
        {"id": "ok", "prompt": "fine"},
        {"id": 1.5, "prompt": "float id"},
        {"id": True, "prompt": "bool id"},
        {"id": "p", "prompt": 42},
        {"id": "m", "messages": "hello"},
        {"id": "md", "prompt": "x", "media": 5},
        {"id": "s", "prompt": "x", "system": ["a"]},
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "run"
    done = run(manifest, out, emulator)
    assert done.returncode == 1, done.stderr
    rows = by_id(out)
    assert rows["ok"]["status"] == "ok"
    assert rows["line-2"]["error_message"] == (
        "line 2: id must be a string or an integer, not number")
    assert rows["line-3"]["error_message"] == (
        "line 3: id must be a string or an integer, not boolean")
    assert rows["p"]["error_message"] == "line 4: prompt must be a string, not integer"
    assert "messages" in rows["m"]["error_message"]
    assert "media must be a path/URL string or a list of them, not integer" in (
        rows["md"]["error_message"])
    assert rows["s"]["error_message"] == "line 7: system must be a string, not array"
    assert emulator.stats.requests_total == 1


@pytest.mark.parametrize(("toml", "message"), [
    ('concurrency = "many"', "job field concurrency must be an integer, not 'many'"),
    ("stream = \"yes\"", "job field stream must be true or false, not 'yes'"),
    ("media_columns = 5", "job field media_columns must be a list of strings, not 5"),
    ("extra_body = 3", "job field extra_body must be a table, not 3"),
    ("max_attempts = 2.5", "job field max_attempts must be an integer, not 2.5"),
    ("read_timeout_s = -1", "read_timeout_s must be positive, not -1"),
    ("breaker_rate = 2", "breaker_rate must be in (0, 1], not 2"),
    ("model = [", "is not valid TOML"),
])
def test_bad_input_wrong_types_in_job_file(
    tmp_path: Path, emulator: EmulatorServer, toml: str, message: str
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 2)
    job = tmp_path / "job.toml"
    job.write_text(f"[job]\n{toml}\n")
    done = run_inline(manifest, tmp_path / "run", emulator, "--job", str(job))
    assert done.exit_code == 2, done.output
    assert message in done.output
    assert emulator.stats.requests_total == 0


# ---------------------------------------------------------------- Parquet


def parquet(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(("columns", "job_fields", "message"), [
    ({"prompt": pa.array(["a", "b"])}, {}, "has no `id` or `custom_id` column; columns: prompt"),
    ({"id": pa.array(["a", "b"]), "text": pa.array(["x", "y"])}, {},
     "no usable columns"),
    ({"id": pa.array(["a", "b"]), "title": pa.array(["x", "y"])},
     {"prompt_template": "Summarise {title} by {author}"},
     "the job names column(s) 'author', which it lacks; columns: id, title"),
], ids=["no-id", "no-prompt", "template-column"])
def test_bad_input_parquet_missing_columns(
    tmp_path: Path, emulator: EmulatorServer, columns: dict[str, pa.Array],
    job_fields: dict[str, str], message: str,
) -> None:
    manifest = parquet(tmp_path / "m.parquet", columns)
    job = write_job(tmp_path / "job.toml", **job_fields)
    done = run_inline(manifest, tmp_path / "run", emulator, "--job", str(job))
    assert done.exit_code == 2, done.output
    assert message in done.output and done.output.startswith("error: manifest")
    assert emulator.stats.requests_total == 0


@pytest.mark.parametrize(("columns", "message"), [
    ({"id": pa.array(["a"]), "prompt": pa.array([42], pa.int64())},
     "column 'prompt' has type int64; it must hold string values"),
    ({"id": pa.array([1.5]), "prompt": pa.array(["x"])},
     "column 'id' has type double; it must hold string or integer values"),
    ({"id": pa.array(["a"]), "prompt": pa.array(["x"]), "media": pa.array([3.0])},
     "column 'media' has type double; it must hold string or list values"),
], ids=["prompt-int", "id-float", "media-float"])
def test_bad_input_parquet_mistyped_columns(
    tmp_path: Path, emulator: EmulatorServer, columns: dict[str, pa.Array], message: str
) -> None:
    manifest = parquet(tmp_path / "m.parquet", columns)
    done = run_inline(manifest, tmp_path / "run", emulator)
    assert done.exit_code == 2, done.output
    assert message in done.output
    assert emulator.stats.requests_total == 0


def test_bad_input_parquet_that_is_not_parquet(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"id,prompt\na,hello\n")  # a CSV with the wrong name
    done = run(manifest, tmp_path / "run", emulator)
    assert done.returncode == 2, done.stderr
    assert "is not a readable Parquet file" in done.stderr
    assert emulator.stats.requests_total == 0


# ---------------------------------------------------------------- the manifest path


@pytest.mark.parametrize("kind", ["missing", "directory", "extension", "json-array"])
def test_bad_input_manifest_path_does_not_exist_or_is_wrong(
    tmp_path: Path, emulator: EmulatorServer, kind: str
) -> None:
    manifest = {
        "missing": tmp_path / "nowhere" / "m.jsonl",
        "directory": tmp_path,
        "extension": tmp_path / "m.xlsx",
        "json-array": tmp_path / "m.json",
    }[kind]
    if kind == "extension":
        manifest.write_text("id,prompt\n")  # a spreadsheet's CSV, saved under the wrong name
    if kind == "json-array":
        manifest.write_text('[{"id": "a", "prompt": "x"}]\n')
    # The commonest mistake runs as a real process, the others in-process.
    done = run(manifest, tmp_path / "run", emulator) if kind == "missing" else None
    inline = run_inline(manifest, tmp_path / "run", emulator)
    assert inline.exit_code == 2, inline.output
    if done is not None:
        assert done.returncode == 2 and done.stderr == inline.output
    expected = {
        "missing": f"error: manifest not found: {manifest}",
        "directory": f"error: manifest is a directory, not a file: {manifest}",
        "extension": "unknown extension '.xlsx'",
        "json-array": "starts with a JSON array; batchrun reads JSON Lines",
    }[kind]
    assert expected in inline.output
    assert emulator.stats.requests_total == 0
    assert not (tmp_path / "run" / "journal.jsonl").exists()


# ---------------------------------------------------------------- the output directory


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'}); "
                    "a real small filesystem is the only honest way to meet ENOSPC")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("size=64k")`` mounts a small filesystem under tmp_path (root only)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        where = tmp_path / f"fs{len(mounted)}"
        _mount_tmpfs(where, options)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_bad_input_unwritable_output_dir(
    tmp_path: Path, emulator: EmulatorServer, tmpfs: Callable[[str], Path]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only filesystem
        read_only = tmpfs("ro,size=64k")
    else:
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
    done = run(manifest, read_only / "run", emulator)
    assert done.returncode == 2, done.stderr
    assert f"error: cannot create run directory {read_only / 'run'}" in done.stderr
    assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    assert emulator.stats.requests_total == 0

    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    inline = run_inline(manifest, a_file / "run", emulator)
    assert inline.exit_code == 2 and "cannot create run directory" in inline.output
    assert emulator.stats.requests_total == 0


def test_bad_input_full_output_dir(
    tmp_path: Path, emulator: EmulatorServer, tmpfs: Callable[[str], Path]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    full = tmpfs("size=256k")
    (full / "run").mkdir()
    with open(full / "filler", "wb") as handle, pytest.raises(OSError):
        handle.write(b"\0" * (1024 * 1024))  # fill it up: ENOSPC
        handle.flush()
    done = run(manifest, full / "run", emulator)
    assert done.returncode == 2, done.stderr
    assert "No space left on device" in done.stderr or "full filesystem" in done.stderr
    assert "error: run directory" in done.stderr
    assert emulator.stats.requests_total == 0


def test_bad_input_nearly_full_output_dir_refused_before_sending(
    tmp_path: Path, emulator: EmulatorServer, tmpfs: Callable[[str], Path]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    small = tmpfs("size=512k")  # writable, but below the 1 MiB a run needs to start
    done = run_inline(manifest, small / "run", emulator)
    assert done.exit_code == 2, done.output
    assert "is on a full filesystem" in done.output and "nothing was sent" in done.output
    assert emulator.stats.requests_total == 0


def test_bad_input_output_dir_fills_midrun(
    tmp_path: Path, make_emulator: MakeEmulator, tmpfs: Callable[[str], Path]
) -> None:
    server = make_emulator()
    rows = 1000  # some 1.5 MiB of journal
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    fs = tmpfs("size=1100k")  # just above the 1 MiB a run needs to start
    out = fs / "run"
    done = run(manifest, out, server, "--concurrency", "16")
    assert done.returncode == 3, done.stderr
    assert "warning:" in done.stderr and "may need about" in done.stderr  # said up front
    assert "storage_error" in done.stderr and "No space left on device" in done.stderr
    assert f"--out {out}" in done.stderr  # the resume command
    recorded = [line for line in journal(out) if line["status"] == "ok"]
    assert 0 < len(recorded) < rows
    unrecorded = server.stats.billed_requests - len(recorded)
    if unrecorded:
        assert f"warning: {unrecorded:,} answers arrived but could not be written" in done.stderr

    subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], check=True)
    resumed = run(manifest, out, server)
    assert resumed.returncode == 0, resumed.stderr
    final = by_id(out)
    assert len(final) == rows and all(row["status"] == "ok" for row in final.values())
    # Paid twice: exactly the answers the first run said it could not keep, no others.
    assert sum(server.stats.billed_by_body.values()) == rows + unrecorded


def test_bad_input_fsync_refused_midrun_stops_like_a_failed_write(
    tmp_path: Path, make_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's fsync timer meeting a full disk (the index's buffered records, or the
    fsync itself): the run stops with the disk's message as after a failed write, never a
    traceback, and what it could not keep it says and sends again on resume."""
    server = make_emulator(latency_ms=40)
    rows = 200  # 200 rows x 40 ms / 4 in flight: 2 s, several turns of the 0.5 s timer
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread():  # the timer's thread
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", fsync)
        done = run_inline(manifest, out, server, "--concurrency", "4")
    assert done.exit_code == 3, done.output
    assert "storage_error" in done.output and "No space left on device" in done.output
    assert f"--out {out}" in done.output  # the resume command
    recorded = [line for line in journal(out) if line["status"] == "ok"]
    assert 0 < len(recorded) < rows
    unrecorded = server.stats.billed_requests - len(recorded)
    if unrecorded:
        assert f"warning: {unrecorded:,} answers arrived but could not be written" in done.output

    resumed = run_inline(manifest, out, server)
    assert resumed.exit_code == 0, resumed.output
    final = by_id(out)
    assert len(final) == rows and all(row["status"] == "ok" for row in final.values())
    # Paid twice: exactly the answers the first run said it could not keep, no others.
    assert sum(server.stats.billed_by_body.values()) == rows + unrecorded


def test_bad_input_results_file_unwritable_is_a_warning(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    out = tmp_path / "run"
    assert run_inline(manifest, out, emulator).exit_code == 0
    (out / "results.parquet").unlink()
    (out / "results.parquet").mkdir()  # os.replace cannot put the new file in its place
    (out / "results.parquet" / "keep").write_text("x")
    again = run_inline(manifest, out, emulator, "--quiet")
    assert again.exit_code == 0, again.output  # every row is done, in the journal
    assert (f"warning: cannot write {out / 'results.parquet'}: " in again.output
            and "; every finished row is in the journal: free space, then run the same "
                "command to write it\n" in again.output)
