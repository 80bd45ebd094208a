"""The API key never lands in RUN_DIR, the output or the Parquet metadata, however runs fail;
a plain-http endpoint off this machine is warned about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from support.kit import KEY, run_process, write_job, write_manifest

from batchrun.api.endpoint_check import is_loopback_host, plain_http_warning
from batchrun.emulator.server import EmulatorServer

MakeEmulator = Callable[..., EmulatorServer]
# A key the gateway refuses (no sk- prefix) but still quotes back in its 401 message.
BAD_KEY = "pk-faultkit-0d9e8c7b6a5f4e3d2c1b"


def leaks(secret: str, run_dirs: list[Path], outputs: dict[str, str]) -> list[str]:
    """Where ``secret`` (or its distinctive middle) appears: files, Parquet cells and
    metadata (decompressed), captured output."""
    needles = [secret, secret[3:-4]]  # the middle too: a masked key keeps only its last 4
    found: list[str] = []

    def check(where: str, text: str) -> None:
        if any(needle in text for needle in needles):
            found.append(where)

    for run_dir in run_dirs:
        for path in sorted(run_dir.rglob("*")):
            if not path.is_file():
                continue
            check(str(path), path.read_bytes().decode("utf-8", "replace"))
            if path.suffix == ".parquet":
                parquet = pq.ParquetFile(path)
                for key, value in (parquet.metadata.metadata or {}).items():
                    check(f"{path} metadata {key!r}", value.decode("utf-8", "replace"))
                table = parquet.read()
                for column in table.column_names:
                    for value in table.column(column).to_pylist():
                        if isinstance(value, str):
                            check(f"{path} column {column}", value)
    for name, text in outputs.items():
        check(name, text)
    return found


def test_key_never_written_after_runs_that_failed_in_every_way(
    tmp_path: Path, make_emulator: MakeEmulator
) -> None:
    # Every fault at once, a gateway that quotes the key back in its 401s, then: revoked,
    # out of credits, a job the gateway refuses (the breaker), a key it does not accept.
    server = make_emulator(
        fail_503=0.04, fail_500=0.04, drop_rate=0.08, fail_429=0.02, retry_after="garbage",
        fail_502=0.04, not_json_rate=0.04, no_usage_rate=0.04, stall_rate=0.02, stall_s=0.6,
        early_eof_rate=0.04, echo_key=True, revoke_after=40, seed=11,
    )
    # The emulator really does quote the key: without batchrun's care it would leak.
    raw = httpx.post(f"{server.base_url}/chat/completions", json={},
                     headers={"Authorization": f"Bearer {BAD_KEY}"})
    assert BAD_KEY in raw.text

    manifest = write_manifest(tmp_path / "m.jsonl", 80)
    job = write_job(tmp_path / "job.toml", concurrency=8, max_attempts=4, read_timeout_s=0.2)
    out = tmp_path / "run"
    base = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url, "--yes"]
    outputs: dict[str, str] = {}

    revoked = run_process(base)  # key from the environment
    assert revoked.returncode == 3, revoked.stderr
    assert "invalid_api_key" in revoked.stderr and "sk-…a8e1" in revoked.stderr  # masked
    outputs |= {"revoked stdout": revoked.stdout, "revoked stderr": revoked.stderr}

    server.config.revoke_after = None
    server.config.balance = 2.0
    broke = run_process([*base, "--api-key", KEY, "--json", "--ignore-balance"],
                        key=None)  # the key on the command line this time
    assert broke.returncode == 3, broke.stderr
    assert "insufficient_credits" in broke.stderr and "--api-key" not in broke.stderr
    outputs |= {"402 stdout": broke.stdout, "402 stderr": broke.stderr}

    server.config.balance = None
    refused_job = write_job(tmp_path / "refused.toml", concurrency=4,
                            extra_body={"reasoning_effort": "medium"})
    other = tmp_path / "refused-run"
    tripped = run_process(["run", str(manifest), "--job", str(refused_job), "--out", str(other),
                           "--endpoint", server.base_url, "--yes"])
    assert tripped.returncode == 3 and "circuit breaker" in tripped.stderr, tripped.stderr
    outputs |= {"breaker stdout": tripped.stdout, "breaker stderr": tripped.stderr}

    bad_key_run = tmp_path / "bad-key-run"
    refused = run_process(["run", str(manifest), "--job", str(job), "--out", str(bad_key_run),
                           "--endpoint", server.base_url, "--yes"], key=BAD_KEY)
    assert refused.returncode == 3 and "invalid_api_key" in refused.stderr, refused.stderr
    outputs |= {"bad key stdout": refused.stdout, "bad key stderr": refused.stderr}

    status = run_process(["status", str(out), "--json"])
    outputs |= {"status": status.stdout + status.stderr}
    exported = tmp_path / "export.jsonl"
    run_process(["export", str(out), "--output", str(exported)])
    outputs |= {"export": exported.read_text()}

    assert (out / "results.parquet").exists() and (other / "results.parquet").exists()
    assert server.stats.faults["revoked"] > 0 and server.stats.faults["no_credits"] > 0
    assert leaks(KEY, [out, other, bad_key_run], outputs) == []
    assert leaks(BAD_KEY, [bad_key_run], outputs) == []


def test_leak_scanner_finds_a_planted_key(tmp_path: Path) -> None:
    import pyarrow as pa

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    table = pa.table({"id": ["a"]}).replace_schema_metadata({b"job": f"key={KEY}".encode()})
    pq.write_table(table, run_dir / "results.parquet", compression="zstd")
    assert f"{run_dir / 'results.parquet'} metadata b'job'" in leaks(KEY, [run_dir], {})
    (run_dir / "journal.jsonl").write_text(f'{{"error_message": "bad key {KEY[:-4]}xxxx"}}\n')
    found = leaks(KEY, [run_dir], {"stderr": "masked sk-…a8e1 is fine"})
    assert str(run_dir / "journal.jsonl") in found and "stderr" not in found


# ---------------------------------------------------------------- plain http


@pytest.mark.parametrize("endpoint", [
    "http://127.0.0.1:8787/v1", "http://127.4.5.6/v1", "http://localhost:9/v1",
    "http://LOCALHOST./v1", "http://api.localhost/v1", "http://[::1]:8787/v1",
    "http://[::ffff:127.0.0.1]/v1", "https://api.aivideoapi.ai/v1", "https://10.0.0.5/v1",
])
def test_no_warning_for_loopback_or_https(endpoint: str) -> None:
    assert plain_http_warning(endpoint) is None


@pytest.mark.parametrize("endpoint", [
    "http://api.aivideoapi.ai/v1", "http://10.0.0.5:8080/v1", "http://192.168.1.20/v1",
    "http://0.0.0.0:8787/v1", "http://[2001:db8::1]/v1", "HTTP://Example.COM/v1",
    "http://128.0.0.1/v1",
])
def test_warning_for_plain_http_off_this_machine(endpoint: str) -> None:
    warning = plain_http_warning(endpoint)
    assert warning is not None and "plain http" in warning and "use https" in warning


def test_warning_never_repeats_credentials_of_the_endpoint() -> None:
    warning = plain_http_warning("http://user:s3cret@proxy.corp:8080/v1")
    assert warning is not None and "s3cret" not in warning and "proxy.corp:8080" in warning


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.255.255.254") and is_loopback_host("::1")
    assert not is_loopback_host("127.example.com") and not is_loopback_host("")


def test_plain_http_endpoint_to_a_remote_host_warns_on_stderr(tmp_path: Path) -> None:
    # Every row is unsendable, so the run is refused before anything is sent anywhere (exit
    # 2): the warning comes first regardless.
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a"}\n{"id": "b"}\n')
    done = run_process(["run", str(manifest), "--out", str(tmp_path / "run"),
                        "--endpoint", "http://203.0.113.7:8080/v1", "--yes"])
    assert done.returncode == 2, done.stderr
    assert ("warning: --endpoint http://203.0.113.7:8080/v1 is plain http to 203.0.113.7: the "
            "API key and every prompt and answer cross the network unencrypted; use https"
            ) in done.stderr
    assert "warning" not in done.stdout


def test_plain_http_to_loopback_does_not_warn(tmp_path: Path, emulator: EmulatorServer) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 2)
    endpoint = emulator.base_url.replace("127.0.0.1", "localhost")
    done = run_process(["run", str(manifest), "--out", str(tmp_path / "run"),
                        "--endpoint", endpoint, "--yes"])
    assert done.returncode == 0, done.stderr
    assert "plain http" not in done.stderr
