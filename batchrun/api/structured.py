"""Checking a structured answer (pure): strip what models wrap JSON in, parse it, validate it
against the row's JSON Schema.

Models asked for JSON still wrap it: code fences (```json … ```), thought tags left in the
content (Gemini's reasoning is known to leak into JSON answers at higher effort), a sentence
before or after. Those are taken off; what is left must parse as JSON and fit the schema. The
error says what did not fit, in words the model is shown when it is asked again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

_THOUGHT_BLOCKS = re.compile(r"<(thought|think|thinking)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Checked:
    """An answer checked against a schema: ``parsed`` (compact JSON text) when it fits,
    else ``error``."""

    parsed: str | None
    error: str | None

    @property
    def fits(self) -> bool:
        return self.error is None


def clean_answer(content: str) -> str:
    """The answer without thought blocks and code fences (the fenced part when there is one)."""
    text = _THOUGHT_BLOCKS.sub("", content)
    fenced = _FENCE.search(text)
    if fenced is not None:
        text = fenced.group(1)
    return text.strip()


def parse_answer(content: str) -> Any:
    """The JSON value of an answer: cleaned, else the outermost ``{…}`` or ``[…]`` in it
    (a sentence around it); ValueError when there is none."""
    text = clean_answer(content)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            try:
                return orjson.loads(text[start : end + 1])
            except orjson.JSONDecodeError:
                continue
    raise ValueError("the answer is not JSON" + (f": {text[:80]!r}" if text else " (empty)"))


_VALIDATORS: dict[int, tuple[Mapping[str, Any], Validator]] = {}


def _validator(schema: Mapping[str, Any]) -> Validator:
    """One validator per schema object (schemas are shared, cached objects)."""
    known = _VALIDATORS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    # Imported here: runs without a schema (most) do not pay for importing it at start-up.
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    validator: Validator = cls(schema)
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def check_answer(content: str, schema: Mapping[str, Any]) -> Checked:
    """Parse ``content`` and validate it against ``schema``."""
    try:
        value = parse_answer(content)
    except ValueError as exc:
        return Checked(None, str(exc))
    from jsonschema.exceptions import best_match

    error = best_match(_validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        message = f"at {where}: {error.message}" if where else error.message
        return Checked(None, message[:MAX_ERROR_CHARS])
    return Checked(orjson.dumps(value).decode(), None)
