"""Errors raised by bubbly_metrics.

Every error subclasses :class:`BubblyMetricsError`, itself a :class:`ValueError`, so callers
that already catch ``ValueError`` keep working.  Messages name the offending value and say
what to do; the CLI prints them as one line, Lambda handlers log and re-raise them.
"""

from __future__ import annotations


class BubblyMetricsError(ValueError):
    """Base class of every error raised on purpose by bubbly_metrics."""


class ExportNotFoundError(BubblyMetricsError):
    """No completed export of the wanted kind exists at the given location."""


class ExportLocationError(BubblyMetricsError):
    """The export location does not exist or cannot be read."""


class UnsupportedExportError(BubblyMetricsError):
    """The export exists but is in a format this library does not read (e.g. ION)."""


class ExportIntegrityError(BubblyMetricsError):
    """A data file failed verification (checksum or item count) against its manifest."""


class ExportWindowError(BubblyMetricsError):
    """The chosen incremental export's window does not cover the requested day."""


class InvalidDateError(BubblyMetricsError):
    """A date argument is not ``YYYY-MM-DD`` or a date range is reversed."""


class InvalidArgumentError(BubblyMetricsError):
    """An argument has a value the function does not accept."""
