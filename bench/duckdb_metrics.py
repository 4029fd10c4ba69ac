"""DuckDB baseline: the same daily metrics from the same data files, in one SQL query.

Usage: python bench/duckdb_metrics.py [--query lean|bench] MANIFEST_FILES_JSON BUCKET_ROOT START END OUT.csv

Benchmark-only (DuckDB is not a dependency of the package).  It reads exactly the files the
manifest lists with an explicit column spec (no inference) and applies docs/rules.md#records so
its result can be compared with ours row for row, written as fast as we know how (QUERY).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import duckdb

EPOCH = dt.date(1970, 1, 1).toordinal()
STRUCT = (
    "STRUCT(modelId STRUCT(S VARCHAR), owner STRUCT(S VARCHAR), "
    "createdAt STRUCT(N VARCHAR, S VARCHAR), updatedAt STRUCT(N VARCHAR, S VARCHAR))"
)

# DuckDB at its best, not a convenient formulation (issue #15): rows are filtered as early as
# possible (the kind prefixes and owner IS NOT NULL, on the raw columns, before anything is
# derived), lines DuckDB cannot read are skipped (ignore_errors), days are integer arithmetic on
# epoch seconds (ts // 86400) instead of timestamp casts, only the columns the rules need are
# read, and insertion order is not preserved.  The one timestamp cast left is for ISO-8601
# strings (S), which docs/rules.md#records accepts and which are rare.  The rules are those, as before:
# the result must equal ours row for row (bench/run.py checks).
QUERY = """
WITH raw AS (
  SELECT Item.modelId.S AS model_id, Item.owner.S AS owner,
         Item.createdAt AS created, Item.updatedAt AS updated
  FROM read_json($files, format='newline_delimited', compression='gzip', ignore_errors=true,
                 columns={{'Item': '{struct}'}})
  WHERE Item.owner.S IS NOT NULL
    AND (starts_with(Item.modelId.S, 'session-') OR starts_with(Item.modelId.S, 'party-')
         OR starts_with(Item.modelId.S, 'member-'))
), events AS (
  SELECT CASE WHEN starts_with(model_id, 's') THEN 0 WHEN starts_with(model_id, 'p') THEN 1 ELSE 2 END AS kind,
         CASE WHEN starts_with(model_id, 'm') THEN owner ELSE model_id END AS keyed,
         CASE WHEN starts_with(model_id, 'm') THEN NULL ELSE substr(owner, 6) END AS user_id,
         CASE WHEN starts_with(model_id, 's') THEN updated ELSE created END AS ts
  FROM raw
  WHERE (starts_with(model_id, 'm') AND starts_with(owner, 'party-'))
     OR (NOT starts_with(model_id, 'm') AND starts_with(owner, 'user-') AND length(owner) > 5)
), timed AS (
  SELECT kind, split_part(keyed, '-', 2) AS app, user_id,
         CASE WHEN ts.N IS NOT NULL THEN CAST(floor(TRY_CAST(ts.N AS DOUBLE)) AS BIGINT)
              WHEN ts.S IS NOT NULL AND regexp_full_match(ts.S, '\\d{{4}}-\\d{{2}}-\\d{{2}}T\\d{{2}}:\\d{{2}}:\\d{{2}}(\\.\\d{{1,9}})?(Z|[+-]\\d{{2}}:\\d{{2}})')
                   THEN CAST(floor(epoch(TRY_CAST(ts.S AS TIMESTAMPTZ))) AS BIGINT)
         END AS secs
  FROM events
  WHERE strpos(substr(keyed, strpos(keyed, '-') + 1), '-') > 1
), metrics AS (
  SELECT secs // 86400 AS day, app,
         count(DISTINCT user_id) FILTER (WHERE kind = 0) AS active_users,
         count(*) FILTER (WHERE kind = 0) AS games_played,
         count(*) FILTER (WHERE kind = 1) AS parties_created,
         count(*) FILTER (WHERE kind = 2) AS parties_joined
  FROM timed
  WHERE secs // 86400 BETWEEN $first AND $last
  GROUP BY ALL
), days AS (
  SELECT d AS day FROM range($first, $last + 1) t(d)
)
SELECT DATE '1970-01-01' + CAST(days.day AS INTEGER) AS date, apps.app,
       coalesce(active_users, 0) AS active_users, coalesce(games_played, 0) AS games_played,
       coalesce(parties_created, 0) AS parties_created, coalesce(parties_joined, 0) AS parties_joined
