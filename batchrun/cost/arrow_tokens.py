"""``tokens.text_tokens`` over a whole Arrow column at once (pure): the same per-script rule,
computed in Arrow's kernels instead of a Python call per row.

ASCII text is ``ceil(bytes / 4)``. For the rest, characters beyond Latin Extended-B and CJK
characters are counted by deleting every other run of characters (RE2, in C) and measuring
what is left, then ``ceil(latin / 4 + cjk × 1 + other / 2)`` in float64, the same operations
in the same order as ``text_tokens``, so both give the same integer for every text.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.cost.tokens import (
    CHARS_PER_TOKEN_LATIN,
    CHARS_PER_TOKEN_OTHER,
    TOKENS_PER_CJK_CHAR,
)

# The ranges of ``tokens._CJK_RUNS`` and ``tokens._NON_LATIN_RUNS``, in RE2's syntax.
_CJK = (r"\x{3040}-\x{30FF}\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{AC00}-\x{D7AF}"
        r"\x{F900}-\x{FAFF}\x{20000}-\x{2FA1F}")
_LATIN_RUNS = r"[\x{0}-\x{24F}]+"
_NOT_CJK_RUNS = f"[^{_CJK}]+"


def text_tokens_total(texts: pa.Array | pa.ChunkedArray) -> int:
    """The sum of ``text_tokens`` over the non-null strings of ``texts``."""
    if len(texts) == 0:
        return 0
    ascii_mask = pc.fill_null(pc.string_is_ascii(texts), True)
    quarters = pc.divide(pc.add(pc.binary_length(texts), 3), 4)  # ceil(bytes / 4), in ints
    total = pc.sum(pc.if_else(ascii_mask, quarters, 0)).as_py() or 0
    others = pc.drop_null(pc.filter(texts, pc.invert(ascii_mask)))
    if len(others) == 0:
        return int(total)
    length = pc.utf8_length(others)
    beyond_latin = pc.replace_substring_regex(others, _LATIN_RUNS, "")
    non_latin = pc.utf8_length(beyond_latin)
    cjk = pc.utf8_length(pc.replace_substring_regex(beyond_latin, _NOT_CJK_RUNS, ""))
    latin = _floats(pc.subtract(length, non_latin))
    other = _floats(pc.subtract(non_latin, cjk))
    tokens = pc.add(pc.add(pc.divide(latin, CHARS_PER_TOKEN_LATIN),
                           pc.multiply(_floats(cjk), TOKENS_PER_CJK_CHAR)),
                    pc.divide(other, CHARS_PER_TOKEN_OTHER))
    return int(total) + int(pc.sum(pc.cast(pc.ceil(tokens), pa.int64())).as_py() or 0)


def _floats(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.float64())
