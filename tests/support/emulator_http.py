"""Plain HTTP against the emulator: the gateway's example request body, ready to change."""

from __future__ import annotations

from typing import Any

MODEL = "gemini-3.1-pro"


def chat_body(**overrides: Any) -> dict[str, Any]:
    """The API reference's first example request, with ``overrides`` applied."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi, introduce yourself"}],
    }
    body.update(overrides)
    return body
