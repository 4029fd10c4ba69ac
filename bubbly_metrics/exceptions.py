"""Errors raised by bubbly_metrics.

Every error subclasses :class:`BubblyMetricsError`, itself a :class:`ValueError`, so callers
that already catch ``ValueError`` keep working.  Messages name the offending value and say
what to do; the CLI prints them as one line, Lambda handlers log and re-raise them.
"""

from __future__ import annotations

from collections.abc import Mapping


def placeholder(name: str = "param") -> str:
    """Where a message names a parameter (``name``: ``param`` or one of ``also``'s keys).

    Rendered by the error, and never mistaken for part of a value the message quotes: it holds
    NUL characters, which ``repr`` and :func:`~bubbly_metrics._text.clip` escape.
    """
    return f"\x00{name}\x00"


PARAM = placeholder()
"""The placeholder of the parameter an error is about: ``f"{PARAM} must be >= 1"``."""


class BubblyMetricsError(ValueError):
    """Base class of every error raised on purpose by bubbly_metrics.

    An error about one parameter carries it: ``param`` is the library's name for it (``start``,
    ``max_days``), and the message holds :data:`PARAM` where that name goes.
    A front door that calls the parameter something else (the CLI's ``--start``, the Lambda
    payload's ``backfillStartDate``) asks for :meth:`message_for` its own name; nothing rewrites
    a message by searching its text.

    ``called`` is the name the message itself gives the parameter when it is not ``param`` (the
    Lambda payload's ``backfillStartDate`` for :func:`~bubbly_metrics.dates.resolve_range`'s
    ``start``).  ``also`` names other parameters the message mentions, by placeholder: ``{"floor":
    "BACKFILL_FLOOR_DATE"}`` puts ``BACKFILL_FLOOR_DATE`` where ``placeholder("floor")`` is.

    >>> e = BubblyMetricsError(f"{PARAM} must be >= 1, got 0", param="max_days")
    >>> str(e), e.message_for("--max-days")
    ('max_days must be >= 1, got 0', '--max-days must be >= 1, got 0')
    >>> e = BubblyMetricsError(f"{PARAM} is before {placeholder('floor')}", param="start", called="backfillStartDate",
    ...                        also={"floor": "BACKFILL_FLOOR_DATE"})
    >>> str(e), e.message_for({"start": "--start", "floor": "--floor"})
    ('backfillStartDate is before BACKFILL_FLOOR_DATE', '--start is before --floor')
    """

    def __init__(
        self,
        message: str = "",
        *,
        param: str | None = None,
        called: str | None = None,
        also: Mapping[str, str] | None = None,
    ) -> None:
        self.param = param
        self._template = message
        self._names: dict[str, str] = dict(also or {})
        """Placeholder (a library parameter's name) -> the name the message gives it."""
        if param:
            self._names = {param: called or param, **self._names}
        super().__init__(self._render(self._names))

    def _render(self, names: Mapping[str, str]) -> str:
        text = self._template
        for key, name in names.items():
            text = text.replace(PARAM if key == self.param else placeholder(key), name)
        return text

    def message_for(self, name: str | Mapping[str, str] | None) -> str:
        """The message with the parameter called ``name`` (the message itself when ``name`` is None).

        ``name`` may map the library's parameter names to a front door's (every parameter the
        message names that the mapping lacks keeps the message's own name for it).
        """
        if not name or not self._names:
            return str(self)
        if isinstance(name, str):
            return self._render({**self._names, self.param: name}) if self.param else str(self)
        return self._render({param: name.get(param, called) for param, called in self._names.items()})


class ExportNotFoundError(BubblyMetricsError):
    """No completed export of the wanted kind exists at the given location."""


class ExportLocationError(BubblyMetricsError):
    """The export location does not exist or cannot be read."""


class UnsupportedExportError(BubblyMetricsError):
    """The export exists but is in a format this library does not read (e.g. ION)."""


class ExportIntegrityError(BubblyMetricsError):
    """A data file failed verification (checksum or item count) against its manifest."""


class ExportConfinementError(ExportIntegrityError):
    """A manifest lists a data file outside its export's data folder, twice, or that is not a regular file."""


class ExportWindowError(BubblyMetricsError):
    """The chosen export does not hold a requested day (out of its window, or after it was taken)."""

    def __init__(self, message: str, *, windows: tuple[str, ...] = (), param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.windows = windows
        """Every window there is, ``"<ExportId> <window>"`` (the message names the nearest only)."""


class InvalidDateError(BubblyMetricsError):
    """A date argument is not ``YYYY-MM-DD`` or a date range is reversed."""


class InvalidArgumentError(BubblyMetricsError):
    """An argument has a value the function does not accept."""


class ConfigurationError(BubblyMetricsError):
    """A required setting (e.g. a Lambda environment variable) is missing or empty."""


class ExportStartError(BubblyMetricsError):
    """DynamoDB refused to start a table export."""


class ExportWaitError(BubblyMetricsError):
    """A started export ended in FAILED, or did not finish within the wait's timeout."""


class OutputError(BubblyMetricsError):
    """Writing an output failed; ``report`` says what was and was not done."""

    def __init__(self, message: str, report: dict[str, object] | None = None, *, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.report: dict[str, object] = report or {}


class AnalyticsTableError(OutputError):
    """Items could not be written to (or read consistently from) the Analytics Table."""


class ConcurrentWriteError(AnalyticsTableError):
    """Another run changed a day of the Analytics Table while this one was writing it; this one stopped."""


class OutOfTimeError(AnalyticsTableError):
    """A write stopped before a day it could not finish in the time left; ``report`` says where to resume."""


class IncompleteExportError(BubblyMetricsError):
    """Data files the manifest lists could not be read: publishing would replace more data with less."""


class CloudWatchError(OutputError):
    """Metric datums could not be published to (or read from) CloudWatch."""


class PublishError(OutputError):
    """One or more outputs of a run failed; ``report`` holds the whole run's report."""


class WorkerError(BubblyMetricsError):
    """A worker process reading the export died or failed in a way that could not be reported."""


class PreflightError(BubblyMetricsError):
    """A check before long work failed: credentials, a table or a bucket (:mod:`bubbly_metrics.preflight`)."""
