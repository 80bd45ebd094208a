"""Whether a streamed request asks for usage (pure): ``stream_options.include_usage``.

OpenAI's API sends a streamed answer's usage only when asked
(https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options), and
so do servers that copy it (vLLM). The gateway sends usage on every stream and its API
reference (https://api.aivideoapi.ai) lists no ``stream_options`` among the request's fields,
so ``auto`` asks everyone but the gateway's API: its host, or its model (``gemini-3.1-pro``
and its versions) served at any other address (a mirror, a proxy, a local copy of the API),
which gets only the fields the reference lists. A server of that model that does want to be
asked is named by ``stream_usage = "ask"``; the run's warning about answers without usage
says so.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from batchrun.cost.catalog import DEFAULT_MODEL, model_facts
from batchrun.manifest.job import DEFAULT_ENDPOINT, JobSpec

_GATEWAY_HOST = urlsplit(DEFAULT_ENDPOINT).hostname


def asks_stream_usage(job: JobSpec) -> bool:
    """Whether streamed bodies of ``job`` carry ``stream_options.include_usage``."""
    if job.stream_usage != "auto":
        return job.stream_usage == "ask"
    # The catalog's own lookup says which model a name is (its versions, a path prefix).
    return not (model_facts(job.model).name == DEFAULT_MODEL
                or _is_gateway(job.resolved_endpoint()))


@functools.lru_cache(maxsize=8)  # asked for every row
def _is_gateway(endpoint: str) -> bool:
    return urlsplit(endpoint).hostname == _GATEWAY_HOST


def ask_stream_usage(body: dict[str, Any]) -> None:
    """Add ``include_usage`` to the body's ``stream_options`` (kept if extra_body gave some)."""
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                              "include_usage": True}