FROM days CROSS JOIN (SELECT DISTINCT app FROM metrics) apps
LEFT JOIN metrics USING (day, app)
ORDER BY date, app
"""

# The lean formulation (issue #29): one pass, no CTE chain, per-(day, app, kind, user) counts
# first and the per-day figures from those (no count(DISTINCT ...) FILTER), the user kept only
# for sessions (the one kind whose users are counted).
QUERY_LEAN = """
WITH r AS (
  SELECT Item.modelId.S AS m, Item.owner.S AS o,
         CASE WHEN starts_with(Item.modelId.S, 'session-') THEN Item.updatedAt ELSE Item.createdAt END AS ts
  FROM read_ndjson($files, compression='gzip', ignore_errors=true, columns={{'Item': '{struct}'}})
  WHERE Item.owner.S IS NOT NULL
    AND (starts_with(Item.modelId.S, 'session-') OR starts_with(Item.modelId.S, 'party-')
         OR starts_with(Item.modelId.S, 'member-'))
), e AS (
  SELECT CASE m[1] WHEN 's' THEN 0 WHEN 'p' THEN 1 ELSE 2 END AS kind,
         CASE m[1] WHEN 'm' THEN o ELSE m END AS keyed,
         CASE m[1] WHEN 's' THEN o END AS user_id,
         CASE WHEN ts.N IS NOT NULL THEN CAST(floor(TRY_CAST(ts.N AS DOUBLE)) AS BIGINT)
              WHEN ts.S IS NOT NULL AND regexp_full_match(ts.S, '\\d{{4}}-\\d{{2}}-\\d{{2}}T\\d{{2}}:\\d{{2}}:\\d{{2}}(\\.\\d{{1,9}})?(Z|[+-]\\d{{2}}:\\d{{2}})')
                   THEN CAST(floor(epoch(TRY_CAST(ts.S AS TIMESTAMPTZ))) AS BIGINT)
         END // 86400 AS day
  FROM r
  WHERE (m[1] = 'm' AND starts_with(o, 'party-')) OR (m[1] <> 'm' AND starts_with(o, 'user-') AND length(o) > 5)
), c AS (
  SELECT day, split_part(keyed, '-', 2) AS app, kind, user_id, count(*) AS n
  FROM e
  WHERE strpos(substr(keyed, strpos(keyed, '-') + 1), '-') > 1 AND day BETWEEN $first AND $last
  GROUP BY ALL
), metrics AS (
  SELECT day, app,
         count(*) FILTER (WHERE kind = 0) AS active_users,
         coalesce(sum(n) FILTER (WHERE kind = 0), 0) AS games_played,
         coalesce(sum(n) FILTER (WHERE kind = 1), 0) AS parties_created,
         coalesce(sum(n) FILTER (WHERE kind = 2), 0) AS parties_joined
  FROM c
  GROUP BY ALL
), days AS (
  SELECT d AS day FROM range($first, $last + 1) t(d)
)
SELECT DATE '1970-01-01' + CAST(days.day AS INTEGER) AS date, apps.app,
       coalesce(active_users, 0) AS active_users, coalesce(games_played, 0) AS games_played,
       coalesce(parties_created, 0) AS parties_created, coalesce(parties_joined, 0) AS parties_joined
FROM days CROSS JOIN (SELECT DISTINCT app FROM metrics) apps
LEFT JOIN metrics USING (day, app)
ORDER BY date, app
"""


QUERIES = {"bench": QUERY, "lean": QUERY_LEAN}


def main() -> None:
    args = sys.argv[1:]
    query = "lean"
    if args[0] == "--query":
        query, args = args[1], args[2:]
    manifest, root, start, end, out = args[:5]
    with open(manifest) as fh:
        files = [f"{root}/{json.loads(line)['dataFileS3Key']}" for line in fh if line.strip()]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    first, last = (dt.date.fromisoformat(d).toordinal() - EPOCH for d in (start, end))
    rel = con.execute(QUERIES[query].format(struct=STRUCT), {"files": files, "first": first, "last": last})
    rows = rel.fetchall()
    with open(out, "w") as fh:
        fh.write("date,app,active_users,games_played,parties_created,parties_joined\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
