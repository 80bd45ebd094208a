"""How a request asks for structured output (pure): the schema told in the prompt, as
``response_format`` where the endpoint is known to accept it, and the turns that ask again
when an answer did not fit.

The gateway's API reference (https://api.aivideoapi.ai) lists no ``response_format``, so the
schema always goes in the prompt; OpenAI's API documents ``response_format`` with
``json_schema`` (https://platform.openai.com/docs/guides/structured-outputs), so there it
goes both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from batchrun.manifest.job import JobSpec

# The line before the schema in the prompt (the shipped emulator finds the schema by it).
SCHEMA_HEADING = "JSON Schema of the answer:"
# Hosts whose API is documented to take response_format {"type": "json_schema", …}.
RESPONSE_FORMAT_HOSTS = ("api.openai.com",)


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """What the prompt says about the answer's form."""
    return (
        "Answer with one JSON value that fits the JSON Schema below, and nothing else: no "
        "code fences, no explanation, no thoughts.\n"
        f"{SCHEMA_HEADING}\n{orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()}"
    )


def with_instruction(system: str | None, schema: Mapping[str, Any]) -> str:
    """A system prompt followed by the schema instruction."""
    instruction = schema_instruction(schema)
    return f"{system}\n\n{instruction}" if system else instruction


def wants_response_format(job: JobSpec) -> bool:
    """Whether bodies carry the schema as ``response_format`` too."""
    if job.schema_response_format != "auto":
        return job.schema_response_format == "always"
    host = urlsplit(job.resolved_endpoint()).hostname or ""
    return host in RESPONSE_FORMAT_HOSTS


def response_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` of a JSON Schema (not strict: any schema is allowed)."""
    return {"type": "json_schema",
            "json_schema": {"name": "answer", "schema": dict(schema), "strict": False}}


def reask_turns(answer: str, error: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer that did not fit, and the user turn that says why and asks again."""
    return (
        {"role": "assistant", "content": answer},
        {"role": "user", "content": (
            f"That answer does not fit the JSON Schema: {error}. Answer again with only the "
            "JSON value that fits it.")},
    )
