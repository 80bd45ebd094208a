"""Request keys: what identifies a request across runs (``--reuse``), and the 8-byte prefix of
one that the journal index stores (pure)."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

_KEY_VERSION = b"batchrun-cache-v1"
# The embedded emulator (``--emulate``) listens on a new port every time while its answers
# depend on the request body only: its requests are keyed by this name instead of its URL, so
# ``--reuse`` between two ``--emulate`` runs finds them. Real endpoints are keyed by their URL.
EMULATOR_ENDPOINT = "batchrun-emulator"


def cache_key(endpoint: str, body_sha256: str) -> str:
    """sha256 hex over (endpoint without trailing slash, sha256 of the body bytes)."""
    digest = _endpoint_digest(endpoint).copy()
    digest.update(b"\0" + body_sha256.encode("ascii"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _endpoint_digest(endpoint: str) -> hashlib._Hash:
    """The key's hash fed up to the endpoint: one per run, copied for every row."""
    digest = hashlib.sha256(_KEY_VERSION)
    digest.update(b"\0" + endpoint.rstrip("/").encode("utf-8"))
    return digest


def record_key(record: dict[str, Any], endpoint: str | None) -> str | None:
    """A journal record's cache key: the stored one, else from its run's endpoint."""
    stored = record.get("cache_key")
    if stored:
        return str(stored)
    body_sha = record.get("request_sha256")
    if body_sha and endpoint:
        return cache_key(endpoint, str(body_sha))
    return None


def key_prefix(cache_key: str | None) -> int:
    """The first 8 bytes of a hex cache key as an int (0: none); a bucket, never the proof."""
    if not cache_key or len(cache_key) < 16:
        return 0
    try:
        return int(cache_key[:16], 16)
    except ValueError:
        return 0
