"""Plain-Python baseline: gzip + json.loads per line, dicts and sets (the tests' reference).

Usage: python bench/plain_python.py EXPORT_DIR BUCKET_ROOT START END OUT.csv

It runs ``tests/reference.py`` — the deliberately simple implementation the property tests
check the library against — so the baseline and the oracle are one piece of code.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import reference  # noqa: E402


def main() -> None:
    export_dir, root, start, end, out = sys.argv[1:6]
    result = reference.aggregate(
        Path(export_dir), Path(root), start=dt.date.fromisoformat(start), end=dt.date.fromisoformat(end), dense=True
    )
    with open(out, "w") as fh:
        fh.write("date,app,active_users,games_played,parties_created,parties_joined\n")
        for row in result.metrics:
            fh.write(",".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
