"""CloudWatch metrics: daily per-app datums published, and read back (docs/rules.md#cloudwatch).

Namespace ``BubblyClouds/Analytics``; metrics ``ActiveUsers``, ``GamesPlayed``,
``PartiesCreated``, ``PartiesJoined``; one dimension ``App``; unit ``Count``; timestamp = the
day at 00:00 UTC.

CloudWatch rejects a *whole* PutMetricData request if any datum is more than two weeks old or
more than two hours ahead.  Days whose 00:00 is older than 14 days minus a safety margin, and
days that have not started yet, are therefore never sent: they are counted and reported as
outside CloudWatch's window (normal in a backfill — the Analytics Table keeps every day).

CloudWatch cannot overwrite a datum: publishing a day again adds a second sample with the
same value.  Read daily values with the ``Maximum`` (or ``Average``) statistic, as
:func:`read_cloudwatch_metrics` does, and a re-run changes nothing that is shown.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bubbly_metrics import _aws as aws
from bubbly_metrics._aws import NAMESPACE
from bubbly_metrics._retry import Backoff, RetriesExhausted
from bubbly_metrics._time import midnight, utc_now
from bubbly_metrics.exceptions import CloudWatchError, InvalidArgumentError
from bubbly_metrics.metrics import METRIC_NAMES, METRICS_SCHEMA

__all__ = [
    "DEFAULT_MARGIN",
    "NAMESPACE",
    "OUTSIDE_WINDOW",
    "DatumPlan",
    "build_datums",
    "cloudwatch_window",
    "publish_metrics",
    "put_datums",
    "read_cloudwatch_metrics",
]

logger = logging.getLogger(__name__)

MAX_DATUMS = 1000  # PutMetricData: at most 1000 datums per request ...
MAX_REQUEST_BYTES = 1_000_000  # ... and a request body under 1 MB
MAX_DIMENSION_VALUE = 1024
DIMENSION_RULE = f"App dimension values must be 1-{MAX_DIMENSION_VALUE} printable ASCII characters, not all blanks"
"""What CloudWatch accepts as a dimension value (API reference, ``Dimension``): only ASCII, no
control characters, at least one non-whitespace character.  One datum that breaks it fails its
whole PutMetricData request, so apps that would are left out and reported instead."""
RETENTION = dt.timedelta(days=14)
DEFAULT_MARGIN = dt.timedelta(hours=1)
"""How much younger than two weeks a datum must be to be sent (clock skew, retries)."""

OUTSIDE_WINDOW = "outside CloudWatch's two-week window — stored in the Analytics Table only"


def cloudwatch_window(
    *, now: dt.datetime | None = None, margin: dt.timedelta = DEFAULT_MARGIN
) -> tuple[dt.date, dt.date]:
    """Return the first and last day whose datums CloudWatch accepts at ``now``.

    A day is sent when its 00:00 UTC is at most 14 days minus ``margin`` old and not in the
    future.

    >>> import datetime as dt
    >>> cloudwatch_window(now=dt.datetime(2025, 3, 18, 2, 30, tzinfo=dt.UTC))
    (datetime.date(2025, 3, 5), datetime.date(2025, 3, 18))
    """
    now = utc_now(now)
    if not isinstance(margin, dt.timedelta) or margin < dt.timedelta(0) or margin >= RETENTION:
        raise InvalidArgumentError(f"margin must be a timedelta between 0 and 14 days, got {margin!r}")
    oldest = now - RETENTION + margin
    first = oldest.date() if midnight(oldest.date()) >= oldest else oldest.date() + dt.timedelta(days=1)
    return first, now.date()


@dataclass(frozen=True)
class DatumPlan:
    """What a publish would send: the datums in the window and what was left out."""

    datums: list[dict[str, Any]]
    window: tuple[dt.date, dt.date]
    skipped_too_old: int = 0
    skipped_future: int = 0
    invalid: list[str] = field(default_factory=list)
    """Apps whose name CloudWatch would reject as a dimension value (not sent)."""
    skipped_invalid: int = 0
    """Datums of those apps (not sent)."""
    days_too_old: tuple[dt.date, dt.date] | None = None
    """First and last day left out as too old, if any."""


def build_datums(
    metrics: pl.DataFrame,
    *,
    now: dt.datetime | None = None,
    margin: dt.timedelta = DEFAULT_MARGIN,
) -> DatumPlan:
    """Turn daily metrics into PutMetricData datums, leaving out days outside the window.

    Parameters
    ----------
    metrics
        ``AggregateResult.metrics``: date, app and the four metric columns.
    now, margin
        As for :func:`cloudwatch_window`.

    Returns
    -------
    DatumPlan
    """
    if isinstance(metrics, pl.LazyFrame):
        metrics = metrics.collect()
    missing = [c for c in ("date", "app", *METRIC_NAMES) if c not in getattr(metrics, "columns", [])]
    if missing:
        raise InvalidArgumentError(f"metrics lacks column(s) {missing}")
    first, last = cloudwatch_window(now=now, margin=margin)
    frame = metrics.with_columns(pl.col("date").cast(pl.Date))
    per_row = len(METRIC_NAMES)
    old = frame.filter(pl.col("date") < first)
    future = frame.filter(pl.col("date") > last)
    inside = frame.filter(pl.col("date").is_between(first, last))
    app = pl.col("app")
    bad = inside.filter(
        app.str.contains(r"[^\x20-\x7e]")  # beyond printable ASCII: control characters, non-ASCII
        | (app.str.strip_chars(" ").str.len_chars() == 0)
        | (app.str.len_chars() > MAX_DIMENSION_VALUE)
    )
    inside = inside.join(bad.select("date", "app"), on=["date", "app"], how="anti")
    datums = []
    for row in inside.sort("date", "app").iter_rows(named=True):
        stamp = midnight(row["date"])
        for column, name in METRIC_NAMES.items():
            datums.append(
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "App", "Value": row["app"]}],
                    "Timestamp": stamp,
                    "Value": float(row[column] or 0),
                    "Unit": "Count",
                }
            )
    return DatumPlan(
        datums=datums,
        window=(first, last),
        skipped_too_old=old.height * per_row,
        skipped_future=future.height * per_row,
        invalid=sorted(set(bad["app"].to_list())),
        skipped_invalid=bad.height * per_row,
        days_too_old=(old["date"].min(), old["date"].max()) if old.height else None,  # type: ignore[arg-type]
    )


def _datum_bytes(datum: dict[str, Any]) -> int:
    # An upper bound on the datum's share of the request body whatever the wire protocol:
    # twice its JSON (botocore sends JSON or CBOR today; the older query protocol spells
    # every key out per member, about twice as long).
    text = json.dumps({**datum, "Timestamp": datum["Timestamp"].isoformat()}, ensure_ascii=True)
    return 2 * len(text) + 64


def _batches(datums: list[dict[str, Any]], namespace: str) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = base = 256 + 3 * len(namespace.encode())
    for datum in datums:
        cost = _datum_bytes(datum)
        if current and (len(current) >= MAX_DATUMS or size + cost > MAX_REQUEST_BYTES):
            batches.append(current)
            current, size = [], base
        current.append(datum)
        size += cost
    if current:
        batches.append(current)
    return batches


def _client(client: Any) -> Any:
    return aws.client("cloudwatch", client)


def _put(
    client: Any, namespace: str, batches: list[list[dict[str, Any]]], backoff: Backoff, report: dict[str, Any]
) -> None:
    """Send ``batches``, retrying throttling; count ``datumsPublished`` and record ``failures`` in ``report``."""
    for batch in batches:
        try:
            backoff.call(functools.partial(client.put_metric_data, Namespace=namespace, MetricData=batch))
        except RetriesExhausted as exhausted:
            exc = exhausted.error
            report["failures"].append(
                {
                    "target": "cloudwatch",
                    "datums": len(batch),
                    "days": f"{batch[0]['Timestamp']:%Y-%m-%d} → {batch[-1]['Timestamp']:%Y-%m-%d}",
                    "error": f"{type(exc).__name__}: {exc} (after {exhausted.attempts} attempt(s))",
                }
            )
            continue
        report["datumsPublished"] += len(batch)


def publish_metrics(
    metrics: pl.DataFrame,
    *,
    now: dt.datetime | None = None,
    client: Any = None,
    namespace: str = NAMESPACE,
    margin: dt.timedelta = DEFAULT_MARGIN,
    backoff: Backoff | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Publish daily metrics to CloudWatch (days inside its two-week window only).

    Parameters
    ----------
    metrics
        ``AggregateResult.metrics``.
    now
        The current time (UTC-aware; default: wall clock): decides which days are sent.
    client
        A boto3 CloudWatch client; built from the environment when not given.
    namespace
        The metrics' namespace.
    margin
        See :func:`cloudwatch_window`.
    backoff
        Retry policy for throttling (default: 10 attempts, 50 ms doubling to 5 s).
    dry_run
        Plan only: report what would be sent, send nothing.

    Returns
    -------
    dict
        JSON-able: ``datums`` (in the window), ``datumsPublished``, ``datumsSkippedTooOld``,
        ``datumsSkippedFuture``, ``window``, ``requests``, ``failures``, and ``note``
        explaining skipped days.

    Raises
    ------
    CloudWatchError
        After sending every batch it could, when any datum was not published (report
        attached as ``.report``).
    """
    plan = build_datums(metrics, now=now, margin=margin)
    batches = _batches(plan.datums, namespace)
    report = _plan_report(plan, namespace, requests=0 if dry_run else len(batches))
    if dry_run:
        report["batches"] = len(batches)
        return report
    _put(_client(client), namespace, batches, backoff or Backoff(), report)
    _raise_failures(report, total=len(plan.datums) + plan.skipped_invalid)
    logger.info(
        "published %d datum(s) to %s in %d request(s)",
        report["datumsPublished"],
        namespace,
        len(batches),
    )
    return report


