"""Bounded, printable text for values that come from outside: events, exports, files.

Anything a caller controls may be a megabyte long, hold control characters that rewrite a
terminal, or hold a lone surrogate that no encoder accepts.  Logs, errors, results and
examples show such values through :func:`clip` (at most ~200 characters), and terminals
through :func:`printable` (control characters escaped).
"""

from __future__ import annotations

import re

__all__ = ["CLIP", "clip", "printable"]

CLIP = 200
"""Characters of an outside value kept in a log line, an error, a result or an example."""

# C0 and C1 controls and DEL (a terminal acts on them), lone surrogates (no encoder writes
# them), the line and paragraph separators, and bidirectional overrides (they reorder what
# a reader sees).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def clip(value: object, limit: int = CLIP) -> str:
    """``value`` as text (a string as is, anything else by ``repr``), cut to ``limit`` characters.

    What was cut is said, so a clipped value is never mistaken for the whole one.

    >>> clip("2025-01-17")
    '2025-01-17'
    >>> clip("x" * 300, 5)
    'xxxxx… (295 more characters)'
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except RecursionError:  # a structure nested deeper than repr can walk
            text = f"<{type(value).__name__} nested too deep to show>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def printable(text: str) -> str:
    r"""``text`` with control characters, lone surrogates and bidi overrides backslash-escaped.

    >>> printable("ok\x1b[2Jgone\n")
    'ok\\x1b[2Jgone\\n'
    """
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
