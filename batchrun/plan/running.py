"""``batchrun run`` as a function: open the session, confirm, begin, calibrate if asked,
dispatch, compact. It returns what happened (``RunReport``); the CLI renders it and picks the
exit code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from batchrun.core.errors import InputError
from batchrun.cost.budget import CreditLedger, budget_lines, suggested_cap
from batchrun.cost.cap_advice import cap_warnings
from batchrun.dispatch.eventloop import run_dispatch
from batchrun.dispatch.plan import STOP_BUDGET, RunOutcome, RunPlan
from batchrun.dispatch.runner import execute
from batchrun.plan.calibration import calibrate_in_session
from batchrun.plan.diskspace import check_free_space
from batchrun.plan.finish import finish
from batchrun.plan.options import RunOptions, endpoint_to_resume
from batchrun.plan.sendable import refuse_unsendable
from batchrun.plan.session import (
    DEFAULT_CONFIRM_ABOVE,
    Console,
    Emulator,
    Session,
    api_key_for,
    balance_check,
    check_manifest,
    endpoint_for,
    load_spec,
    open_session,
)
from batchrun.store.index import JournalIndex
from batchrun.store.records import STATE_OK
from batchrun.store.summary import RunSummary


@dataclass
class RunReport:
    """What a run did: the runner's outcome, the run directory's totals, its budget."""

    outcome: RunOutcome
    summary: RunSummary
    ledger: CreditLedger | None


def run_job(options: RunOptions, console: Console, emulator: Emulator | None = None
            ) -> RunReport:
    """Send every row of ``options.manifest`` not done yet in ``options.out``."""
    check_manifest(options.manifest)
    check_engine(options)
    if options.redo is not None and options.calibrate is not None:
        raise InputError("--redo resends answers of an earlier session; --calibrate samples a "
                         "new run: give one of them")
    spec = load_spec(options.job_file, **options.job_overrides())
    # The endpoint the environment gave is spelled out in the command that resumes.
    options = dataclasses.replace(options, endpoint=endpoint_to_resume(
        options.endpoint, spec, emulate=options.emulate))
    key = api_key_for(options.api_key, emulate=options.emulate)
    with endpoint_for(spec, emulator if options.emulate else None) as spec, open_session(
        options.manifest, spec, options.out, api_key=key, console=console,
        retry_failed=options.retry_failed, reuse=options.reuse, media_root=options.media_root,
        emulated=options.emulate, allow_job_change=options.allow_job_change,
        redo_incomplete=options.redo == "incomplete",
    ) as session:
        return _run_session(session, options)


def _run_session(session: Session, options: RunOptions) -> RunReport:
    spec, preflight, console = session.spec, session.preflight, session.console
    resumed = session.opened.rows_done if session.opened.resumed else None
    session.print_estimate(f"estimate for {options.manifest}"
                           + (f" (resuming: {resumed:,} rows already done)" if resumed is not None
                              else "") + ":")
    refuse_unsendable(session)
    if session.cache is not None:
        console.info(f"  reuse: {preflight.rows_reused:,} rows answered by {options.reuse} "
                     f"({len(session.cache):,} answers there; rows with local media are checked "
                     "when sent)")
    threshold = spec.confirm_above if spec.confirm_above is not None else DEFAULT_CONFIRM_ABOVE
    ask = not (options.yes or options.emulate)
    expected = preflight.to_send.credits.expected
    ledger = session.ledger()
    if ledger is not None:
        for line in budget_lines(ledger, session.price, expected=expected,
                                 concurrency=spec.concurrency):
            console.info(line)
        for line in cap_warnings(ledger, session.price, concurrency=spec.concurrency,
                                 rows=preflight.to_send.rows_sendable, expected=expected):
            console.warn(line)
    if options.calibrate is None:
        session.confirm(expected, threshold, ask=ask)
    session.begin(options.resume_command())
    space = check_free_space(options.out, rows=preflight.to_send.rows,
                             expected_output_tokens=spec.expected_output_tokens)
    if space is not None:
        console.warn(space)
    plan = session.plan(retry_failed=options.retry_failed, budget=ledger, reuse=session.cache,
                        estimate_credits=expected)
    outcome = _dispatch(session, plan, options, threshold=threshold, ask=ask)
    console.end_progress()
    resume_command = options.resume_command()
    if outcome.stop_reason == STOP_BUDGET and ledger is not None:
        index = session.run_dir.load_index()
        pending = max(0, preflight.rows_total - index.count_done(retry_failed=False))
        resume_command = options.resume_command(max_credits=suggested_cap(
            ledger, rows_pending=pending, credits_per_row=credits_per_row(index),
            concurrency=spec.concurrency))
    summary = finish(plan, outcome, fingerprint=session.fingerprint,
                     resume_command=resume_command, warn=console.warn)
    return RunReport(outcome, summary, ledger)


def _dispatch(session: Session, plan: RunPlan, options: RunOptions, *, threshold: float,
              ask: bool) -> RunOutcome:
    """The calibration sample first when asked (it may stop the run), then the rest."""
    expected = session.preflight.to_send.credits.expected
    if options.calibrate is not None:
        calibration = calibrate_in_session(session, plan, options.calibrate, threshold=threshold,
                                           ask=ask, ignore_balance=options.ignore_balance)
        if calibration.outcome is not None and calibration.outcome.stop_reason:
            return calibration.outcome
        plan = dataclasses.replace(plan, index=calibration.index)
        if calibration.remaining is not None:
            expected = calibration.remaining.credits.expected
        session.confirm(expected, threshold, ask=ask, sample_kept_in=options.out)
    check = balance_check(expected, options.ignore_balance, warn=session.console.warn)
    if options.engine == "ray":
        # Imported here: a run on one machine never loads the cluster engine.
        from batchrun.cluster.driver import ClusterOptions, connect, execute_on_cluster
        cluster = ClusterOptions(address=options.ray_address, workers=options.workers or 2)
        runtime = connect(cluster)
        return run_dispatch(lambda: execute_on_cluster(plan, cluster, runtime,
                                                       before_dispatch=check))
    return run_dispatch(lambda: execute(plan, before_dispatch=check))


def check_engine(options: RunOptions) -> None:
    """Flags that only mean something together, refused before anything is read or sent."""
    if options.engine != "ray":
        given = [RunOptions.flag_of(name) for name in ("ray_address", "workers")
                 if getattr(options, name) is not None]
        if given:
            raise InputError(f"{' and '.join(given)} only apply to --engine ray")


def credits_per_row(index: JournalIndex) -> float:
    answered = index.count(STATE_OK)
    return index.credits / answered if answered else 0.0
