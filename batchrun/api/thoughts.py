"""Thought blocks: ``<thought>…</thought>`` (or ``<think>``) at the very start of ``content``,
and the ``reasoning_content`` / ``reasoning`` message fields, made into ``Completion.thoughts``.

Pure, and shared by the one-shot parse (``response``) and the stream (``stream``): both split
the same text the same way.
"""

from __future__ import annotations

from typing import Any

# Thought blocks some gateways put at the very start of ``content`` instead of a field.
_THOUGHT_TAGS = {"<thought>": "</thought>", "<think>": "</think>"}

_LOOKING, _IN_THOUGHT, _CONTENT = 0, 1, 2


class ThoughtSplitter:
    """Moves ``<thought>…</thought>`` blocks at the start of content into thoughts.

    Fed piece by piece (tags may be cut anywhere between chunks) or all at once: both give the
    same result. Only leading blocks count; a tag later in the answer is content.
    """

    __slots__ = ("content_parts", "thought_parts", "_state", "_pending", "_close", "_after")

    def __init__(self) -> None:
        self.content_parts: list[str] = []
        self.thought_parts: list[str] = []
        self._state = _LOOKING
        self._pending = ""
        self._close = ""
        self._after = False  # a thought block was closed: trim whitespace before the answer

    def feed(self, text: str) -> None:
        if self._state == _CONTENT:
            if text:
                self.content_parts.append(text)
            return
        self._pending += text
        while True:
            if self._state == _IN_THOUGHT:
                end = self._pending.find(self._close)
                if end < 0:
                    keep = _partial_suffix(self._pending, self._close)
                    cut = len(self._pending) - keep
                    if cut:
                        self.thought_parts.append(self._pending[:cut])
                        self._pending = self._pending[cut:]
                    return
                self.thought_parts.append(self._pending[:end])
                self._pending = self._pending[end + len(self._close):]
                self._state = _LOOKING
                self._after = True
                continue
            stripped = self._pending.lstrip()
            if not stripped:
                return
            for tag, close in _THOUGHT_TAGS.items():
                if stripped.startswith(tag):
                    if self.thought_parts:
                        self.thought_parts.append("\n")
                    self._state = _IN_THOUGHT
                    self._close = close
                    self._pending = stripped[len(tag):]
                    break
            else:
                if any(tag.startswith(stripped) for tag in _THOUGHT_TAGS):
                    return  # could still become a tag: wait for more
                self.content_parts.append(stripped if self._after else self._pending)
                self._pending = ""
                self._state = _CONTENT
                return

    def finish(self) -> tuple[str, str]:
        """(content, thoughts) once the text is complete; an unclosed block is all thought."""
        if self._pending:
            if self._state == _IN_THOUGHT:
                self.thought_parts.append(self._pending)
            else:
                self.content_parts.append(
                    self._pending.lstrip() if self._after else self._pending)
            self._pending = ""
        self._state = _CONTENT
        return "".join(self.content_parts), "".join(self.thought_parts).strip()


def split_thoughts(text: str) -> tuple[str, str]:
    """(content, thoughts) of a whole answer text: leading thought blocks moved out."""
    if not text.lstrip().startswith("<"):
        return text, ""  # what nearly every answer is: no tag to look for (same result)
    splitter = ThoughtSplitter()
    splitter.feed(text)
    return splitter.finish()


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0

def field_thoughts(message: dict[str, Any], rest: dict[str, Any]) -> str:
    """The thoughts a message carries in ``reasoning_content`` (or else ``reasoning``); the
    other field, when it says something else or is not text, goes to ``rest``."""
    reasoning_content = message.get("reasoning_content")
    reasoning = message.get("reasoning")
    if isinstance(reasoning_content, str):
        if reasoning is not None and reasoning != reasoning_content:
            rest["reasoning"] = reasoning
        return reasoning_content
    if reasoning_content is not None:
        rest["reasoning_content"] = reasoning_content
    if isinstance(reasoning, str):
        return reasoning
    if reasoning is not None:
        rest["reasoning"] = reasoning
    return ""


def join_thoughts(field: str, tagged: str) -> str:
    """Thoughts from a field and from leading tags, one after the other."""
    if field and tagged:
        return f"{field}\n{tagged}"
    return field or tagged
