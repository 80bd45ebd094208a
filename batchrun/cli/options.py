"""The timeout and circuit-breaker flags of ``batchrun run``.

They override job fields of the same meaning. ``@run_options`` adds them to the command and
hands their values over through the click context instead of the callback's arguments, so
``run``'s long signature does not grow: ``job_overrides()`` and ``resume_flags()`` read them.
It must be the innermost decorator (right above ``def run``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

_META_KEY = "batchrun.cli.options"
_POSITIVE = click.FloatRange(min=0, min_open=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Flag:
    flag: str
    field: str  # the JobSpec field it overrides
    type: click.ParamType
    help: str


FLAGS = (
    _Flag("--connect-timeout", "connect_timeout_s", _POSITIVE,
          "Seconds to open a connection [job: connect_timeout_s, default 30]."),
    _Flag("--read-timeout", "read_timeout_s", _POSITIVE,
          "Seconds without a byte before a read gives up: a stalled stream is retried "
          "[job: read_timeout_s, default 300]."),
    _Flag("--request-timeout", "request_timeout_s", _POSITIVE,
          "Seconds for a whole request, first byte sent to last read; then it is retried "
          "[job: request_timeout_s, default 900]."),
    _Flag("--breaker-first", "breaker_first", click.IntRange(min=0),
          "Stop (exit 3) when the first N rows all fail with the same non-retryable error; "
          "0 turns this off [job: breaker_first, default 20]."),
    _Flag("--breaker-window", "breaker_window", click.IntRange(min=0),
          "Stop (exit 3) when at least --breaker-rate of the last N rows failed; 0 turns "
          "this off [job: breaker_window, default 200]."),
    _Flag("--breaker-rate", "breaker_rate", click.FloatRange(0, 1, min_open=True),
          "Error rate over --breaker-window that stops the run [job: breaker_rate, "
          "default 0.5]."),
)


def run_options(command: F) -> F:
    """Add the flags; their values go to the context, not to ``command``'s arguments."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {spec.field: kwargs.pop(spec.field) for spec in FLAGS}
        click.get_current_context().meta[_META_KEY] = values
        return command(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for spec in reversed(FLAGS):
        decorated = click.option(spec.flag, spec.field, type=spec.type, help=spec.help)(decorated)
    return decorated  # type: ignore[return-value]


def _values() -> dict[str, Any]:
    context = click.get_current_context(silent=True)
    if context is None:
        return {}
    return dict(context.meta.get(_META_KEY, {}))


def job_overrides() -> dict[str, Any]:
    """JobSpec overrides from the flags given (None for those not given)."""
    return _values()


def resume_flags() -> dict[str, Any]:
    """The flags given, for the resume command line."""
    values = _values()
    return {spec.flag: values.get(spec.field) for spec in FLAGS}
