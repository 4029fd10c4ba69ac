"""Raw export records → dated events (docs/rules.md#records), as Polars expressions.

A record is a *session* (``session-{app}-{id}`` owned by ``user-{userId}``, dated by
``updatedAt``), a *party* (``party-{app}-{id}`` owned by ``user-{userId}``, dated by
``createdAt``), a *member* (``member-user-{userId}`` owned by ``party-{app}-{id}``, dated by
``createdAt``), or anything else, which the metrics ignore.

Malformed records are kept as rows with ``reason`` set, so they are counted (per reason and
per file) by the same query that computes the metrics, and never abort it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

__all__ = ["EVENT_KINDS", "MAX_EPOCH_SECONDS", "MIN_EPOCH_SECONDS", "Reason", "to_events"]

EVENT_KINDS = ("session", "party", "member")

# Outside [0001-01-01, 9999-12-31] a timestamp has no calendar date: it is "out of range"
# (milliseconds by mistake land here), never malformed and never a crash.
MIN_EPOCH_SECONDS = -62_135_596_800
MAX_EPOCH_SECONDS = 253_402_300_799

# The ISO-8601 instants accepted in S timestamps: date, 'T', time, optional fraction, and
# 'Z' or a ±HH:MM offset.  Anything else is malformed.
ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_DECIMAL_PATTERN = r"^(-?)(\d+)(?:\.(\d+))?$"


class Reason:
    """Reasons a record is malformed (values of the ``reason`` column).

    Read errors from :class:`bubbly_metrics.scan.ReadError` appear here too.
    """

    BAD_MODEL_ID = "bad_model_id"
    """A session/party ``modelId`` with fewer than three ``-`` segments or an empty app; a
    member ``modelId`` that is not ``member-user-{userId}`` with a non-empty userId."""
    BAD_OWNER = "bad_owner"
    """A session/party owner that is missing or not ``user-{userId}``; a member owner that is
    not a party key ``party-{app}-{partyId}`` (case-sensitive, app non-empty)."""
    MISSING_TIMESTAMP = "missing_timestamp"
    """The dating attribute (``updatedAt`` or ``createdAt``) is absent."""
    BAD_TIMESTAMP = "bad_timestamp"
    """The dating attribute is neither N epoch seconds nor an ISO-8601 instant."""


def _epoch_seconds(value: pl.Expr, kind: pl.Expr) -> pl.Expr:
    """Whole epoch seconds (floored) of an N or ISO-S timestamp; null when unparsable.

    Nearly every real value is a plain integer N, so that cast is the fast path; the regex
    and ISO parsers only see the rows it could not handle (others are null for them, which
    costs nothing).
    """
    is_n = kind == "N"
    fast = pl.when(is_n).then(value.cast(pl.Int64, strict=False))
    slow = pl.when(is_n & fast.is_null()).then(value)
    groups = slow.str.extract_groups(_DECIMAL_PATTERN)
    whole, frac = groups.struct.field("2"), groups.struct.field("3")
    # Exact for any plain decimal (no float rounding of "…999999"); numbers with more than 15
    # integer digits are far outside any date range anyway, so clamp them there.
    int_part = (
        pl.when(whole.str.len_bytes() > 15).then(pl.lit(10**15, pl.Int64)).otherwise(whole.cast(pl.Int64, strict=False))
    )
    fractional = frac.str.contains(r"[1-9]").fill_null(False)
    decimal = pl.when(groups.struct.field("1") == "-").then(-int_part - fractional.cast(pl.Int64)).otherwise(int_part)
    # DynamoDB may spell numbers with an exponent; those go through a float.
    as_float = slow.cast(pl.Float64, strict=False)
    exponent = (
        pl.when(as_float.is_finite() & (as_float.abs() < 1e15))
        .then(as_float.floor().cast(pl.Int64))
        .when(as_float.is_finite())
        .then(pl.lit(10**15, pl.Int64) * as_float.sign().cast(pl.Int64))
    )
    iso_value = pl.when((kind == "S") & value.str.contains(ISO_PATTERN)).then(value)
    # A value matching ISO_PATTERN can hold a 'Z' only as its last character: a literal
    # replace is exact and cheaper than the regex "Z$".
    iso = iso_value.str.replace("Z", "+00:00", literal=True).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", strict=False
    )
    return pl.coalesce(fast, pl.when(whole.is_not_null()).then(decimal).otherwise(exponent), iso.dt.epoch("s"))


def to_events(records: pl.LazyFrame) -> pl.LazyFrame:
    """Classify raw records (from :func:`~bubbly_metrics.scan_export`) into dated events.

    Returns a LazyFrame with columns ``file``, ``line``, ``model_id``, ``owner`` (for
    tracing), ``kind`` (``session``/``party``/``member``, null for ignored records),
    ``app``, ``user_id``, ``ts`` (epoch seconds), ``date`` (UTC; null when out of range),
    ``expires_at`` (epoch seconds), ``reason`` (null unless malformed) and ``error_count``
    (set on read-error rows: how many lines the row stands for; null on records, one each).
    """
    for stage in _STAGES:
        records = records.with_columns(stage)
    return records.select(_OUTPUT)


def _kind(model_id: pl.Expr) -> pl.Expr:
    """The first ``-`` segment of the modelId when it is an event kind (prefix tests, no split)."""
    expr: Any = pl
    for kind in EVENT_KINDS:
        expr = expr.when(model_id.str.starts_with(f"{kind}-") | (model_id == kind)).then(pl.lit(kind))
    return expr


def _stages() -> tuple[list[pl.Expr], ...]:
    """The staged expressions of :func:`to_events`, built once at import.

    Building them is not free (see docs/performance.md), and the pipeline runs them once per
    batch of records.
    """
    model_id, owner = pl.col("model_id"), pl.col("owner")
    kind, is_member, is_session = pl.col("kind"), pl.col("kind") == "member", pl.col("kind") == "session"
    # The app is the second '-' segment of the keyed id (modelId for sessions/parties, owner
    # for members), and a third segment must follow it: "<first>-<app>-<rest>", app non-empty.
    # (Not str.find + str.slice: find counts bytes and slice characters, which disagree for any
    # non-ASCII name.)
    segments = pl.col("_keyed").str.splitn("-", 3)
    app = pl.when(segments.struct.field("field_2").is_not_null()).then(segments.struct.field("field_1"))
    # A member's owner must be a party key: "user-17ba…-…" has a second segment too, but it is
    # no app, and counting it would invent one (the seed's own system skips such records).
    app_ok = ((pl.col("app").str.len_bytes() > 0) & (~is_member | owner.str.starts_with("party-"))).fill_null(False)
    # The user is what follows ``user-`` in the owner (sessions, parties) or ``member-user-``
    # in the modelId (members); it must be there and non-empty.  fill_null: a missing or
    # non-S owner/modelId is malformed, not a record counted under a null user.
    has_user = (
        pl.when(is_member)
        .then(model_id.str.starts_with("member-user-") & (model_id.str.len_bytes() > len("member-user-")))
        .otherwise(owner.str.starts_with("user-") & (owner.str.len_bytes() > len("user-")))
    )
    reason = (
        pl.when(pl.col("read_error").is_not_null())
        .then(pl.col("read_error"))
        .when(kind.is_null())
        .then(None)
        .when(~app_ok)
        .then(pl.when(is_member).then(pl.lit(Reason.BAD_OWNER)).otherwise(pl.lit(Reason.BAD_MODEL_ID)))
        .when(~has_user.fill_null(False))
        .then(pl.when(is_member).then(pl.lit(Reason.BAD_MODEL_ID)).otherwise(pl.lit(Reason.BAD_OWNER)))
        .when(pl.col("_dating_type").is_null())
        .then(pl.lit(Reason.MISSING_TIMESTAMP))
        .when(pl.col("ts").is_null())
        .then(pl.lit(Reason.BAD_TIMESTAMP))
    )
    # Staged so each intermediate is computed once (Polars does not share sub-expressions
    # between when/then branches).
    return (
        [pl.when(pl.col("read_error").is_null()).then(_kind(model_id)).alias("kind")],
        [
            pl.when(is_member).then(owner).otherwise(model_id).alias("_keyed"),
            pl.when(is_session).then(pl.col("updated_at")).otherwise(pl.col("created_at")).alias("_dating"),
            pl.when(is_session)
            .then(pl.col("updated_at_type"))
            .otherwise(pl.col("created_at_type"))
            .alias("_dating_type"),
        ],
        [app.alias("app"), _epoch_seconds(pl.col("_dating"), pl.col("_dating_type")).alias("ts")],
        [reason.alias("reason")],
    )


def _output() -> list[pl.Expr]:
    model_id, owner = pl.col("model_id"), pl.col("owner")
    is_member = pl.col("kind") == "member"
    valid = pl.col("reason").is_null()
    in_range = pl.col("ts").is_between(MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS)
    return [
        pl.col("file", "line", "model_id", "owner"),
        *(pl.when(valid).then(pl.col(c)).alias(c) for c in ("kind", "app")),
        pl.when(valid)
        .then(
            pl.when(is_member)
            .then(model_id.str.strip_prefix("member-user-"))
            .otherwise(owner.str.strip_prefix("user-"))
        )
        .alias("user_id"),
        pl.when(valid).then(pl.col("ts")).alias("ts"),
        pl.when(valid & in_range).then(pl.from_epoch(pl.col("ts"), time_unit="s").dt.date()).alias("date"),
        _epoch_seconds(pl.col("expires_at"), pl.lit("N")).alias("expires_at"),
        pl.col("reason", "error_count"),
    ]


_STAGES = _stages()
_OUTPUT = _output()
