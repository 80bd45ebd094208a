"""The lines that tell people about answers cut short (``finish_reason`` other than ``stop``):
how many, why, and the command that sends them again. ``status`` and ``run`` print them."""

from __future__ import annotations

from collections.abc import Mapping


def incomplete_lines(finish_reasons: Mapping[str, int], redo_command: str | None) -> list[str]:
    """Nothing when every answer ended with ``stop``."""
    cut = {reason: count for reason, count in finish_reasons.items() if reason != "stop"}
    if not cut:
        return []
    reasons = ", ".join(f"{reason} ×{count:,}" for reason, count in cut.items())
    lines = [f"incomplete answers (ok, but not finished with stop): {reasons}"]
    if redo_command:
        lines.append(f"  to send them again (paid): {redo_command}")
    return lines
