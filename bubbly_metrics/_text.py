"""Bounding text taken from outside (export keys, manifest fields, record keys) before it is shown.

A value read from an export can be any size: a 1 MB ``owner`` or a 1 MB manifest key would
become a 1 MB error message, log line or Lambda result.  Everything the library echoes from an
export goes through :func:`clip` (SPEC §11: about 200 characters).
"""

from __future__ import annotations

__all__ = ["CLIP", "clip"]

CLIP = 200
"""Characters of an outside value kept in errors, logs and examples."""


def clip(value: object, limit: int = CLIP) -> str:
    """``value`` as text (``str``, or ``repr`` for non-strings), cut to ``limit`` characters.

    What was cut is said, so a clipped value is never mistaken for the whole one.

    Examples
    --------
    >>> clip("x" * 300, 5)
    'xxxxx… (295 more characters)'
    >>> clip(None)
    'None'
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
