"""``batchrun estimate --calibrate``: a paid sample sent into a run directory, in the same
session ``run`` opens, the estimate fitted to it and projected over the whole run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchrun.cost.calibrate import CalibrationFit
from batchrun.dispatch.plan import RunOutcome
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import manifest_fingerprint
from batchrun.plan.calibration import Calibration, calibrate_in_session, default_run_dir
from batchrun.plan.finish import finish
from batchrun.plan.inputs import (
    API_KEY_ENV,
    Emulator,
    api_key_for,
    check_manifest,
    endpoint_for,
    load_spec,
)
from batchrun.plan.options import RunOptions, endpoint_to_resume
from batchrun.plan.preflight import Preflight
from batchrun.plan.session import Console, open_session
from batchrun.store.summary import RunSummary


@dataclass
class CalibratedEstimate:
    spec: JobSpec
    preflight: Preflight  # the uncalibrated scan
    calibration: Calibration
    run_dir: Path  # where the sample's answers are kept
    resume_command: str  # `batchrun run` on that directory: the sample is not paid again
    summary: RunSummary | None  # of the run directory, when a sample was sent

    @property
    def stopped(self) -> RunOutcome | None:
        """The sample's outcome when a fatal answer, the budget or Ctrl-C stopped it."""
        outcome = self.calibration.outcome
        return outcome if outcome is not None and outcome.stop_reason is not None else None

    @property
    def fit(self) -> CalibrationFit | None:
        return self.calibration.fit


@dataclass(frozen=True)
class CalibrateOptions:
    """What ``estimate --calibrate`` was asked."""

    manifest: Path
    sample_size: int
    out: Path | None = None  # default: runs/<manifest>-<hash> (``default_run_dir``)
    job_file: Path | None = None
    endpoint: str | None = None
    api_key: str | None = None
    emulate: bool = False
    yes: bool = False
    media_root: Path | None = None
    allow_job_change: bool = False  # go on in a run directory answered under another job


def calibrate_estimate(options: CalibrateOptions, console: Console,
                       emulator: Emulator | None = None) -> CalibratedEstimate:
    """Send ``options.sample_size`` rows spread over the manifest into a run directory, fit
    the estimate on them and project the whole run. A paid sample always asks (or ``yes``)."""
    sample_size = options.sample_size
    check_manifest(options.manifest)
    spec = load_spec(options.job_file, endpoint=options.endpoint,
                     media_root=str(options.media_root) if options.media_root else None)
    key = api_key_for(options.api_key, emulate=options.emulate,
                      why=f"--calibrate sends rows: set {API_KEY_ENV} or pass --api-key "
                      "(or --emulate to try it locally)")
    fingerprint = manifest_fingerprint(options.manifest)
    with endpoint_for(spec, emulator if options.emulate else None) as spec:
        # The embedded emulator's port changes every time; its answers do not.
        run_path = options.out or default_run_dir(
            options.manifest, fingerprint, spec,
            "emulator" if options.emulate else spec.resolved_endpoint())
        with open_session(options.manifest, spec, run_path, api_key=key, console=console,
                          media_root=options.media_root, fingerprint=fingerprint,
                          emulated=options.emulate,
                          allow_job_change=options.allow_job_change,
                          reuse_offered=False) as session:
            session.print_estimate(
                f"uncalibrated estimate for {options.manifest} ({spec.model}):", always=True)
            session.begin()
            plan = session.plan()
            # The estimate command spends nothing unless told: a paid sample always asks.
            # A 402 on the sample stops it with exit 3 and says to top up.
            calibration = calibrate_in_session(session, plan, sample_size, threshold=0.0,
                                               ask=not (options.yes or options.emulate),
                                               ignore_balance=True)
            resume = RunOptions(options.manifest, run_path, job_file=options.job_file,
                                endpoint=endpoint_to_resume(options.endpoint, spec,
                                                            emulate=options.emulate),
                                emulate=options.emulate).resume_command()
            summary = None
            if calibration.outcome is not None:
                summary = finish(plan, calibration.outcome, fingerprint=fingerprint,
                                 resume_command=resume, warn=console.warn)
    return CalibratedEstimate(spec, session.preflight, calibration, run_path, resume, summary)
