"""The Ray engine for real: ``batchrun run --engine ray`` as a process, its actors on a
two-node Ray cluster started here (``ray.cluster_utils.Cluster``), against the project's
emulator on 127.0.0.1. Ray's session files and auth token stay under the tests' tmp dir.

Done-when of issue 17 asserted here: the same results.parquet as the local engine (text and
media rows), one global ``--rpm`` and ``--max-credits`` across workers (by the emulator's own
counts and charges), a dispatch actor killed mid-run and a driver SIGKILLed mid-run (every row
once, re-billing bounded by the requests in flight).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.kit import KEY, ROOT, fast_job, reap, results, write_manifest

from batchrun.cluster.ray_runtime import NAMESPACE, run_key
from batchrun.emulator.server import EmulatorServer

ray = pytest.importorskip("ray", reason="the Ray engine's tests need the extra: "
                          "pip install '.[test,ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
COMPARED = ("id", "status", "content", "finish_reason", "prompt_tokens", "completion_tokens",
            "reasoning_tokens", "credits", "error_code")


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """HOME (Ray's auth token) and RAY_TMPDIR (its sessions) under a tmp dir, for this
    process and the CLI processes it starts."""
    base = tmp_path_factory.mktemp("ray")
    env = {"HOME": str(base / "home"), "RAY_TMPDIR": str(base / "t")}
    Path(env["HOME"]).mkdir()
    (Path(env["RAY_TMPDIR"]) / "ray").mkdir(parents=True)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    yield env
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def cluster(ray_env: dict[str, str]) -> Iterator[Cluster]:
    """Two nodes of one CPU each; this process joins too (to find and kill actors)."""
    sessions = str(Path(ray_env["RAY_TMPDIR"]) / "ray")
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "temp_dir": sessions})
    nodes.add_node(num_cpus=1, temp_dir=sessions)
    ray.init(address=nodes.address, namespace=NAMESPACE, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def batchrun(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "BATCHRUN_API_KEY": KEY}
    return subprocess.Popen([sys.executable, "-m", "batchrun.cli", *args], env=full_env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        reap(process)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def stats(emulator: EmulatorServer) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(emulator.root_url + "/_emulator/stats", timeout=10).json()
    return data


def compared(run_dir: Path) -> list[dict[str, Any]]:
    return [{name: row[name] for name in COMPARED} for row in results(run_dir)]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def text_and_media_manifest(folder: Path, text_rows: int) -> Path:
    shutil.copytree(ROOT / "sample_inputs" / "media", folder / "media")
    lines = (ROOT / "sample_inputs" / "media.jsonl").read_text().splitlines()
    lines += [json.dumps({"id": f"text-{n}", "prompt": f"Question {n}: why is the sky blue?"})
              for n in range(text_rows)]
    lines.insert(3, "{not json")  # a bad row: an error row on both engines
    manifest = folder / "mixed.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_a_private_ray_gives_the_same_results_as_the_local_engine(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer],
        ray_env: dict[str, str]) -> None:
    """The default (no --ray-address): a Ray started on this machine for the run."""
    emulator = make_emulator(latency_ms=20)
    manifest = text_and_media_manifest(tmp_path, text_rows=60)
    job = fast_job(tmp_path, concurrency=16, reasoning_effort="low")
    common = [str(manifest), "--job", str(job), "--endpoint", emulator.base_url, "--yes"]
    code, _, err = finish(batchrun(["run", *common, "--out", str(tmp_path / "local")], ray_env))
    assert code == 1, err  # the bad row
    code, out, err = finish(batchrun(["run", *common, "--out", str(tmp_path / "ray"),
                                      "--engine", "ray", "--workers", "2", "--json"], ray_env))
    assert code == 1, err
    assert json.loads(out)["engine"]["workers"] == 2
    local, cluster_rows = compared(tmp_path / "local"), compared(tmp_path / "ray")
    assert len(local) == 69 and cluster_rows == local  # 8 sample rows, 1 bad, 60 text
    assert sum(row["status"] == "ok" for row in local) == 68
    media_rows = [row for row in results(tmp_path / "ray") if not row["id"].startswith("text")]
    assert any(row["prompt_tokens"] and row["prompt_tokens"] > 200 for row in media_rows)
    # The key reached the workers in a call, never in what Ray keeps: not in its session files
    # (logs, actor tables spilled to disk), not in the run directory.
    for folder in (Path(ray_env["RAY_TMPDIR"]), tmp_path / "ray"):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert KEY.encode() not in path.read_bytes(), path


def test_one_rate_and_one_cap_across_two_workers(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer], cluster: Cluster,
        ray_env: dict[str, str]) -> None:
    """The minute at --rpm 1200 is bench/ray_scale.py's; here 3,600/min for a few seconds."""
    emulator = make_emulator(latency_ms=50, count_by_second=True)
    manifest = write_manifest(tmp_path / "m.jsonl", 300)
    # A small output bound: each request reserves ~4 credits of the cap, not the model's 64k.
    job = fast_job(tmp_path, concurrency=32, max_output_tokens_bound=4000)
    base = [str(manifest), "--job", str(job), "--endpoint", emulator.base_url, "--yes",
            "--engine", "ray", "--ray-address", cluster.address, "--workers", "2"]
    code, _, err = finish(batchrun(["run", *base, "--out", str(tmp_path / "rpm"),
                                    "--rpm", "3600"], ray_env))
    assert code == 0, err
    seen = stats(emulator)
    assert seen["requests_total"] == 300
    per_second = [n for _, n in sorted(seen["requests_by_second"].items(),
                                       key=lambda item: float(item[0]))]
    steady = per_second[2:-1]  # the first seconds hold the one-second burst, the last is partial
    rate = sum(steady) / len(steady) * 60
    assert 3600 * 0.9 <= rate <= 3600 * 1.05, per_second

    httpx.post(emulator.root_url + "/_emulator/reset", timeout=10)
    cap = 30.0  # about half the manifest's cost
    code, _, err = finish(batchrun(["run", *base, "--out", str(tmp_path / "cap"),
                                    "--max-credits", str(cap)], ray_env))
    assert code == 4, err  # stopped at the cap
    charged = stats(emulator)["credits_billed"]
    assert 0 < charged <= cap
    assert "--max-credits" in err and "batchrun run" in err  # how to go on


def test_a_killed_worker_leaves_its_rows_to_the_other(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer], cluster: Cluster,
        ray_env: dict[str, str]) -> None:
    emulator = make_emulator(latency_ms=100)
    # ~4 s of sending at 2 x 8 / 0.1 s: the kill lands mid-run even on a slow machine.
    rows, concurrency = 700, 8
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    job = fast_job(tmp_path, concurrency=concurrency)
    out = tmp_path / "out"
    process = batchrun(["run", str(manifest), "--job", str(job), "--endpoint",
                        emulator.base_url, "--yes", "--out", str(out), "--engine", "ray",
                        "--ray-address", cluster.address, "--workers", "2", "--json"], ray_env)
    try:
        wait_for(lambda: stats(emulator)["requests_total"] >= 150, 60, "150 requests")
        victim = ray.get_actor(f"batchrun-worker-{run_key(str(out))}-0", namespace=NAMESPACE)
        ray.kill(victim)
        code, out_text, err = finish(process)
    finally:
        reap(process)
    assert code == 0, err
    assert json.loads(out_text)["engine"]["workers_lost"] == 1
    assert "was lost" in err
    finished = results(out)
    assert sorted(row["id"] for row in finished) == sorted(f"row-{n}" for n in range(rows))
    assert all(row["status"] == "ok" for row in finished)
    billed = stats(emulator)["billed_requests"]
    assert rows <= billed <= rows + concurrency  # at most the lost worker's requests in flight


