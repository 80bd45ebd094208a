"""The line that goes with a printed resume command when the key came from ``--api-key``:
the command never holds the key, so as printed it would fail with "no API key"."""

from __future__ import annotations

from batchrun.plan.inputs import API_KEY_ENV


def api_key_hint(api_key: str | None, *, emulate: bool) -> str | None:
    """How to give the key to the printed command; None when it needs no hint."""
    if api_key is None or emulate:
        return None
    # Worded without the flag's name: a printed line that holds it looks like a leaked key.
    return (f"the command leaves out the key given on the command line (a key is never printed "
            f"or stored): first `export {API_KEY_ENV}=<your key>`")
