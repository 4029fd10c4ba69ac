"""Reconciliation: comparison, evidence, cause classification, and the one-call entry point."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics.exceptions import InvalidArgumentError
from bubbly_metrics.metrics import METRICS_SCHEMA
from bubbly_metrics.reconciliation import (
    ADVICE,
    CAUSES,
    COMPARISON_SCHEMA,
    EVIDENCE_COLUMNS,
    Cause,
    DailyRuns,
    Snapshot,
    classify_differences,
    compare_metrics,
    compare_per_user,
    daily_runs_table,
    discrepancy_evidence,
    read_deletes,
    read_snapshot,
    reconcile,
    relative_difference_matrix,
)
from bubbly_metrics.synthetic import write_full_export, write_incremental_export
from tests import reconcile_scenario as sc
from tests.aws_helpers import create_analytics_table

D = dt.date


def metrics(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")


def differing(frame: pl.DataFrame, target: str | None = None) -> set[tuple]:
    rows = frame.filter(pl.col("status") == "differs")
    if target is not None:
        rows = rows.filter(pl.col("target") == target)
    return set(rows.select("date", "app", "metric", "cause").iter_rows())


@pytest.fixture(scope="module")
def new_root(tmp_path_factory):
    return sc.write_new_world(tmp_path_factory.mktemp("new"))


@pytest.fixture(scope="module")
def old_root(tmp_path_factory):
    return sc.write_old_world(tmp_path_factory.mktemp("old"))


@pytest.fixture
def seeded(aws, old_root):
    create_analytics_table(sc.ANALYTICS)
    sc.seed_outputs(old_root)
    return aws


# --------------------------------------------------------------------------------------------
# compare_metrics


def test_compare_metrics_lists_every_value_with_its_status():
    expected = metrics([(D(2025, 3, 1), "chess", 2, 3, 1, 0), (D(2025, 3, 1), "sudoku", 0, 0, 0, 0)])
    actual = metrics([(D(2025, 3, 1), "chess", 2, 5, 1, 0), (D(2025, 3, 1), "ghost", 1, 1, 0, 0)])
    out = compare_metrics(expected, actual, target="analytics_table")
    assert out.schema == pl.Schema(COMPARISON_SCHEMA)
    assert out.height == 12 and set(out["target"]) == {"analytics_table"}
    by_key = {(r["app"], r["metric"]): r for r in out.iter_rows(named=True)}
    games = by_key[("chess", "games_played")]
    assert (games["expected"], games["actual"], games["difference"], games["status"]) == (
        3,
        5,
        2,
        "differs",
    )
    assert games["relative_difference"] == pytest.approx(2 / 3)
    # sudoku has no row in the target, but nothing was expected: an incremental run writes none.
    assert {by_key[("sudoku", m)]["status"] for m in sc.METRICS} == {"match"}
    # ghost: activity the export does not have; relative to max(expected, 1).
    ghost = by_key[("ghost", "active_users")]
    assert (ghost["expected"], ghost["actual"], ghost["status"], ghost["relative_difference"]) == (
        None,
        1,
        "differs",
        1.0,
    )
    assert by_key[("ghost", "parties_created")]["status"] == "match"
    # Sorted by date, app, then metrics in their usual order.
    assert out["metric"].to_list()[:4] == list(sc.METRICS)


def test_a_missing_row_is_minus_100_percent():
    expected = metrics([(D(2025, 3, 2), "chess", 2, 3, 1, 0)])
    out = compare_metrics(expected, metrics([]), target="analytics_table")
    assert out["status"].to_list() == ["differs", "differs", "differs", "match"]
    assert out["actual"].null_count() == 4
    assert out["relative_difference"].to_list() == [-1.0, -1.0, -1.0, 0.0]


def test_days_outside_the_window_are_not_compared():
    expected = metrics([(D(2025, 3, 1), "chess", 2, 3, 1, 0), (D(2025, 3, 6), "chess", 2, 3, 1, 0)])
    actual = metrics([(D(2025, 3, 6), "chess", 2, 3, 1, 0)])
    out = compare_metrics(expected, actual, target="cloudwatch", window=(D(2025, 3, 5), D(2025, 3, 18)))
    old = out.filter(pl.col("date") == D(2025, 3, 1))
    assert set(old["status"]) == {"outside_window"}
    assert old["difference"].null_count() == 4 and old["relative_difference"].null_count() == 4
    assert set(out.filter(pl.col("date") == D(2025, 3, 6))["status"]) == {"match"}


def test_compare_metrics_accepts_lazy_frames_and_extra_columns():
    expected = metrics([(D(2025, 3, 1), "chess", 2, 3, 1, 0)])
    actual = expected.with_columns(pl.lit("arn").alias("export_arn")).lazy()
    out = compare_metrics(expected.lazy(), actual, target="cloudwatch")
    assert set(out["status"]) == {"match"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "s3"}, "target must be one of"),
        ({"target": "cloudwatch", "window": (D(2025, 3, 5), D(2025, 3, 1))}, "window must be"),
        ({"target": "cloudwatch", "window": ("2025-03-01", "2025-03-05")}, "window must be"),
    ],
)
def test_compare_metrics_validates_its_arguments(kwargs, message):
    frame = metrics([])
    with pytest.raises(InvalidArgumentError, match=message):
        compare_metrics(frame, frame, **kwargs)


def test_compare_metrics_names_missing_columns():
    with pytest.raises(InvalidArgumentError, match=r"actual lacks column\(s\) \['parties_joined'\]"):
        compare_metrics(metrics([]), metrics([]).drop("parties_joined"), target="analytics_table")
    with pytest.raises(InvalidArgumentError, match="expected must be a polars DataFrame"):
        compare_metrics({"date": []}, metrics([]), target="analytics_table")


# --------------------------------------------------------------------------------------------
# classify_differences: one cause at a time


def one_value(expected, actual, *, metric="games_played", target="analytics_table", window=None):
    day = D(2025, 3, 10)
    exp = metrics([(day, "chess", 0, 0, 0, 0)] if expected is None else [(day, "chess", *([expected] * 4))])
    act = metrics([] if actual is None else [(day, "chess", *([actual] * 4))])
    out = compare_metrics(exp, act, target=target, window=window)
    if expected is None:
        out = out.with_columns(pl.lit(None, pl.Int64).alias("expected"))
    return out.filter(pl.col("metric") == metric)


def evidence(metric="games_played", **counts):
    row = {
        "date": D(2025, 3, 10),
        "app": "chess",
        "metric": metric,
        **{c: 0 for c in EVIDENCE_COLUMNS},
    }
    row.update(counts)
    return pl.DataFrame([row]).cast({c: pl.Int64 for c in EVIDENCE_COLUMNS})


@pytest.mark.parametrize(
    ("expected", "actual", "metric", "found", "cause", "detail"),
    [
        (
            3,
            4,
            "games_played",
            {"redated_out": 1},
            Cause.REDATED,
            "1 session(s) created this day are dated later",
        ),
        (3, 2, "active_users", {"redated_in": 2}, Cause.REDATED, "2 session(s) created earlier"),
        (3, 2, "parties_created", {"expired": 1}, Cause.TTL_EXPIRED, "1 record(s) past their TTL"),
        (3, 4, "parties_created", {"expired_not_in_export": 1}, Cause.TTL_EXPIRED, "1 record(s) deleted by TTL"),
        # Both kinds of delete: the larger count names the cause.
        (
            3,
            5,
            "games_played",
            {"expired_not_in_export": 2, "deleted_not_in_export": 1},
            Cause.TTL_EXPIRED,
            "2 record(s) deleted by TTL",
        ),
        (
            3,
            5,
            "games_played",
            {"expired_not_in_export": 1, "deleted_not_in_export": 1},
            Cause.DELETED,
            "1 record(s) deleted before",
        ),
        (
            3,
            4,
            "parties_joined",
            {"deleted_not_in_export": 1},
            Cause.DELETED,
            "1 record(s) deleted before",
        ),
        (
            3,
            2,
            "parties_joined",
            {"deleted_in_export": 1},
            Cause.DELETED,
            "1 deleted record(s) still in",
        ),
        (
            3,
            None,
            "games_played",
            {"redated_in": 5},
            Cause.MISSING_FROM_TABLE,
            "no Analytics Table item",
        ),
        (None, 1, "games_played", {}, Cause.NOT_IN_EXPORT, "the export has no activity"),
        (3, 5, "games_played", {}, Cause.UNEXPLAINED, "nothing in the export explains it"),
        # Evidence pointing the other way explains nothing.
        (3, 4, "games_played", {"redated_in": 1, "expired": 3}, Cause.UNEXPLAINED, "nothing"),
        (
            3,
            2,
            "games_played",
            {"redated_out": 1, "deleted_not_in_export": 1},
            Cause.UNEXPLAINED,
            "nothing",
        ),
        # Re-dating concerns sessions only: parties and members are dated by createdAt.
        (3, 4, "parties_created", {"redated_out": 1}, Cause.UNEXPLAINED, "nothing"),
    ],
)
def test_each_cause_is_classified_from_its_evidence(expected, actual, metric, found, cause, detail):
    out = classify_differences(one_value(expected, actual, metric=metric), evidence(metric, **found))
    (row,) = out.to_dicts()
    assert row["cause"] == cause
    assert row["detail"].startswith(detail)


def test_missing_from_cloudwatch_and_outside_its_window():
    missing = classify_differences(one_value(3, None, target="cloudwatch"))
    assert missing["cause"].to_list() == [Cause.MISSING_FROM_CLOUDWATCH]
    old = classify_differences(one_value(3, None, target="cloudwatch", window=(D(2025, 3, 11), D(2025, 3, 25))))
    assert old["status"].to_list() == ["outside_window"]
    assert old["cause"].to_list() == [Cause.OUTSIDE_CLOUDWATCH_WINDOW]


def test_matching_values_have_no_cause_and_evidence_is_kept():
    out = classify_differences(one_value(3, 3), evidence(redated_in=1))
    assert out["cause"].to_list() == [None] and out["detail"].to_list() == [None]
    assert out["redated_in"].to_list() == [1] and out["expired"].to_list() == [0]


def test_classify_wants_a_comparison():
    with pytest.raises(InvalidArgumentError, match="comparison lacks column"):
        classify_differences(metrics([]))


def test_every_cause_has_advice():
    assert set(ADVICE) == set(CAUSES)
    assert all(meaning and action for meaning, action in ADVICE.values())


# --------------------------------------------------------------------------------------------
# Evidence from the export


def test_read_deletes_returns_only_deleted_items(new_root):
    deletes = read_deletes(str(new_root / "exports"))
    assert deletes.columns[:4] == ["file", "line", "model_id", "owner"]
    assert deletes.select("model_id", "owner", "created_at", "created_at_type").rows() == [
        ("member-user-u3", "party-sudoku-p-sudoku-2025-03-08", str(sc.ts("2025-03-08", 14)), "N")
    ]
    assert deletes["read_error"].null_count() == 1


def test_read_deletes_refuses_a_full_export(new_root):
    from bubbly_metrics.exports import find_export

    full = find_export(str(new_root), export_type="full")
    with pytest.raises(InvalidArgumentError, match="deletes come from INCREMENTAL exports"):
        read_deletes(full)


def test_read_deletes_skips_broken_lines(tmp_path, caplog):
    import gzip

    inc = write_incremental_export(
        tmp_path,
        [{"Keys": {}, "OldImage": sc.DELETED}],
        export_from="2025-03-17T00:00:00Z",
        export_to="2025-03-18T00:00:00Z",
        n_files=1,
    )
    path = inc.data_files[0]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b'{"OldImage": [1, 2\n\n'))
    with caplog.at_level("WARNING", logger="bubbly_metrics.scan"):
        deletes = read_deletes(str(tmp_path))
    assert deletes["model_id"].to_list() == ["member-user-u3"]
    # The scan's own rules and warning: deletes are read by the one reader of export files.
    assert "skipped 1 unreadable line(s), first at line 2" in caplog.text


def test_evidence_counts_redated_expired_and_deleted_records(new_root):
    deletes = read_deletes(str(new_root / "exports"))
    found = discrepancy_evidence(str(new_root), export_type="full", start=sc.START, end=sc.END, deletes=deletes)
    assert found.columns == ["date", "app", "metric", *EVIDENCE_COLUMNS]
    nonzero = {
        (row["date"], row["app"], row["metric"], column, row[column])
        for row in found.iter_rows(named=True)
        for column in EVIDENCE_COLUMNS
        if row[column]
    }
    assert nonzero == {
        (D(2025, 3, 10), "sudoku", "active_users", "redated_out", 1),
        (D(2025, 3, 10), "sudoku", "games_played", "redated_out", 1),
        (D(2025, 3, 11), "sudoku", "active_users", "redated_in", 1),
        (D(2025, 3, 11), "sudoku", "games_played", "redated_in", 1),
        (D(2025, 3, 12), "chess", "parties_created", "expired", 1),
        (D(2025, 3, 8), "sudoku", "parties_joined", "deleted_not_in_export", 1),
    }


def test_evidence_of_deleted_items_still_in_the_export(new_root, tmp_path):
    # A delete of an item the full export still holds (the delete came after it).
    gone = sc.party("chess", "p-chess-2025-03-02", "u1", sc.ts("2025-03-02", 13))
    write_incremental_export(
        tmp_path,
        [{"Keys": {}, "OldImage": gone}],
        export_from="2025-03-18T00:00:00Z",
        export_to="2025-03-19T00:00:00Z",
        n_files=1,
    )
    found = discrepancy_evidence(
        str(new_root),
        export_type="full",
        start=sc.START,
        end=sc.END,
        deletes=read_deletes(str(tmp_path)),
    )
    row = found.filter((pl.col("date") == D(2025, 3, 2)) & (pl.col("app") == "chess")).to_dicts()
    assert len(row) == 1 and row[0]["metric"] == "parties_created"
    assert (row[0]["deleted_in_export"], row[0]["deleted_not_in_export"]) == (1, 0)


def test_evidence_is_limited_to_the_range(new_root):
    found = discrepancy_evidence(str(new_root), export_type="full", start="2025-03-11", end="2025-03-11")
    # The session left 03-10 (outside) for 03-11 (inside): only its arrival is in range.
    assert set(found.select("date", "metric").iter_rows()) == {
        (D(2025, 3, 11), "active_users"),
        (D(2025, 3, 11), "games_played"),
    }
    assert found["redated_out"].sum() == 0 and found["redated_in"].sum() == 2


def test_evidence_of_an_export_with_nothing_to_explain(tmp_path):
    write_full_export(tmp_path, sc.base_items(), export_time=sc.EXPORT_TIME, n_files=1)
    found = discrepancy_evidence(str(tmp_path), start=sc.START, end=sc.END)
    assert found.is_empty() and found.columns == ["date", "app", "metric", *EVIDENCE_COLUMNS]
    with pytest.raises(InvalidArgumentError, match="after end"):
        discrepancy_evidence(str(tmp_path), start=sc.END, end=sc.START)
    with pytest.raises(InvalidArgumentError, match="frame of raw records"):
        discrepancy_evidence(str(tmp_path), start=sc.START, end=sc.END, deletes=metrics([]))


# --------------------------------------------------------------------------------------------
# reconcile: the one call, against moto


def test_reconcile_finds_every_planted_difference_with_its_cause(seeded, new_root):
    result = reconcile(
        str(new_root),
        analytics_table=sc.ANALYTICS,
        cloudwatch=True,
        incremental=str(new_root),
        start=sc.START,
        end=sc.END,
        now=sc.NOW,
    )
    assert result.targets == ["analytics_table", "cloudwatch"]
    assert differing(result.comparison, "analytics_table") == sc.TABLE_DIFFS
    assert differing(result.comparison, "cloudwatch") == sc.CLOUDWATCH_DIFFS
    assert result.outside_window.height == sc.OUTSIDE_WINDOW
    assert set(result.outside_window["cause"]) == {Cause.OUTSIDE_CLOUDWATCH_WINDOW}
    assert result.differs
    assert result.differences.height == len(sc.TABLE_DIFFS) + len(sc.CLOUDWATCH_DIFFS)
    assert result.differences.columns == [
        "target", "date", "app", "metric", "expected", "actual", "difference",
        "relative_difference", "cause", "detail",
    ]  # fmt: skip
    assert result.cloudwatch_window == (D(2025, 3, 5), D(2025, 3, 18))
    assert result.deletes is not None and result.deletes.height == 1
    # The frames compared are kept for inspection.
    assert result.table is not None and set(result.table["app"]) == {"sudoku", "chess", "ghost"}
    assert result.cloudwatch is not None and result.cloudwatch["date"].min() == D(2025, 3, 5)
    assert_frame_equal(result.expected, result.aggregate.metrics)

    summary = result.summary()
    table = summary["targets"]["analytics_table"]
    assert table["differing"] == len(sc.TABLE_DIFFS)
    assert table["compared"] == 17 * 3 * 4  # sudoku, chess and the ghost app, every day
    assert table["causes"] == {
        "redated": 4,
        "ttl_expired": 1,
        "deleted": 1,
        "missing_from_table": 4,
        "not_in_export": 2,
        "unexplained": 1,
    }
    assert table["rowsMissing"] == 1 and table["daysMissing"] == []
    cw = summary["targets"]["cloudwatch"]
    assert cw["outsideWindow"] == sc.OUTSIDE_WINDOW and cw["window"] == {
        "from": "2025-03-05",
        "to": "2025-03-18",
    }
    assert cw["rowsMissing"] == 1
    assert summary["differing"] == len(sc.TABLE_DIFFS) + len(sc.CLOUDWATCH_DIFFS)
    line = result.summary_line()
    assert line.startswith("2025-03-01 → 2025-03-17: analytics_table: 13 of 204 values differ")
    assert "redated 4, ttl_expired 1, deleted 1, missing_from_table 4, not_in_export 2, unexplained 1" in line
    assert "32 values before 2025-03-05 are outside CloudWatch's window (not compared)" in line
    json.dumps(result.to_dict())
    assert len(result.to_dict()["differences"]) == result.differences.height

    causes = result.causes()
    assert causes.columns == ["target", "cause", "values", "meaning", "action"]
    assert causes.filter(pl.col("cause") == "outside_cloudwatch_window")["values"].to_list() == [32]


def test_reconcile_shows_which_users_differ(seeded, new_root):
    result = reconcile(str(new_root), analytics_table=sc.ANALYTICS, start=sc.START, end=sc.END, now=sc.NOW)
    users = result.user_differences
    assert users is not None
    assert users.select("date", "app", "user_id", "expected_games", "actual_games").filter(
        pl.col("expected_games") != pl.col("actual_games")
    ).rows() == [
        (D(2025, 3, 9), "ghost", "u9", 0, 1),
        (D(2025, 3, 10), "sudoku", "night-owl", 0, 1),
        (D(2025, 3, 11), "sudoku", "night-owl", 1, 0),
    ]
    assert users.filter(pl.col("expected_parties_created") != pl.col("actual_parties_created")).select(
        "date", "app", "user_id", "expected_parties_created", "actual_parties_created"
    ).rows() == [(D(2025, 3, 6), "sudoku", "u1", 1, 3), (D(2025, 3, 12), "chess", "u1", 2, 1)]


def test_reconcile_without_evidence_classifies_what_the_comparison_shows(seeded, new_root):
    result = reconcile(
        str(new_root),
        analytics_table=sc.ANALYTICS,
        start=sc.START,
        end=sc.END,
        now=sc.NOW,
        explain=False,
    )
    assert result.evidence.is_empty()
    causes = {cause for *_, cause in differing(result.comparison)}
    assert causes == {"missing_from_table", "not_in_export", "unexplained"}
    assert result.comparison.filter(pl.col("status") == "differs").height == len(sc.TABLE_DIFFS)


def test_a_table_that_matches(aws, new_root):
    from bubbly_metrics.analytics_table import write_analytics_table
    from bubbly_metrics.pipeline import aggregate

    create_analytics_table(sc.ANALYTICS)
    agg = aggregate(str(new_root), mode="backfill", start=sc.START, end=sc.END, now=sc.NOW)
    write_analytics_table(agg.metrics, per_user=agg.per_user, table=sc.ANALYTICS, now=sc.NOW)
    result = reconcile(str(new_root), analytics_table=sc.ANALYTICS, start=sc.START, end=sc.END, now=sc.NOW)
    assert not result.differs and result.differences.is_empty()
    assert result.summary_line() == "2025-03-01 → 2025-03-17: analytics_table: all 136 values match"
    assert result.user_differences is not None and result.user_differences.is_empty()


def test_days_missing_from_an_empty_table(aws, new_root):
    create_analytics_table(sc.ANALYTICS)
    result = reconcile(str(new_root), analytics_table=sc.ANALYTICS, start="2025-03-16", end=sc.END, now=sc.NOW)
    entry = result.summary()["targets"]["analytics_table"]
    assert entry["daysMissing"] == ["2025-03-16", "2025-03-17"]
    assert entry["rowsMissing"] == 4 and entry["causes"] == {"missing_from_table": 16}


def test_a_range_entirely_older_than_cloudwatch_keeps_cloudwatch_out_of_it(new_root):
    calls = []

    class NoCloudWatch:
        def __getattr__(self, name):
            calls.append(name)
            raise AssertionError(f"CloudWatch called: {name}")

    result = reconcile(
        str(new_root),
        cloudwatch=True,
        start=sc.START,
        end="2025-03-04",
        now=sc.NOW,
        cloudwatch_client=NoCloudWatch(),
    )
    assert calls == [] and not result.differs
    assert result.outside_window.height == sc.OUTSIDE_WINDOW
    assert result.summary()["targets"]["cloudwatch"]["compared"] == 0


def test_reconcile_with_nothing_to_compare_still_explains(new_root):
    seen = []
    result = reconcile(
        str(new_root), start=sc.START, end=sc.END, now=sc.NOW, on_file=lambda f, n: seen.append((f.key, n))
    )
    assert len(seen) == 2 and sum(n for _, n in seen) == len(sc.new_items())  # the aggregation pass only
    assert result.targets == [] and not result.differs
    assert result.table is None and result.user_differences is None
    assert result.summary_line() == "2025-03-01 → 2025-03-17: nothing compared (no Analytics Table or CloudWatch given)"
    assert result.evidence["redated_out"].sum() == 2  # active_users and games_played
    assert result.summary()["targets"] == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"analytics_table": ""}, "analytics_table must name a table"),
        ({"cloudwatch": "yes"}, "cloudwatch must be True or False"),
        ({"now": dt.datetime(2025, 3, 18)}, "now must be timezone-aware"),
        ({"mode": "weekly"}, "Invalid mode"),
        # One argument says what stands for the table: two at once, or a flag, is refused.
        ({"analytics_table": ("t", DailyRuns())}, "analytics_table must name a table, be Snapshot"),
        ({"analytics_table": Snapshot("/no/such/snapshot.json")}, "snapshot /no/such/snapshot.json does not exist"),
        ({"analytics_table": True}, r"analytics_table must name a table, be Snapshot\(PATH\) or DailyRuns\(\)"),
    ],
)
def test_reconcile_validates_its_arguments(new_root, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        reconcile(str(new_root), **{"now": sc.NOW, **kwargs})


def test_compare_per_user_only_where_the_table_has_the_row():
    from bubbly_metrics.analytics_table import TABLE_SCHEMA

    day, other = D(2025, 3, 1), D(2025, 3, 2)
    per_user = pl.DataFrame(
        [
            (day, "chess", "u1", 2, 1, 0),
            (day, "chess", "u2", 1, 0, 0),
            (day, "chess", "u4", 0, 0, 3),  # joined parties only: nothing the table stores
            (other, "chess", "u1", 5, 0, 0),  # the table has no row for this day
        ],
        schema=["date", "app", "user_id", "games", "parties_created", "parties_joined"],
        orient="row",
    )
    table = pl.DataFrame(
        [
            {
                "date": day,
                "app": "chess",
                "games_per_user": [{"user_id": "u1", "games": 2}, {"user_id": "u3", "games": 1}],
                "parties_created_per_user": [{"user_id": "u1", "parties_created": 2}],
            }
        ],
        schema={k: TABLE_SCHEMA[k] for k in ("date", "app", "games_per_user", "parties_created_per_user")},
    )
    assert compare_per_user(per_user, table).rows() == [
        (day, "chess", "u1", 2, 2, 1, 2),
        (day, "chess", "u2", 1, 0, 0, 0),
        (day, "chess", "u3", 0, 1, 0, 0),
    ]


# --------------------------------------------------------------------------------------------
# Heat map data


def test_relative_difference_matrix():
    comparison = pl.concat(
        [
            compare_metrics(
                metrics([(D(2025, 3, 1), "a", 4, 4, 1, 0), (D(2025, 3, 6), "a", 4, 4, 2, 0)]),
                metrics([(D(2025, 3, 6), "a", 4, 2, 3, 0)]),
                target="cloudwatch",
                window=(D(2025, 3, 5), D(2025, 3, 18)),
            ),
            compare_metrics(metrics([(D(2025, 3, 6), "b", 1, 1, 1, 1)]), metrics([]), target="analytics_table"),
        ]
    )
    wide = relative_difference_matrix(comparison, target="cloudwatch")
    assert wide.columns == ["date", "a"]
    # 03-01 not compared; 03-06: games -50 %, parties +50 %: the first largest is kept.
    assert wide["a"].to_list() == [None, -0.5]
    assert relative_difference_matrix(comparison, target="cloudwatch", metric="parties_created")["a"].to_list() == [
        None,
        0.5,
    ]
    assert relative_difference_matrix(comparison)["b"].to_list() == [-1.0]
    empty = relative_difference_matrix(comparison.clear())
    assert empty.columns == ["date"] and empty.is_empty()
    with pytest.raises(InvalidArgumentError, match="metric must be one of"):
        relative_difference_matrix(comparison, metric="sessions")


def test_docstring_examples_run():
    import doctest

    import bubbly_metrics.reconciliation as module

    assert doctest.testmod(module).failed == 0


# --------------------------------------------------------------------------------------------
# Offline targets: a snapshot of the table, and the daily runs replayed


def test_a_snapshot_from_aws_dynamodb_scan_json_is_read_like_the_table(tmp_path):
    from bubbly_metrics.analytics_table import build_items

    result = bm.aggregate(bm.sample_export_location(), mode="backfill", now=bm.SAMPLE_NOW)
    # What the Lambda writes, as `aws dynamodb scan --output json` prints it (in no order).
    items = [i for group in build_items(result.metrics, per_user=result.per_user) for i in group]
    path = tmp_path / "scan.json"
    path.write_text(json.dumps({"Items": items[::-1], "Count": len(items), "ScannedCount": len(items)}))
    snapshot = read_snapshot(str(path))
    assert_frame_equal(snapshot.select(result.metrics.columns), result.metrics, check_dtypes=False)
    reconciled = reconcile(
        bm.sample_export_location(), analytics_table=Snapshot(str(path)), now=bm.SAMPLE_NOW, explain=False
    )
    assert not reconciled.differs and reconciled.analytics_table == f"snapshot {path}"
    assert reconciled.user_differences is not None and reconciled.user_differences.is_empty()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"date,app\n", "is neither Parquet nor JSON"),
        (b'{"Items": [{"pk": {"S": "x"}}]}', "is JSON but not Analytics Table items"),
        (b"PAR1garbage", "is not readable Parquet"),
    ],
)
def test_a_bad_snapshot_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "snap"
    path.write_bytes(content)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        read_snapshot(str(path))
    assert str(info.value).startswith(f"snapshot {path} ") and "\n" not in str(info.value)


def test_daily_runs_are_what_the_lambda_writes_each_morning(tmp_path):
    from bubbly_metrics.sample import write_sample

    write_sample(tmp_path)
    table = daily_runs_table(str(tmp_path))
    days = sorted(set(table["date"].to_list()))
    assert days[0] == D(2025, 3, 4) and days[-1] == D(2025, 3, 17) and D(2025, 3, 10) not in days
    for day in (D(2025, 3, 4), D(2025, 3, 17)):
        run = bm.aggregate(str(tmp_path), mode="incremental", date=day, now=bm.SAMPLE_NOW)
        assert_frame_equal(
            table.filter(pl.col("date") == day).select(run.metrics.columns), run.metrics, check_dtypes=False
        )
    assert set(table["mode"]) == {"incremental"} and table["export_arn"].null_count() == 0


def test_daily_runs_without_incremental_exports_says_what_it_needs(tmp_path):
    from bubbly_metrics.exceptions import ExportNotFoundError

    write_full_export(tmp_path, [], export_time=sc.EXPORT_TIME, n_files=1)
    with pytest.raises(ExportNotFoundError, match="daily_runs replays the daily incremental exports"):
        reconcile(str(tmp_path), analytics_table=DailyRuns(), now=sc.NOW)


def test_table_source_picks_the_one_stand_in_and_refuses_two():
    from bubbly_metrics.reconciliation import DailyRuns, Snapshot, table_source

    assert table_source(analytics_table="bubbly-analytics") == "bubbly-analytics"
    assert table_source(snapshot="s.parquet") == Snapshot("s.parquet")
    assert table_source(daily_runs=True) == DailyRuns()
    assert table_source() is None
    with pytest.raises(InvalidArgumentError) as caught:
        table_source(analytics_table="t", snapshot="s.parquet")
    assert (
        str(caught.value)
        == "compare with one of analytics_table, snapshot or daily_runs, not analytics_table and snapshot"
    )
    names = {"analytics_table": "ANALYTICS_TABLE", "snapshot": "SNAPSHOT", "daily_runs": "DAILY_RUNS"}
    assert caught.value.message_for(names) == (
        "compare with one of ANALYTICS_TABLE, SNAPSHOT or DAILY_RUNS, not ANALYTICS_TABLE and SNAPSHOT"
    )