def test_a_killed_driver_resumes_with_every_row_once(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer], cluster: Cluster,
        ray_env: dict[str, str]) -> None:
    emulator = make_emulator(latency_ms=100)
    rows, concurrency, workers = 500, 16, 2
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    job = fast_job(tmp_path, concurrency=concurrency)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--job", str(job), "--endpoint", emulator.base_url, "--yes",
            "--out", str(out), "--engine", "ray", "--ray-address", cluster.address,
            "--workers", str(workers)]
    process = batchrun(args, ray_env)
    try:
        wait_for(lambda: stats(emulator)["requests_total"] >= 150, 60, "150 requests")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        reap(process)
    code, _, err = finish(batchrun(args, ray_env))
    assert code == 0, err
    assert "resuming" in err
    finished = results(out)
    assert sorted(row["id"] for row in finished) == sorted(f"row-{n}" for n in range(rows))
    assert all(row["status"] == "ok" for row in finished)
    # Paid twice at most: what was in flight (or answered, not yet journaled) at the kill.
    billed = stats(emulator)["billed_requests"]
    assert rows <= billed <= rows + workers * concurrency * 2

    # --reuse: every row answered by that run, nothing sent (the workers read its journal at
    # the same path), the same answers.
    before = stats(emulator)["requests_total"]
    reuse_args = [*args[:args.index("--out")], "--out", str(tmp_path / "reused"),
                  *args[args.index("--out") + 2:], "--reuse", str(out), "--json"]
    code, out_text, err = finish(batchrun(reuse_args, ray_env))
    assert code == 0, err
    assert stats(emulator)["requests_total"] == before
    assert json.loads(out_text)["rows_reused"] == rows
    assert ([(row["id"], row["content"]) for row in results(tmp_path / "reused")]
            == [(row["id"], row["content"]) for row in finished])
