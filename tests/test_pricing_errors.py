"""Pure tests: the gateway's billing formula and its error table mapped to exception classes
(both from its API reference, https://api.aivideoapi.ai)."""

from __future__ import annotations

import pytest
from support.error_table import ERROR_TABLE

from batchrun.core import errors
from batchrun.cost.catalog import CATALOG, USD_PER_CREDIT, price_for


def test_reference_example_formula() -> None:
    price = CATALOG["gemini-3.1-pro"].price
    # The API reference's example answer: 194 prompt, 229 completion, 457 reasoning tokens
    # (not billed).
    assert price.credits(194, 229) == pytest.approx(194 * 160 / 1e6 + 229 * 960 / 1e6)
    assert price.credits(194, 229) == pytest.approx(0.25088)
    assert price.usd(160.0) == pytest.approx(0.80)
    assert USD_PER_CREDIT == 0.005


def test_price_of_a_suffixed_model_version_is_its_base() -> None:
    assert price_for("gemini-3.1-pro-preview") is CATALOG["gemini-3.1-pro"].price


@pytest.mark.parametrize(
    ("status", "code", "error_type", "cls"),
    ERROR_TABLE,
)
def test_error_table_maps_to_classes(
    status: int, code: str, error_type: str, cls: type[errors.BatchrunError]
) -> None:
    body = (
        f'{{"error": {{"code": "{code}", "message": "m", "type": "{error_type}"}}}}'.encode()
    )
    error = errors.error_from_response(status, body, retry_after=2.0)
    assert type(error) is cls
    assert (error.http_status, error.code, error.error_type) == (status, code, error_type)
    assert error.retry_after == 2.0


@pytest.mark.parametrize(
    ("status", "family"),
    [(502, errors.RetryableError), (504, errors.RetryableError), (418, errors.RowError),
     (401, errors.FatalError), (402, errors.FatalError), (404, errors.EndpointNotFoundError),
     (301, errors.EndpointNotFoundError)],
)
def test_non_json_bodies_still_map_by_status(
    status: int, family: type[errors.BatchrunError]
) -> None:
    error = errors.error_from_response(status, b"<html><h1>Bad Gateway</h1></html>")
    assert isinstance(error, family)
    assert "Bad Gateway" in error.message


def test_families_drive_the_runner() -> None:
    assert issubclass(errors.SpendLimitError, errors.FatalError)
    assert issubclass(errors.RateLimitedError, errors.RetryableError)
    assert issubclass(errors.MediaError, errors.RowError)
    assert not issubclass(errors.SpendLimitError, errors.RetryableError)


def test_a_model_version_has_every_fact_of_its_family() -> None:
    """One lookup rule for every fact: gemini-3.1-pro-preview used to get a price from the
    price table but no context-window check from the window table."""
    from batchrun.cost.catalog import CATALOG, GEMINI_2_RULES, model_facts
    from batchrun.cost.limits import prompt_too_large

    base = CATALOG["gemini-3.1-pro"]
    for name in ("gemini-3.1-pro-preview", "models/gemini-3.1-pro-001", "Gemini-3.1-Pro"):
        assert model_facts(name) is base, name
    assert prompt_too_large("gemini-3.1-pro-preview", 2_000_000) is not None
    unknown = model_facts("gemini-2.5-flash")
    assert not unknown.known and unknown.context_window is None
    assert unknown.price == base.price and unknown.media_rules is GEMINI_2_RULES
    assert prompt_too_large("gemini-2.5-flash", 10**9) is None  # unknown window: not checked