def _plan_report(plan: DatumPlan, namespace: str, *, requests: int) -> dict[str, Any]:
    """:func:`publish_metrics`' report before sending: counts, the window, notes, invalid apps."""
    report: dict[str, Any] = {
        "namespace": namespace,
        "datums": len(plan.datums),
        "datumsPublished": 0,
        "datumsSkippedTooOld": plan.skipped_too_old,
        "datumsSkippedFuture": plan.skipped_future,
        "window": {"from": plan.window[0].isoformat(), "to": plan.window[1].isoformat()},
        "requests": requests,
        "failures": [],
    }
    if plan.skipped_too_old:
        first, last = plan.days_too_old or (None, None)
        report["note"] = f"{plan.skipped_too_old} datum(s) for {first} → {last} {OUTSIDE_WINDOW}"
    if plan.skipped_future:
        report["note"] = (report.get("note", "") + "; " if "note" in report else "") + (
            f"{plan.skipped_future} datum(s) for days that have not started yet were not sent"
        )
    if plan.invalid:
        report["failures"].append(
            {
                "target": "cloudwatch",
                "datums": plan.skipped_invalid,
                "error": f"{DIMENSION_RULE}; not sent for "
                + ", ".join(repr(a[:40]) for a in plan.invalid[:3])
                + (f" and {len(plan.invalid) - 3} more app(s)" if len(plan.invalid) > 3 else ""),
            }
        )
    return report


