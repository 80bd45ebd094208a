"""A job's own price, from ``[job.price]`` or ``[job.pricing]`` (pure).

Both tables give credits per million tokens; they only differ in their keys:

- ``price = { input = 160, output = 960 }`` (optional ``usd_per_credit``), the short form;
- ``[job.pricing]`` with ``input_credits_per_m``, ``output_credits_per_m`` (optional
  ``usd_per_credit``), the long form.

Either becomes a ``Price``; without one, the model catalog's price applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun.core.errors import InputError
from batchrun.cost.catalog import USD_PER_CREDIT, Price

# table name → (its key for input credits per 1M, its key for output credits per 1M)
_KEYS = {
    "price": ("input", "output"),
    "pricing": ("input_credits_per_m", "output_credits_per_m"),
}


def job_price(price: Any, pricing: Any, source: str) -> Price | None:
    """The ``Price`` a job's ``price`` or ``pricing`` table gives, or None without either."""
    if price is not None and pricing is not None:
        raise InputError(f"{source}: give the job's price once, as [job.price] "
                         "{ input = …, output = … } or as [job.pricing], not both")
    if price is not None:
        return _from_table("price", price, source)
    if pricing is not None:
        return _from_table("pricing", pricing, source)
    return None


def _from_table(name: str, table: Any, source: str) -> Price:
    input_key, output_key = _KEYS[name]
    usage = (f"[job.{name}] takes {input_key} and {output_key} (credits per 1M prompt and "
             "completion tokens) and optionally usd_per_credit")
    if not isinstance(table, Mapping):
        raise InputError(f"{source}: {usage}; got {table!r}")
    unknown = sorted(set(table) - {input_key, output_key, "usd_per_credit"})
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)} in [job.{name}]; "
                         f"{usage}")
    missing = [key for key in (input_key, output_key) if key not in table]
    if missing:
        raise InputError(f"{source}: [job.{name}] lacks {' and '.join(missing)}; {usage}")
    return Price(
        input_credits_per_m=_number(table[input_key], f"{name}.{input_key}", source),
        output_credits_per_m=_number(table[output_key], f"{name}.{output_key}", source),
        usd_per_credit=_number(table.get("usd_per_credit", USD_PER_CREDIT),
                               f"{name}.usd_per_credit", source),
    )


def _number(value: Any, name: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InputError(f"{source}: {name} must be a number of 0 or more, not {value!r}")
    return float(value)
