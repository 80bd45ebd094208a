"""The session ``run`` and ``estimate --calibrate`` both open: a locked run directory of one
manifest and one job, its journal read, the manifest scanned, ready to confirm, begin and plan.

``open_session`` is the shared set-up: the key, the job spec, the endpoint (the caller's
emulator for ``--emulate``: this layer never imports it), the lock, the ``--reuse`` cache and
the preflight scan; leaving it releases the lock and closes what it opened. What the session
has to say or ask goes through the ``Console`` the caller gives it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batchrun.api.client import ApiClient
from batchrun.api.endpoint_check import plain_http_warning
from batchrun.core.errors import BatchrunError, InputError
from batchrun.cost.budget import CreditLedger
from batchrun.cost.catalog import Price
from batchrun.cost.estimate import estimate_lines
from batchrun.dispatch.plan import Progress, RunPlan
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import manifest_fingerprint
from batchrun.manifest.request_shape import request_shape

# Re-exported: ``run`` and ``estimate --calibrate`` take them from here with the session.
from batchrun.plan.inputs import (
    API_KEY_ENV,  # noqa: F401
    DEFAULT_CONFIRM_ABOVE,  # noqa: F401
    Emulator,  # noqa: F401
    api_key_for,  # noqa: F401
    check_manifest,  # noqa: F401
    endpoint_for,  # noqa: F401
    load_spec,  # noqa: F401
)
from batchrun.plan.job_change import job_change_notice
from batchrun.plan.preflight import Preflight, scan_manifest
from batchrun.plan.resume import OpenedRun, open_reuse, open_run, reuse_predicate
from batchrun.store.cache import AnswerCache
from batchrun.store.keys import EMULATOR_ENDPOINT
from batchrun.store.rundir import RunDir, run_info


class Console(Protocol):
    """How a session talks to a person (the CLI's): lines on stderr, a yes/no question."""

    def info(self, line: str) -> None:
        """A line for people; the CLI drops it with ``--quiet``."""

    def warn(self, line: str) -> None:
        """A line shown even with ``--quiet`` (money, lost answers, insecure transport)."""

    def can_ask(self) -> bool:
        """Whether a person can answer (a terminal on stdin)."""

    def ask(self, question: str) -> bool:
        """Ask yes/no; True for yes."""

    def notice(self, line: str) -> None:
        """Something that changed a run as it happened (an interrupt): shown at once, on a line
        of its own, even with ``--quiet``."""

    def progress(self) -> Progress | None:
        """What shows a run's counters while its rows are sent; None: nothing is shown."""

    def end_progress(self) -> None:
        """The progress display is over (a terminal's live line ends)."""


def balance_check(needed: float, ignore_balance: bool, *,
                  warn: Callable[[str], None]) -> Callable[[ApiClient], Awaitable[None]]:
    """Before dispatch, what ``GET /credits`` says of the balance: below ``needed`` it is a
    warning, and the run starts all the same. The API's 402 stops dispatch when the balance runs
    out, with every answer kept, exit 3 and the command that resumes (DESIGN's contract for
    ``insufficient_credits``), the same way whether it comes at the first request or later; a
    prepaid balance cannot be overspent.

    The balance is advice only: when it cannot be read (the endpoint fails, or refuses the key)
    that is a warning too. A key the API refuses is refused again by the first completion,
    which stops the run the one way every fatal answer does (the ``--json`` summary, the
    command that resumes)."""

    async def check_balance(client: ApiClient) -> None:
        if ignore_balance or needed <= 0:
            return
        try:
            balance = await client.get_credits()
        except BatchrunError as error:
            warn(f"warning: the balance could not be read ({error}); the run starts without "
                 "it (--ignore-balance skips the check)")
            return
        if balance is None or balance >= needed:
            return
        warn(f"warning: the balance ({balance:,.4f} credits) is below the estimate "
             f"({needed:,.4f}): the run stops when it runs out (exit 3, every answer kept, "
             "the command that resumes printed); top up first to finish in one go")

    return check_balance


@dataclass
class Session:
    """A locked run directory, what its journal says and what the manifest scan found."""

    manifest: Path
    spec: JobSpec
    price: Price
    endpoint: str  # resolved
    api_key: str
    fingerprint: str
    run_dir: RunDir
    opened: OpenedRun
    preflight: Preflight
    cache: AnswerCache | None
    console: Console
    media_root: Path | None = None
    key_endpoint: str | None = None  # the endpoint's name in cache keys, when not its URL

    def print_estimate(self, heading: str, *, always: bool = False) -> None:
        say = self.console.warn if always else self.console.info
        say(heading)
        for line in estimate_lines(self.preflight.to_send, rows_total=self.preflight.rows_total):
            say(line)

    def ledger(self) -> CreditLedger | None:
        """The budget of --max-credits: it covers everything this run directory has spent."""
        if self.spec.max_credits is None:
            return None
        return CreditLedger.for_job(self.spec.max_credits, self.spec.model,
                                    spent=self.opened.index.credits,
                                    output_bound=self.spec.max_output_tokens_bound)

    def confirm(self, credits: float, threshold: float, *, ask: bool,
                what: str = "the estimate", sample_kept_in: Path | None = None) -> None:
        """Above the threshold: ask a person, refuse without one (unless told not to ask)."""
        if credits <= threshold or not ask:
            return
        nothing = (f"the calibration sample is kept in {sample_kept_in}; nothing else was sent"
                   if sample_kept_in else "nothing was sent")
        if not self.console.can_ask():
            why = (f"is above --confirm-above ({threshold:,.2f})" if threshold > 0
                   else "is paid for")
            raise InputError(
                f"{what} (about {credits:,.2f} credits) {why}; pass --yes to go on without "
                f"asking ({nothing})"
            )
        if not self.console.ask(f"Spend about {credits:,.2f} credits?"):
            raise InputError(f"not confirmed; {nothing}")

    def begin(self, resume_command: str | None = None) -> None:
        """Write (or check) run.json: from here on the run directory holds this run."""
        self.run_dir.begin(run_info(
            manifest=self.manifest, fingerprint=self.fingerprint, job=self.spec.describe(),
            endpoint=self.endpoint, rows_total=self.preflight.rows_total,
            resume_command=resume_command,
            request_shape=request_shape(self.spec, self.key_endpoint or self.endpoint),
        ))

    def plan(self, **settings: Any) -> RunPlan:
        """The runner's plan for this session; ``settings`` are RunPlan's optional fields. Its
        progress display and notices are the console's."""
        return RunPlan(manifest=self.manifest, run_dir=self.run_dir, job=self.spec,
                       endpoint=self.endpoint, api_key=self.api_key,
                       rows_total=self.preflight.rows_total, index=self.opened.index,
                       media_root=self.media_root, progress=self.console.progress(),
                       notice=self.console.notice, key_endpoint=self.key_endpoint, **settings)


@contextlib.contextmanager
def open_session(
    manifest: Path,
    spec: JobSpec,
    out: Path,
    *,
    api_key: str,
    console: Console,
    retry_failed: bool = False,
    reuse: Path | None = None,
    media_root: Path | None = None,
    fingerprint: str | None = None,
    emulated: bool = False,
    allow_job_change: bool = False,
    redo_incomplete: bool = False,
    reuse_offered: bool = True,
) -> Iterator[Session]:
    """Lock ``out``, read its journal, open the --reuse cache, scan the manifest. ``spec``
    carries its final endpoint (``emulated``: the embedded emulator's, whose port changes every
    time, so cache keys name it ``EMULATOR_ENDPOINT``). On the way out: the lock is released,
    the cache closed, and a run directory this session created but never began is removed.
    ``reuse_offered``: the command has ``--reuse`` (``estimate --calibrate`` has not), so a
    refusal to resume under a changed job may suggest it."""
    endpoint = spec.resolved_endpoint()
    key_endpoint = EMULATOR_ENDPOINT if emulated else None
    if (insecure := plain_http_warning(endpoint)) is not None:
        console.warn(insecure)
    fingerprint = fingerprint or manifest_fingerprint(manifest)
    price = spec.resolved_price()
    run_dir = RunDir(out)
    created = not out.exists()
    shape = request_shape(spec, key_endpoint or endpoint)
    opened = open_run(run_dir, fingerprint, retry_failed=retry_failed,  # locks
                      job_shape=shape, allow_job_change=allow_job_change,
                      redo_incomplete=redo_incomplete, reuse_offered=reuse_offered)
    if opened.job_change is not None:
        console.warn(job_change_notice(opened.job_change))
    cache = None
    try:
        cache = open_reuse(reuse, out) if reuse is not None else None
        preflight = scan_manifest(
            manifest, spec, price, is_done=opened.is_done, done_lines=opened.done_lines,
            rows_total=opened.rows_total,
            will_reuse=reuse_predicate(cache, spec, key_endpoint or endpoint) if cache else None,
        )
        yield Session(manifest, spec, price, endpoint, api_key, fingerprint, run_dir, opened,
                      preflight, cache, console, media_root, key_endpoint)
    finally:
        run_dir.release()
        if cache is not None:
            cache.close()
        if created and not run_dir.exists():  # refused before it began: leave no trace
            shutil.rmtree(out, ignore_errors=True)
