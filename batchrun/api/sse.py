"""Incremental Server-Sent Events decoder: bytes in, ``data`` payloads out (no I/O).

Follows the WHATWG event-stream rules that matter for chat completions: lines end in
``\\r\\n``, ``\\n`` or ``\\r``; a blank line dispatches the event; ``data`` lines of one event are
joined with ``\\n``; ``:`` comments and other fields (``event``, ``id``, ``retry``) are ignored.
Lines are split on bytes and decoded whole, so a UTF-8 character cut between two reads is
never mangled.
"""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Feed it the body as it arrives; it returns the data of each completed event."""

    __slots__ = ("_tail", "_data", "_skip_lf", "_at_start")

    def __init__(self) -> None:
        self._tail: list[bytes] = []  # bytes of the current, unterminated line
        self._data: list[bytes] = []  # data lines of the current event
        self._skip_lf = False  # the previous feed ended in "\r": a leading "\n" completes it
        self._at_start = True  # a UTF-8 BOM may still open the stream

    def feed(self, data: bytes) -> list[str]:
        """Take the next bytes of the stream; return the data of the events they complete."""
        return [event.decode("utf-8", "replace") for event in self.feed_bytes(data)]

    def flush(self) -> list[str]:
        """End of stream: dispatch what is pending, even without its final blank line.

        The standard drops an event the stream cut short; we hand it on instead, so the caller
        can tell a cut-off JSON chunk (an error) from a server that omits the last blank line.
        """
        return [event.decode("utf-8", "replace") for event in self.flush_bytes()]

    def feed_bytes(self, data: bytes) -> list[bytes]:
        """``feed`` without the decoding: each completed event's data as bytes (a JSON parser
        takes bytes; decoding first would only copy them)."""
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if self._at_start:
            data = self._strip_bom(data)
        if not data:
            return []
        has_cr = b"\r" in data  # held bytes never have one: it would have ended their line
        if not has_cr and b"\n" not in data:
            self._tail.append(data)
            return []
        if self._tail:
            self._tail.append(data)
            data = b"".join(self._tail)
        # Servers end lines with "\n" nearly always; bytes.split is several times the regex.
        lines = _LINE_END.split(data) if has_cr else data.split(b"\n")
        last = lines.pop()  # the unterminated rest ("" when data ends with a line end)
        self._tail = [last] if last else []
        if not last and data[-1] == 0x0D:
            self._skip_lf = True
        events: list[bytes] = []
        heads = lines[::2]
        if not self._data and len(lines) & 1 == 0 and all(heads) and not any(lines[1::2]):
            # The usual read: whole events of one line each, a blank line after every one.
            # Each line is then an event by itself (data) or nothing (comment, other field).
            for line in heads:
                if line.startswith(b"data: "):
                    events.append(line[6:])
                elif line.startswith(b"data:"):
                    events.append(line[5:])
                elif line == b"data":
                    events.append(b"")
        else:
            self._take_lines(lines, events)
        return events

    def flush_bytes(self) -> list[bytes]:
        """``flush`` without the decoding."""
        lines: list[bytes] = []
        if self._at_start:
            self._tail = []  # only part of a BOM ever arrived
        if self._tail:
            lines.append(b"".join(self._tail))
            self._tail = []
        lines.append(b"")
        self._skip_lf = False
        events: list[bytes] = []
        self._take_lines(lines, events)
        return events

    def _strip_bom(self, data: bytes) -> bytes:
        """Drop a leading UTF-8 BOM, even when it arrives split across feeds."""
        head = b"".join(self._tail) + data if self._tail else data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            if data:
                self._tail = [head]
            return b""
        self._at_start = False
        self._tail = []
        return head[len(_BOM):] if head.startswith(_BOM) else head

    def _take_lines(self, lines: list[bytes], events: list[bytes]) -> None:
        data_lines = self._data
        for line in lines:
            if not line:
                if data_lines:
                    events.append(data_lines[0] if len(data_lines) == 1
                                  else b"\n".join(data_lines))
                    data_lines = self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value[:1] == b" " else value)
            elif line == b"data":
                data_lines.append(b"")
            # anything else is a ":" comment (keep-alive) or a field we do not use
