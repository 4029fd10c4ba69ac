"""``import bubbly_metrics`` stays cheap: heavy dependencies load on first use (narwhals-style)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("boto3", "botocore", "s3fs", "fsspec", "polars", "msgspec", "isal", "aiobotocore")


def modules_after(code: str) -> list[str]:
    report = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_dependency() -> None:
    assert modules_after("import bubbly_metrics") == []


def test_version_and_names_without_loading_anything() -> None:
    code = (
        "import bubbly_metrics as bm\nassert bm.__version__ and 'aggregate' in dir(bm) and 'scan_export' in bm.__all__"
    )
    assert modules_after(code) == []


def test_first_use_loads_what_it_needs() -> None:
    # The probe must be able to see a heavy import, or the tests above prove nothing.
    assert "polars" in modules_after("import bubbly_metrics as bm\nbm.scan_export")
