"""One structured log call: a message and fields, for the JSON lines of the Lambda handlers.

The fields ride on the record (``extra={"fields": ...}``); the handlers' formatter
(:class:`bubbly_metrics.handlers._logging.JsonFormatter`) writes them as top-level keys of the
line, any other handler ignores them.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["log"]


def log(logger: logging.Logger, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with ``fields`` as top-level keys of the JSON line."""
    logger.log(level, message, extra={"fields": fields})
