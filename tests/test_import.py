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


def test_reconcile_stays_callable_once_its_module_is_imported() -> None:
    # The function lives in the reconciliation package, named apart from it: importing the package
    # (as the CLI, the notebook or a user's `from bubbly_metrics.reconciliation import read_snapshot`
    # does) leaves bm.reconcile the function.
    code = (
        "import bubbly_metrics as bm\nfrom bubbly_metrics.reconciliation import read_snapshot, reconcile\n"
        "result = bm.reconcile(bm.sample_export_location(), analytics_table=bm.DailyRuns(), now=bm.SAMPLE_NOW)\n"
        "assert type(result).__name__ == 'ReconcileResult' and result.comparison.height > 0, result\n"
        "assert bm.reconcile is reconcile and read_snapshot.__module__.startswith('bubbly_metrics.reconciliation')"
    )
    assert "polars" in modules_after(code)


def test_the_namespace_shows_only_the_public_api() -> None:
    code = (
        "import bubbly_metrics as bm\nbm.aggregate\n"  # a submodule is loaded by now
        "shown = [n for n in dir(bm) if not n.startswith('__')]\n"
        "assert shown == sorted(bm.__all__), sorted(set(shown) ^ set(bm.__all__))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