def _raise_failures(report: dict[str, Any], *, total: int) -> None:
    """Raise :class:`CloudWatchError` (``report`` attached) when any of ``total`` datums was not published."""
    if report["failures"]:
        lost = sum(f["datums"] for f in report["failures"])
        raise CloudWatchError(
            f"CloudWatch: {lost} of {total} datum(s) not published; first error: "
            f"{report['failures'][0]['error']}. Re-running is safe.",
            report,
        )


def put_datums(
    datums: list[dict[str, Any]],
    *,
    client: Any = None,
    namespace: str = NAMESPACE,
    backoff: Backoff | None = None,
) -> dict[str, Any]:
    """Send ready-made PutMetricData datums (batched, throttling retried), as :func:`publish_metrics` does.

    Returns ``namespace``, ``datums``, ``datumsPublished``, ``requests`` and ``failures``;
    raises :class:`~bubbly_metrics.exceptions.CloudWatchError` (report attached) when any
    datum was not published.
    """
    batches = _batches(datums, namespace)
    report: dict[str, Any] = {
        "namespace": namespace,
        "datums": len(datums),
        "datumsPublished": 0,
        "requests": len(batches),
        "failures": [],
    }
    if batches:
        _put(_client(client), namespace, batches, backoff or Backoff(), report)
    _raise_failures(report, total=len(datums))
    return report


