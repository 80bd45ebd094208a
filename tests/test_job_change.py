"""A run directory remembers what shapes its requests (template, system, model, settings,
media rules, endpoint): a resume under a changed job is refused with exit 2, naming what
changed and the two ways on, and both ways finish with every row marked by the job that
answered it (issue: 182 rows summarised and 18 translated in one result, unmarked)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.kit import by_id, fast_job, latest, run_cli

from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import load_job
from batchrun.manifest.reader import iter_rows
from batchrun.request.body import body_sha256, build_body, encode_body

SUMMARISE = "Summarise: {text}"
TRANSLATE = "Translate to French: {text}"


def mixed_manifest(path: Path, rows: int) -> Path:
    """Rows of the template's shape (``text``) and, every third, a ``messages`` row, which no
    template changes."""
    lines = []
    for number in range(rows):
        if number % 3 == 2:
            row: dict[str, Any] = {"id": f"m{number}", "messages": [
                {"role": "user", "content": f"Message {number}: what is a tide?"}]}
        else:
            row = {"id": f"t{number}", "text": f"Document {number} about the sea."}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def request_shas(manifest: Path, job_file: Path, endpoint: str) -> dict[str, str]:
    """id → sha256 of the body each row gets under ``job_file`` sent to ``endpoint`` (no media:
    built in full; the endpoint decides whether streams ask for usage)."""
    job = load_job(job_file).with_overrides(endpoint=endpoint)
    return {row.id: body_sha256(encode_body(build_body(row, job, None)))
            for row in iter_rows(manifest, job)}


def run(manifest: Path, job: Path, out: Path, server: EmulatorServer, *flags: str) -> Any:
    return run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                    "--endpoint", server.base_url, *flags])


@pytest.fixture
def stopped_run(tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
                ) -> tuple[Path, Path, EmulatorServer]:
    """A run under the summarising job stopped after 8 answers (the key was revoked)."""
    server = make_emulator(revoke_after=8)
    manifest = mixed_manifest(tmp_path / "docs.jsonl", 24)
    job = fast_job(tmp_path, prompt_template=SUMMARISE, concurrency=1)
    out = tmp_path / "run"
    stopped = run(manifest, job, out, server)
    assert stopped.exit_code == 3, stopped.output
    server.config.revoke_after = None
    return manifest, out, server


def test_a_resume_with_a_changed_template_is_refused_naming_it(
    tmp_path: Path, stopped_run: tuple[Path, Path, EmulatorServer]
) -> None:
    manifest, out, server = stopped_run
    sent = server.stats.requests_total
    (tmp_path / "v2").mkdir()
    translate = fast_job(tmp_path / "v2", prompt_template=TRANSLATE, concurrency=1)
    refused = run(manifest, translate, out, server)
    assert refused.exit_code == 2, refused.output
    assert "8 rows answered under another job: prompt_template changed" in refused.output
    assert f"from '{SUMMARISE}' to '{TRANSLATE}'" in refused.output
    assert f"--out NEW_DIR --reuse {out}" in refused.output
    assert "the same command with --allow-job-change" in refused.output
    assert server.stats.requests_total == sent  # nothing sent
    info = orjson.loads((out / "run.json").read_bytes())
    assert info["job"]["prompt_template"] == SUMMARISE and len(info["job_versions"]) == 1

    # Any other field that shapes a request is refused alike; the endpoint too.
    system = fast_job(tmp_path / "v2", prompt_template=SUMMARISE, concurrency=1, system="Be brief.")
    assert "system changed" in run(manifest, system, out, server).output
    with_model = fast_job(tmp_path / "v2", prompt_template=SUMMARISE, model="gemini-3-flash",
                          price={"input": 50, "output": 300})  # not in the catalog: priced here
    assert "model changed" in run(manifest, with_model, out, server).output
    same = fast_job(tmp_path / "v2", prompt_template=SUMMARISE, concurrency=4)  # not a shape
    with EmulatorServer() as other:
        moved = run(manifest, same, out, other)
    assert moved.exit_code == 2 and "endpoint changed" in moved.output
    assert run(manifest, same, out, server).exit_code == 0  # how fast is not what is asked


def test_allow_job_change_records_the_version_that_answered_each_row(
    tmp_path: Path, stopped_run: tuple[Path, Path, EmulatorServer]
) -> None:
    manifest, out, server = stopped_run
    summarise = tmp_path / "job.toml"
    before = request_shas(manifest, summarise, server.base_url)
    (tmp_path / "v2").mkdir()
    translate = fast_job(tmp_path / "v2", prompt_template=TRANSLATE, concurrency=1)
    after = request_shas(manifest, translate, server.base_url)
    answered_first = {row_id for row_id, line in latest(out).items() if line["status"] == "ok"}
    assert len(answered_first) == 8

    resumed = run(manifest, translate, out, server, "--allow-job-change")
    assert resumed.exit_code == 0, resumed.output
    assert "job changed since this run began (prompt_template)" in resumed.output
    info = orjson.loads((out / "run.json").read_bytes())
    assert info["job_version"] == 2 and info["job"]["prompt_template"] == TRANSLATE
    versions = info["job_versions"]
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["changed"] == [
        "prompt_template"]
    assert [v["request_shape"]["prompt_template"] for v in versions] == [SUMMARISE, TRANSLATE]

    rows = by_id(out)
    assert len(rows) == 24 and {row["status"] for row in rows.values()} == {"ok"}
    for row_id, row in rows.items():
        # Every row is marked, and by the job whose request it really sent.
        expected = before if row["job_version"] == 1 else after
        assert row["request_sha256"] == expected[row_id], row_id
        assert row["job_version"] == (1 if row_id in answered_first else 2)

    status = run_cli(["status", str(out)])
    assert "job: version 2 since a resume changed it" in status.output
    # The next resume under the same (new) job needs no flag and sends nothing.
    sent = server.stats.requests_total
    again = run(manifest, translate, out, server)
    assert again.exit_code == 0 and server.stats.requests_total == sent
    exported = tmp_path / "export.jsonl"
    assert run_cli(["export", str(out), "--output", str(exported)]).exit_code == 0
    assert {json.loads(line)["job_version"] for line in exported.read_text().splitlines()} \
        == {1, 2}


def test_a_new_out_with_reuse_pays_only_for_the_rows_the_template_changed(
    tmp_path: Path, stopped_run: tuple[Path, Path, EmulatorServer]
) -> None:
    manifest, old, server = stopped_run
    assert run(manifest, tmp_path / "job.toml", old, server).exit_code == 0  # finish it
    billed = server.stats.billed_requests
    (tmp_path / "v2").mkdir()
    translate = fast_job(tmp_path / "v2", prompt_template=TRANSLATE)
    after = request_shas(manifest, translate, server.base_url)
    new = tmp_path / "translated"
    result = run(manifest, translate, new, server, "--reuse", str(old))
    assert result.exit_code == 0, result.output
    rows = by_id(new)
    reused = {row_id for row_id, row in rows.items() if row["attempts"] == 0}
    assert reused == {row_id for row_id in rows if row_id.startswith("m")}  # 8 messages rows
    assert server.stats.billed_requests == billed + 16  # only the template's rows
    assert all(row["request_sha256"] == after[row_id] for row_id, row in rows.items())
    assert {row["job_version"] for row in rows.values()} == {1}


def test_a_change_before_any_answer_goes_on_unasked(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(models=("gemini-3.1-pro",))
    manifest = mixed_manifest(tmp_path / "docs.jsonl", 6)
    wrong = fast_job(tmp_path, prompt_template=SUMMARISE, model="gemini-9",  # a 404: exit 3
                     price={"input": 50, "output": 300})  # priced: it gets as far as the API
    out = tmp_path / "run"
    assert run(manifest, wrong, out, server).exit_code == 3
    (tmp_path / "v2").mkdir()
    fixed = fast_job(tmp_path / "v2", prompt_template=SUMMARISE)
    resumed = run(manifest, fixed, out, server)  # "fix `model` in the job spec, resume"
    assert resumed.exit_code == 0, resumed.output
    assert "no row was answered yet" in resumed.output
    assert {row["job_version"] for row in by_id(out).values()} == {2}



def test_a_calibration_sample_under_a_changed_job_is_refused_unless_allowed(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator()
    manifest = mixed_manifest(tmp_path / "docs.jsonl", 30)
    out = tmp_path / "run"

    def calibrate(template: str, size: int, *flags: str) -> Any:
        job = fast_job(tmp_path, prompt_template=template)
        return run_cli(["estimate", str(manifest), "--job", str(job), "--calibrate", str(size),
                        "--endpoint", server.base_url, "--out", str(out), "--yes", "--json",
                        *flags])

    first = calibrate(SUMMARISE, 5)
    assert first.exit_code == 0, first.output
    assert server.stats.billed_requests == 5
    refused = calibrate(TRANSLATE, 10)
    assert refused.exit_code == 2, refused.output
    assert "prompt_template changed" in refused.output and "--allow-job-change" in refused.output
    # estimate has no --reuse: the way to a new directory is --out alone
    assert "--out NEW_DIR" in refused.output and "--reuse" not in refused.output
    assert server.stats.billed_requests == 5  # nothing sent
    allowed = calibrate(TRANSLATE, 10, "--allow-job-change")
    assert allowed.exit_code == 0, allowed.output
    info = json.loads((out / "run.json").read_text())
    assert [version["version"] for version in info["job_versions"]] == [1, 2]
    sent = json.loads(allowed.stdout)["calibration"]["sent"]
    assert sent > 0 and server.stats.billed_requests == 5 + sent
    # The rows the sample sent now are marked as answered under the new job.
    translated = [row for row in latest(out).values() if row.get("job_version") == 2]
    assert len(translated) == sent
