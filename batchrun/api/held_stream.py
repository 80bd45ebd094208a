"""A streamed answer's body, read by read, into one ``Completion`` (pure: no I/O).

The reads go through the SSE decoder (``sse``) into the chunk accumulator (``stream``), held
and parsed together rather than each as it comes: see ``HeldStream``.
"""

from __future__ import annotations

from batchrun.api.sse import SSEDecoder
from batchrun.api.stream import StreamAccumulator, decode_event
from batchrun.core.errors import TransportError
from batchrun.core.result import Completion

# Body bytes a stream holds before it parses them although no end is in sight (a long answer's
# reads are parsed in batches of about this size, never all kept raw to the end).
HOLD_BYTES = 16 * 1024
# What may end a stream, or end it in error: parse what is held when a read may contain one.
_DONE = b"[DONE]"
_ERROR = b'"error"'
_PROBE = len(_ERROR) - 1  # bytes of a read kept to find a marker cut between two reads


class HeldStream:
    """A streamed answer's body as it arrives (``take``), its ``Completion`` at the end.

    The reads are held and parsed together, once a read may hold ``[DONE]`` or an error event
    (or ``HOLD_BYTES`` are held), rather than each as it comes: a 4-part answer parsed in one
    go costs about two thirds of the same parsed part by part (``bench/RESULTS.md``, issue
    13), with the same result for any split of the same bytes. An error event is still
    raised as soon as its read is in; nothing waits for more bytes than before.
    """

    __slots__ = ("decoder", "accumulator", "_held", "_held_bytes", "_tail")

    def __init__(self, http_status: int = 200) -> None:
        self.decoder = SSEDecoder()
        self.accumulator = StreamAccumulator(http_status)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._tail = b""  # the last bytes of the previous read

    @property
    def held_bytes(self) -> int:
        """Body bytes taken but not parsed yet."""
        return self._held_bytes

    def take(self, data: bytes) -> bool:
        """Take the next read; True once ``[DONE]`` is parsed (then call ``finish``)."""
        self._held.append(data)
        self._held_bytes += len(data)
        probe = self._tail + data[:_PROBE]
        self._tail = data[-_PROBE:]
        if (_DONE in data or _ERROR in data or _DONE in probe or _ERROR in probe
                or self._held_bytes >= HOLD_BYTES):
            return self._parse_held()
        return False

    def finish(self) -> Completion:
        """The answer, after ``take`` saw ``[DONE]``."""
        return self.accumulator.finish(saw_done=True)

    def end(self) -> Completion:
        """End of body without ``[DONE]`` so far: the answer if it is complete."""
        if self._held and self._parse_held():
            return self.finish()
        return end_of_stream(self.decoder, self.accumulator)

    def _parse_held(self) -> bool:
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_bytes = 0
        return self.accumulator.feed_payloads(self.decoder.feed_bytes(data))


def end_of_stream(decoder: SSEDecoder, accumulator: StreamAccumulator) -> Completion:
    """End of body without ``[DONE]``: take what the decoder still holds, then judge whether
    the answer is complete (``finish_reason`` and usage in: a server that omits ``[DONE]``)."""
    for event in decoder.flush():
        data = event.strip()
        if data == "[DONE]":
            return accumulator.finish(saw_done=True)
        if not data:
            continue
        try:
            chunk = decode_event(data)
        except TransportError as exc:
            raise TransportError(f"stream cut mid-event before [DONE] ({exc.message})") from None
        accumulator.add(chunk)
    return accumulator.finish(saw_done=False)
