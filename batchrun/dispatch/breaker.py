"""The circuit breaker: stop a run whose rows all fail alike, instead of failing them one by one.

Pure: the runner hands it every finished row (``observe``) and gets back a ``Trip`` once one of
two rules fires, counted over the rows sent in this session:

- first rows: the first ``first_n`` rows all failed with the same non-retryable error code (a
  job spec the gateway refuses);
- window: of the last ``window`` rows, at least ``rate`` failed, whatever the errors were (the
  upstream is down and every row exhausts its retries).

A row that failed before it was sent (its own input: a missing or oversize file, a prompt that
is not text) says nothing of the run and is not counted: such rows fail at once, so they would
be the first to finish among good rows still on the wire, and reopening them would only fail
them again on every resume. A manifest with nothing sendable is refused before the run.

A trip stops dispatch (exit 3): rows not yet sent stay pending. Rows that failed with the
tripping error are handed back as retryable, so that fixing the cause and running the same
command sends them again: their failure was the run's, not theirs.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from dataclasses import dataclass, field

from batchrun.core.errors import CircuitOpenError
from batchrun.core.result import RowResult

DEFAULT_FIRST = 20
DEFAULT_WINDOW = 200
DEFAULT_RATE = 0.5


@dataclass(frozen=True)
class Trip:
    """Why the breaker opened, and the rows to record again as retryable."""

    error: CircuitOpenError
    reopen: tuple[RowResult, ...] = ()


@dataclass
class CircuitBreaker:
    """Watches finished rows; ``first_n`` or ``window`` 0 turns that rule off."""

    first_n: int = DEFAULT_FIRST
    window: int = DEFAULT_WINDOW
    rate: float = DEFAULT_RATE
    tripped: Trip | None = None
    _first: list[RowResult] = field(default_factory=list)
    _first_armed: bool = True
    _recent: deque[RowResult | None] = field(init=False)
    _recent_failed: int = 0

    def __post_init__(self) -> None:
        # Failures keep their result (to name the error); successes are None.
        self._recent = deque(maxlen=max(1, self.window))
        self._first_armed = self.first_n > 0

    def observe(self, result: RowResult) -> Trip | None:
        """Take one finished row; the ``Trip`` the first time a rule fires, else None."""
        if self.tripped is not None:
            return None
        if not result.ok and not result.attempts:
            return None  # never sent: the row's fault, not the run's
        trip = self._first_rows(result)
        if trip is None:
            trip = self._window(result)
        self.tripped = trip
        return trip

    def after_trip(self, result: RowResult) -> RowResult:
        """A row finished after the trip (it was in flight): failures of the tripping kind are
        the run's fault too, so they stay retryable."""
        trip = self.tripped
        if trip is None or result.ok or result.retryable:
            return result
        if result.error_code in self._tripping_codes():
            return dataclasses.replace(result, retryable=True)
        return result

    # --- the two rules -------------------------------------------------------------------
    def _first_rows(self, result: RowResult) -> Trip | None:
        if not self._first_armed:
            return None
        same_kind = (
            not result.ok
            and not result.retryable
            and (not self._first or result.error_code == self._first[0].error_code)
        )
        if not same_kind:
            self._first_armed = False
            self._first = []
            return None
        self._first.append(result)
        if len(self._first) < self.first_n:
            return None
        sample = self._first[-1]
        message = (
            f"the first {len(self._first)} rows all failed with {_describe(sample)}; if the "
            "job is right and these rows are at fault, resume with --breaker-first 0: they "
            "then end as row errors"
        )
        reopen = tuple(dataclasses.replace(row, retryable=True) for row in self._first)
        self._first = []
        return Trip(_error(message, sample), reopen)

    def _window(self, result: RowResult) -> Trip | None:
        if self.window <= 0:
            return None
        if len(self._recent) == self._recent.maxlen:
            oldest = self._recent[0]
            self._recent_failed -= oldest is not None
        self._recent.append(None if result.ok else result)
        self._recent_failed += not result.ok
        if len(self._recent) < self.window:
            return None
        if self._recent_failed < self.rate * self.window:
            return None
        failures = [row for row in self._recent if row is not None]
        codes = Counter(row.error_code or "error" for row in failures)
        top_code, top_count = codes.most_common(1)[0]
        sample = next(row for row in reversed(failures) if (row.error_code or "error") == top_code)
        others = ", ".join(f"{code} ×{count}" for code, count in codes.most_common(4)[1:])
        message = (
            f"{self._recent_failed} of the last {self.window} rows failed "
            f"({self._recent_failed / self.window:.0%}, breaker at {self.rate:.0%}); "
            f"most of them ({top_count}) with {_describe(sample)}"
            + (f"; also {others}" if others else "")
            + "; if the API is well and these rows are at fault, resume with "
            "--breaker-window 0: they then end as row errors"
        )
        reopen = tuple(
            dataclasses.replace(row, retryable=True)
            for row in failures
            if not row.retryable and (row.error_code or "error") == top_code
        )
        return Trip(_error(message, sample), reopen)

    def _tripping_codes(self) -> set[str | None]:
        assert self.tripped is not None
        return {row.error_code for row in self.tripped.reopen}


def _describe(row: RowResult) -> str:
    status = f"{row.http_status} " if row.http_status else ""
    detail = f" ({_short(row.error_message)})" if row.error_message else ""
    return f"{status}{row.error_code or 'error'}{detail}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(message: str, sample: RowResult) -> CircuitOpenError:
    # No http_status of its own: the status is named inside the message.
    return CircuitOpenError(f"circuit breaker: {message}")