def _list_apps(client: Any, namespace: str) -> list[str]:
    apps: set[str] = set()
    for page in aws.pages(client.list_metrics, {"Namespace": namespace}, token="NextToken", start="NextToken"):
        for metric in page.get("Metrics", []):
            for dim in metric.get("Dimensions", []):
                if dim.get("Name") == "App":
                    apps.add(dim["Value"])
    return sorted(apps)


def _queries(apps: list[str], namespace: str, stat: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
    """GetMetricData queries of every metric of every app, and query id -> (app, column)."""
    queries = []
    index = {}
    for a, app in enumerate(apps):
        for m, (column, name) in enumerate(METRIC_NAMES.items()):
            qid = f"q{a}_{m}"
            index[qid] = (app, column)
            queries.append(
                {
                    "Id": qid,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": name,
                            "Dimensions": [{"Name": "App", "Value": app}],
                        },
                        "Period": 86_400,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
            )
    return queries, index


def _daily_values(
    client: Any, queries: list[dict[str, Any]], index: dict[str, tuple[str, str]], first: dt.date, last: dt.date
) -> dict[tuple[dt.date, str], dict[str, int]]:
    """(day, app) -> column -> value, from GetMetricData (500 queries per call, every page)."""
    values: dict[tuple[dt.date, str], dict[str, int]] = {}
    for i in range(0, len(queries), 500):  # GetMetricData: at most 500 queries per call
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries[i : i + 500],
            "StartTime": midnight(first),
            "EndTime": midnight(last) + dt.timedelta(days=1),
            "ScanBy": "TimestampAscending",
        }
        for page in aws.pages(client.get_metric_data, kwargs, token="NextToken", start="NextToken"):
            for result in page.get("MetricDataResults", []):
                app, column = index[result["Id"]]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    day = stamp.astimezone(dt.UTC).date()
                    values.setdefault((day, app), {})[column] = int(round(value))
    return values


def read_cloudwatch_metrics(
    *,
    start: str | dt.date,
    end: str | dt.date,
    apps: Iterable[str] | None = None,
    client: Any = None,
    namespace: str = NAMESPACE,
    stat: str = "Maximum",
) -> pl.DataFrame:
    """Read the daily values CloudWatch holds, as a frame shaped like ``AggregateResult.metrics``.

    Parameters
    ----------
    start, end
        Inclusive range of days.
    apps
        Apps to read (default: every ``App`` CloudWatch lists in the namespace — ListMetrics
        only lists metrics with data in the last two weeks).
    client
        A boto3 CloudWatch client; built from the environment when not given.
    namespace
        The metrics' namespace.
    stat
        Statistic per day.  ``Maximum`` is immune to a day published twice.

    Returns
    -------
    polars.DataFrame
        ``date``, ``app``, ``active_users``, ``games_played``, ``parties_created``,
        ``parties_joined`` (Int64; null where CloudWatch has no datum), one row per
        ``(date, app)`` with at least one datum, sorted.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from bubbly_metrics.dates import parse_date

    first, last = parse_date(start, name="start"), parse_date(end, name="end")
    if first > last:
        raise InvalidArgumentError(f"start {first} is after end {last}")
    client = _client(client)
    schema = METRICS_SCHEMA
    try:
        app_list = sorted(set(apps)) if apps is not None else _list_apps(client, namespace)
        queries, index = _queries(app_list, namespace, stat)
        values = _daily_values(client, queries, index, first, last)
    except (ClientError, BotoCoreError) as exc:
        raise CloudWatchError(f"cannot read {namespace} from CloudWatch: {exc}") from exc
    rows = [{"date": d, "app": a, **v} for (d, a), v in sorted(values.items()) if first <= d <= last]
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
