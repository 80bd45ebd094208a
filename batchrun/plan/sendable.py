"""A manifest none of whose rows can be sent is refused before anything is sent, saying why
(``manifest.hints``): ``run`` stops with exit 2, ``estimate`` shows its table, then does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from batchrun.core.errors import InputError
from batchrun.manifest.hints import nothing_sendable
from batchrun.manifest.job import JobSpec
from batchrun.plan.preflight import Preflight

if TYPE_CHECKING:  # the plain estimate needs no session (nor the wire it imports)
    from batchrun.plan.session import Session


def unsendable_manifest(manifest: Path, job: JobSpec, preflight: Preflight) -> InputError | None:
    """The error for a manifest whose rows, all read by ``preflight``, are all unsendable."""
    return nothing_sendable(manifest, job, rows_read=preflight.rows_total,
                            rows_sendable=preflight.rows_sendable,
                            reasons=[row.reason for row in preflight.to_send.unsendable])


def refuse_unsendable(session: Session) -> None:
    """Refuse a new run (nothing done yet in its directory) that could send no row at all,
    instead of sending nothing and letting the circuit breaker stop it."""
    if session.opened.rows_done:
        return  # a resume: the rows it skips unread were sendable
    problem = unsendable_manifest(session.manifest, session.spec, session.preflight)
    if problem is not None:
        raise problem
