"""DuckDB baseline: the same daily metrics from the same data files, in one SQL query.

Usage: python bench/duckdb_metrics.py MANIFEST_FILES_JSON BUCKET_ROOT START END OUT.csv

Benchmark-only (DuckDB is not a dependency of the package).  It reads exactly the files the
manifest lists with an explicit column spec (no inference) and applies SPEC §2.1's rules so
its result can be compared with ours row for row.
"""

from __future__ import annotations

import json
import sys

import duckdb

STRUCT = (
    "STRUCT(modelId STRUCT(S VARCHAR), owner STRUCT(S VARCHAR), "
    "createdAt STRUCT(N VARCHAR, S VARCHAR), updatedAt STRUCT(N VARCHAR, S VARCHAR))"
)

QUERY = """
WITH raw AS (
  SELECT Item.modelId.S AS model_id, Item.owner.S AS owner,
         Item.createdAt AS created, Item.updatedAt AS updated
  FROM read_json($files, format='newline_delimited', compression='gzip',
                 columns={{'Item': '{struct}'}})
), classified AS (
  SELECT split_part(model_id, '-', 1) AS kind,
         CASE WHEN split_part(model_id, '-', 1) = 'member' THEN owner ELSE model_id END AS keyed,
         model_id, owner,
         CASE WHEN split_part(model_id, '-', 1) = 'session' THEN updated ELSE created END AS ts
  FROM raw
  WHERE split_part(model_id, '-', 1) IN ('session', 'party', 'member')
), events AS (
  SELECT kind,
         split_part(keyed, '-', 2) AS app,
         CASE WHEN kind = 'member' THEN NULL ELSE substr(owner, 6) END AS user_id,
         CASE WHEN ts.N IS NOT NULL THEN CAST(floor(TRY_CAST(ts.N AS DOUBLE)) AS BIGINT)
              WHEN ts.S IS NOT NULL AND regexp_full_match(ts.S, '\\d{{4}}-\\d{{2}}-\\d{{2}}T\\d{{2}}:\\d{{2}}:\\d{{2}}(\\.\\d{{1,9}})?(Z|[+-]\\d{{2}}:\\d{{2}})')
                   THEN CAST(floor(epoch(TRY_CAST(ts.S AS TIMESTAMPTZ))) AS BIGINT)
         END AS secs
  FROM classified
  WHERE len(string_split(keyed, '-')) >= 3 AND split_part(keyed, '-', 2) <> ''
    AND (kind = 'member' OR (starts_with(owner, 'user-') AND length(owner) > 5))
), dated AS (
  SELECT kind, app, user_id, CAST(to_timestamp(secs) AT TIME ZONE 'UTC' AS DATE) AS date
  FROM events
  WHERE secs BETWEEN -62135596800 AND 253402300799
), metrics AS (
  SELECT date, app,
         count(DISTINCT user_id) FILTER (WHERE kind = 'session') AS active_users,
         count(*) FILTER (WHERE kind = 'session') AS games_played,
         count(*) FILTER (WHERE kind = 'party') AS parties_created,
         count(*) FILTER (WHERE kind = 'member') AS parties_joined
  FROM dated WHERE date BETWEEN $start AND $end
  GROUP BY date, app
), days AS (
  SELECT CAST(d AS DATE) AS date FROM range(CAST($start AS DATE), CAST($end AS DATE) + INTERVAL 1 DAY, INTERVAL 1 DAY) t(d)
)
SELECT days.date, apps.app,
       coalesce(active_users, 0) AS active_users, coalesce(games_played, 0) AS games_played,
       coalesce(parties_created, 0) AS parties_created, coalesce(parties_joined, 0) AS parties_joined
FROM days CROSS JOIN (SELECT DISTINCT app FROM metrics) apps
LEFT JOIN metrics USING (date, app)
ORDER BY date, app
"""


def main() -> None:
    manifest, root, start, end, out = sys.argv[1:6]
    with open(manifest) as fh:
        files = [f"{root}/{json.loads(line)['dataFileS3Key']}" for line in fh if line.strip()]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = con.execute(QUERY.format(struct=STRUCT), {"files": files, "start": start, "end": end})
    rows = rel.fetchall()
    with open(out, "w") as fh:
        fh.write("date,app,active_users,games_played,parties_created,parties_joined\n")
        for row in rows:
            fh.write(",".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
