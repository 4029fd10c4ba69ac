"""Which decoder reads data files: the compiled simdjson one, or msgspec.

The compiled decoder (:mod:`bubbly_metrics._fastscan`) is optional: it is built on install
when a C++ compiler is there (the Lambda bundle carries one cross-built for arm64).  ``BUBBLY_METRICS_DECODER=msgspec``
turns it off (benchmarks, and tests of the fallback); worker processes read the same variable,
so they choose as this process does.  msgspec (:mod:`bubbly_metrics._decode`) is always there
and is the reference: the compiled decoder takes only blocks whose every line is a plain
record or delete, and leaves any other block to msgspec.

The choice is made once, at import, and read at run time from :data:`FAST` (tests set it to
None to run the msgspec path).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

__all__ = ["COUNT_ENV", "COUNTING", "ENV", "FAST", "built", "decoder", "wanted"]

ENV = "BUBBLY_METRICS_DECODER"
"""The environment variable that turns the compiled decoder off (``msgspec``)."""

logger = logging.getLogger("bubbly_metrics.scan")


def _setting(name: str, choices: dict[str, bool], default: bool) -> bool:
    """The switch environment variable ``name`` sets (case and blanks ignored), else ``default``.

    A value not in ``choices`` is one warning line (it would otherwise be silently ignored).
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = choices.get(raw.strip().lower())
    if value is None:
        logger.warning("%s=%r is not one of %s: ignored, the default stays", name, raw, "/".join(choices))
        return default
    return value


def _fast_decoder() -> Any:
    """The compiled simdjson decoder (:mod:`bubbly_metrics._fastscan`), or None.

    None when it is not built, or when ``BUBBLY_METRICS_DECODER=msgspec`` turns it off
    (``simdjson``, the default, asks for it).
    """
    if not _setting(ENV, {"simdjson": True, "msgspec": False}, True):
        return None
    try:
        from bubbly_metrics import _fastscan  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastscan


FAST = _fast_decoder()
"""The compiled decoder module, or None (msgspec reads everything)."""


COUNT_ENV = "BUBBLY_METRICS_COUNT"
"""The environment variable that turns counting in the compiled decoder off (``0``; also
``false``, ``no``, ``off``; ``1``, ``true``, ``yes``, ``on`` keep it on).

On by default: paired, it takes ~23% less CPU than handing every record to Polars at 2M and
10M items, in less memory (docs/performance.md has the figures)."""

_SWITCH = {"0": False, "false": False, "no": False, "off": False, "1": True, "true": True, "yes": True, "on": True}

COUNTING = FAST is not None and _setting(COUNT_ENV, _SWITCH, True)
"""Whether the aggregate path lets the compiled decoder count plain records itself.

Records whose outcome is plain (ignored; counted or outside the range with a plainly spelled
timestamp) are then counted per (day, app, user) in C++ instead of becoming rows; every other
record still becomes a row that Polars classifies (:mod:`bubbly_metrics.records`).  Tests set it
to compare both routes (tests/test_counting.py).
"""


def decoder() -> str:
    """Which decoder reads data files: ``"simdjson"`` (compiled, with the GIL released) or ``"msgspec"``."""
    return "simdjson" if FAST is not None else "msgspec"


@functools.lru_cache(maxsize=16)
def built(columns: frozenset[str] | None) -> frozenset[str] | None:
    """The columns a decoder builds for ``columns`` (None: all).

    A timestamp's value and type are built as a pair, by both decoders alike: one batch can
    hold blocks from both, and its frames must have the same columns.
    """
    if columns is None:
        return None
    pairs = [frozenset({name, f"{name}_type"}) for name in ("created_at", "updated_at")]
    return columns.union(*(pair for pair in pairs if pair & columns))


@functools.lru_cache(maxsize=16)
def wanted(columns: frozenset[str] | None) -> int:
    """The compiled decoder's bit mask of the columns to build (:func:`built`; ``line`` always is)."""
    names = built(columns)
    return sum(1 << i for i, name in enumerate(FAST.COLUMNS) if names is None or name in names)
