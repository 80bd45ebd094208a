"""The options of ``batchrun run`` and ``batchrun estimate``, as click declares them.

Each ``run`` option's destination is the ``plan.options.RunOptions`` field of the same name:
the command builds ``RunOptions(**params)`` and nothing travels through the click context.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batchrun.plan.inputs import API_KEY_ENV, DEFAULT_CONFIRM_ABOVE

F = TypeVar("F", bound=Callable[..., Any])
_POSITIVE = click.FloatRange(min=0, min_open=True)

_RUN_OPTIONS = [
    click.argument("manifest", type=click.Path(path_type=Path)),
    click.option("--out", "out", required=True, type=click.Path(path_type=Path),
                 help="Run directory (journal, results.parquet). An existing run of the same "
                 "manifest is resumed."),
    click.option("--job", "job_file", type=click.Path(path_type=Path),
                 help="Job spec TOML (model, prompt template, reasoning, limits …)."),
    click.option("--endpoint", help="API base URL [env BATCHRUN_ENDPOINT; default "
                 "https://api.aivideoapi.ai/v1]."),
    click.option("--api-key", help=f"API key [env {API_KEY_ENV}]; never written anywhere."),
    click.option("--concurrency", type=click.IntRange(1, 4096),
                 help="Requests in flight at once [job spec, default 32]."),
    click.option("--rpm", type=click.FloatRange(min=0, min_open=True),
                 help="Requests per minute limit."),
    click.option("--tpm", type=click.FloatRange(min=0, min_open=True),
                 help="Tokens per minute limit (estimated prompt + expected output)."),
    click.option("--max-credits", type=click.FloatRange(min=0, min_open=True),
                 help="Budget cap in credits: stop dispatch (exit 4) before spending more."),
    click.option("--confirm-above", type=click.FloatRange(min=0),
                 help=f"Ask before a run estimated above this many credits "
                 f"[default {DEFAULT_CONFIRM_ABOVE:g}]."),
    click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
    click.option("--emulate", is_flag=True,
                 help="Run against the embedded API emulator on 127.0.0.1 (no key, no network)."),
    click.option("--retry-failed", is_flag=True,
                 help="On resume, also send again rows that ended in a final error."),
    click.option("--allow-job-change", is_flag=True,
                 help="Resume under a job whose requests differ (template, system, model, "
                 "settings, media, endpoint) from the answered rows': run.json records the new "
                 "job version and results mark each row's (job_version)."),
    click.option("--redo", type=click.Choice(["incomplete"]),
                 help="On resume, also send again (and pay for) rows answered ok but cut short: "
                 "finish_reason length, content_filter … (anything but stop)."),
    click.option("--ignore-balance", is_flag=True,
                 help="Do not read GET /credits before sending. Without it, a balance below "
                 "the estimate is a warning: the API's 402 stops the run when it runs out "
                 "(exit 3); top up, then resume."),
    click.option("--calibrate", type=click.IntRange(min=1),
                 help="Send N sample rows spread over the manifest first, show their real cost "
                 "and calibrate the estimate on them; they count as done for the run."),
    click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
                 help="Folder that local media paths are confined to [manifest's folder]."),
    click.option("--media-budget", type=click.IntRange(min=1),
                 help="Bytes of request bodies (media base64 included) in flight at once; a "
                 "row waits for room before its files are read [job spec, default 256 MiB]."),
    click.option("--reuse", type=click.Path(path_type=Path, file_okay=False),
                 help="Earlier run directory: rows whose request (endpoint, model, body, media "
                 "bytes) it answered ok are copied from it, not sent (nor paid) again."),
    click.option("--quiet", "-q", is_flag=True, help="No estimate or progress on stderr."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print the final status as JSON on stdout."),
    click.option("--connect-timeout", "connect_timeout_s", type=_POSITIVE,
                 help="Seconds to open a connection [job: connect_timeout_s, default 30]."),
    click.option("--read-timeout", "read_timeout_s", type=_POSITIVE,
                 help="Seconds without a byte before a read gives up: a stalled stream is retried "
                 "[job: read_timeout_s, default 300]."),
    click.option("--request-timeout", "request_timeout_s", type=_POSITIVE,
                 help="Seconds for a whole request, first byte sent to last read; then it is "
                 "retried [job: request_timeout_s, default 900]."),
    click.option("--breaker-first", "breaker_first", type=click.IntRange(min=0),
                 help="Stop (exit 3) when the first N rows all fail with the same non-retryable "
                 "error; 0 turns this off [job: breaker_first, default 20]."),
    click.option("--breaker-window", "breaker_window", type=click.IntRange(min=0),
                 help="Stop (exit 3) when at least --breaker-rate of the last N rows failed; 0 "
                 "turns this off [job: breaker_window, default 200]."),
    click.option("--breaker-rate", "breaker_rate", type=click.FloatRange(0, 1, min_open=True),
                 help="Error rate over --breaker-window that stops the run [job: breaker_rate, "
                 "default 0.5]."),
    click.option("--engine", type=click.Choice(["local", "ray"]),
                 help="Where rows are sent from: this process (local, the default) or dispatch "
                 "workers on a Ray cluster (ray; pip install 'batchrun[ray]'). RUN_DIR stays "
                 "on this machine; the manifest and media must be readable by every node."),
    click.option("--ray-address",
                 help="With --engine ray: the cluster to join (auto: the one `ray start` made "
                 "here; HOST:PORT) [default: a private Ray on this machine]."),
    click.option("--workers", type=click.IntRange(min=1),
                 help="With --engine ray: dispatch workers, each sending --concurrency requests "
                 "at once under one global --rpm/--tpm and --max-credits [default 2]."),
    click.option("--progress-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                 help="Seconds between plain progress lines when stderr is not a terminal."),
]

_ESTIMATE_OPTIONS = [
    click.argument("manifest", type=click.Path(path_type=Path)),
    click.option("--job", "job_file", type=click.Path(path_type=Path), help="Job spec TOML."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    click.option("--media-root", type=click.Path(path_type=Path, file_okay=False),
                 help="Folder that local media paths are confined to [manifest's folder]."),
    click.option("--calibrate", type=click.IntRange(min=1),
                 help="Send N sample rows spread over the manifest (paid) and calibrate the "
                 "estimate on their real usage."),
    click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
                 help="Run directory that keeps the calibration sample; `run --out` the same "
                 "directory later and the sample is not paid again [runs/<manifest>-<hash>]."),
    click.option("--endpoint", help="API base URL, for --calibrate [env BATCHRUN_ENDPOINT]."),
    click.option("--api-key", help=f"API key for --calibrate [env {API_KEY_ENV}]."),
    click.option("--emulate", is_flag=True,
                 help="Calibrate against the embedded API emulator (no key, no network)."),
    click.option("--yes", "-y", is_flag=True, help="Do not ask before a paid calibration."),
    click.option("--allow-job-change", is_flag=True,
                 help="With --calibrate: keep the sample in an --out directory whose rows were "
                 "answered under another job (run.json records the new job version)."),
]


def run_options(command: F) -> F:
    """Every option of ``batchrun run``, in the order ``--help`` lists them."""
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


def estimate_options(command: F) -> F:
    """Every option of ``batchrun estimate``."""
    for option in reversed(_ESTIMATE_OPTIONS):
        command = option(command)
    return command
