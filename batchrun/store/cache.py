"""Answers by request: ``--reuse OLD_RUN_DIR`` serves rows whose request was answered before.

The cache key is sha256 over the endpoint and the sha256 of the exact request body bytes. The
body holds the model, the messages, every option (stream, include_thoughts, reasoning_effort,
tools, extra_body) and media inlined as base64 data URLs, so the bytes of every local media
file are covered; the endpoint is in the key because the same body sent to another gateway is
another answer. The key is stored with every journal line (``cache_key``).

Only ``ok`` answers are served. The lookup table keeps 20 bytes a row (key prefix, place in
the old journal); a hit is confirmed by reading that journal line and comparing its full key.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Any

import orjson

from batchrun.core.result import STATUS_OK, RowResult, extra_of
from batchrun.store.keys import key_prefix, record_key
from batchrun.store.rundir import RunDir

REUSED_EXTRA_KEY = "batchrun_reused"


class AnswerCache:
    """The ok answers of an earlier run directory, looked up by cache key."""

    def __init__(self, run_path: Path, journal_path: Path, endpoint: str | None,
                 entries: list[tuple[int, int, int]]) -> None:
        self.run_path = run_path
        self._endpoint = endpoint
        self._journal_path = journal_path
        entries.sort()
        self._prefixes = array("Q", (prefix for prefix, _, _ in entries))
        self._offsets = array("Q", (offset for _, offset, _ in entries))
        self._lengths = array("L", (length for _, _, length in entries))
        self._journal = open(journal_path, "rb")  # noqa: SIM115 - closed by close()
        self.hits = 0

    @classmethod
    def open(cls, run_path: Path) -> AnswerCache:
        """Index the ok answers of ``run_path`` (an InputError if it holds no run)."""
        old = RunDir(run_path)
        info = old.read_info()
        entries = list(old.cache_entries())
        return cls(run_path, old.journal_path, info.get("endpoint"), entries)

    def __len__(self) -> int:
        return len(self._prefixes)

    def close(self) -> None:
        self._journal.close()

    def contains(self, key: str) -> bool:
        return self._find(key) is not None

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The earlier journal record whose request had this key, or None."""
        record = self._find(key)
        if record is not None:
            self.hits += 1
        return record

    def _find(self, key: str) -> dict[str, Any] | None:
        prefix = key_prefix(key)
        at = bisect_left(self._prefixes, prefix)
        while at < len(self._prefixes) and self._prefixes[at] == prefix:
            self._journal.seek(self._offsets[at])
            try:
                record = orjson.loads(self._journal.read(self._lengths[at]))
            except orjson.JSONDecodeError:
                record = None
            if (isinstance(record, dict) and record.get("status") == STATUS_OK
                    and record_key(record, self._endpoint) == key):
                return record
            at += 1
        return None

    def reused_result(self, record: dict[str, Any], *, row_id: str, key: str,
                      request_sha: str, now: float) -> RowResult:
        """The new run's result for a reused answer: nothing sent (attempts 0), nothing paid
        (credits, credits_computed, cost_usd 0); what the earlier run paid is in ``extra``."""
        extra = extra_of(record)
        origin = extra.get(REUSED_EXTRA_KEY) or {
            "run_dir": str(self.run_path.resolve()),
            "id": record.get("id"),
            "credits": record.get("credits"),
            "credits_computed": record.get("credits_computed"),
            "cost_usd": record.get("cost_usd"),
            "finished_at": record.get("finished_at"),
        }
        extra[REUSED_EXTRA_KEY] = origin
        return RowResult(
            id=row_id,
            status=STATUS_OK,
            content=record.get("content"),
            thoughts=record.get("thoughts"),
            finish_reason=record.get("finish_reason"),
            model=record.get("model"),
            prompt_tokens=record.get("prompt_tokens"),
            completion_tokens=record.get("completion_tokens"),
            reasoning_tokens=record.get("reasoning_tokens"),
            total_tokens=record.get("total_tokens"),
            http_status=record.get("http_status"),
            response_id=record.get("response_id"),
            credits=0.0,
            credits_computed=0.0,
            cost_usd=0.0,
            attempts=0,
            started_at=now,
            finished_at=now,
            request_sha256=request_sha,
            extra=orjson.dumps(extra).decode(),
            parsed=record.get("parsed"),  # the same request: the same schema, checked there
            cache_key=key,
            reused_from=str(origin.get("run_dir")),
        )

