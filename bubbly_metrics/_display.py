"""How results show themselves: a one-line ``repr`` and a small HTML card for notebooks."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

#: Rows of a frame shown in a result's HTML card (the whole frame is one attribute away).
HEAD_ROWS = 10


def html_card(title: str, facts: Mapping[str, Any], frame: Any, *, name: str) -> str:
    """A heading, a two-column table of facts and the head of ``frame`` (a Polars DataFrame)."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td style='text-align:left'>"
        f"{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    shown = min(frame.height, HEAD_ROWS)
    caption = f"<p><code>.{name}</code>: {frame.height:,} rows" + (
        f", the first {shown}" if shown < frame.height else ""
    )
    return (
        f"<div><p><b>{html.escape(title)}</b></p><table>{rows}</table>{caption}</p>"
        f"{frame.head(HEAD_ROWS)._repr_html_()}</div>"
    )
