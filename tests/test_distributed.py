"""The distributed backfill (bubbly_metrics.distributed): plan → map → reduce == aggregate().

- Property: for any export hypothesis writes (malformed records, broken lines, a missing data
  file, incremental deletes) and any split of its data files into batches, the reduce of the
  maps equals ``aggregate()``: metrics, per-user data and record outcomes.
- A lost batch fails the reduce, naming it; a batch run twice changes nothing.
- The routing rule (one Aggregator or the state machine) from the manifest and the memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import bubbly_metrics as bm
from bubbly_metrics import distributed as dist
from bubbly_metrics.exceptions import ConfigurationError, ExportIntegrityError, InvalidArgumentError
from bubbly_metrics.synthetic import write_full_export, write_incremental_export, write_synthetic_export
from tests.cdk_env import LOG_DELIVERY
from tests.test_differential import (
    NOW,
    SETTINGS,
    START,
    WINDOW_FROM,
    WINDOW_TO,
    apply_damage,
    bucket,
    damage,
    incremental_records,
    items,
)


def sorted_outcomes(result: bm.AggregateResult) -> pl.DataFrame:
    return result.outcomes.sort("status", "reason", "file", nulls_last=True)


def assert_same_result(got: bm.AggregateResult, want: bm.AggregateResult) -> None:
    assert got.export.export_id == want.export.export_id
    assert (got.mode, got.date_range) == (want.mode, want.date_range)
    assert_frame_equal(got.metrics, want.metrics)
    assert_frame_equal(got.per_user, want.per_user)
    assert_frame_equal(sorted_outcomes(got), sorted_outcomes(want))
    assert_frame_equal(got.malformed(by_file=True), want.malformed(by_file=True))
    assert got.counts == want.counts
    assert got.to_dict() == want.to_dict() or _same_but_examples(got.to_dict(), want.to_dict())


def _same_but_examples(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The per-reason example is "one of them": across files it may be another file's record.
    return {k: v for k, v in a.items() if k != "malformedExamples"} == {
        k: v for k, v in b.items() if k != "malformedExamples"
    }


def resplit(run: Path, seed: int, pieces: int) -> None:
    """Rewrite the run's plan as an arbitrary split (shuffled, uneven) of the same files."""
    plan = json.loads((run / "plan.json").read_text())
    keys = [k for b in plan for k in b["files"]]
    rng = random.Random(seed)
    rng.shuffle(keys)
    cuts = sorted(rng.sample(range(1, len(keys)), min(pieces, len(keys)) - 1)) if len(keys) > 1 else []
    groups = [keys[i:j] for i, j in zip([0, *cuts], [*cuts, len(keys)], strict=True)]
    (run / "plan.json").write_text(
        json.dumps([{"batch": n, "files": g, "items": 0} for n, g in enumerate(groups) if g])
    )


def map_reduce(
    source: str, run: Path, *, mode: str, split: tuple[int, int] | None, per_batch: int
) -> bm.AggregateResult:
    plan = dist.plan_run(
        source, run=str(run), mode=mode, start=START if mode == "backfill" else None, now=NOW, items_per_batch=per_batch
    )
    if split is not None:
        resplit(run, *split)
        plan = dist.Plan.read(str(run))
    for batch in plan.batches:
        dist.map_batch(str(run), batch)
    return dist.reduce_run(str(run))


# --- the property ---------------------------------------------------------------------------


@settings(SETTINGS, max_examples=40)  # each example plans, maps and reduces: ~0.1 s
@given(
    rows=st.lists(items(), max_size=40),
    n_files=st.integers(1, 5),
    spec=damage(),
    per_batch=st.integers(1, 30),
    split=st.none() | st.tuples(st.integers(0, 2**16), st.integers(1, 5)),
)
def test_map_reduce_equals_aggregate_backfill(
    rows: list[dict[str, Any]], n_files: int, spec: dict[str, Any], per_batch: int, split: tuple[int, int] | None
) -> None:
    with bucket() as root:
        written = write_full_export(root / "x", rows, export_time=NOW - dt.timedelta(minutes=30), n_files=n_files)
        apply_damage(written, spec)
        want = bm.aggregate(str(root / "x"), mode="backfill", start=START, now=NOW)
        got = map_reduce(str(root / "x"), root / "run", mode="backfill", split=split, per_batch=per_batch)
        assert_same_result(got, want)


@settings(SETTINGS, max_examples=40)  # each example plans, maps and reduces: ~0.1 s
@given(
    pairs=st.lists(st.tuples(items(), st.sampled_from(["insert", "update", "delete"])), max_size=40),
    n_files=st.integers(1, 4),
    spec=damage(),
    split=st.tuples(st.integers(0, 2**16), st.integers(1, 4)),
)
def test_map_reduce_equals_aggregate_incremental(
    pairs: list[tuple[dict[str, Any], str]], n_files: int, spec: dict[str, Any], split: tuple[int, int]
) -> None:
    with bucket() as root:
        written = write_incremental_export(
            root / "x", incremental_records(pairs), export_from=WINDOW_FROM, export_to=WINDOW_TO, n_files=n_files
        )
        apply_damage(written, spec)
        want = bm.aggregate(str(root / "x"), mode="incremental", now=NOW)
        got = map_reduce(str(root / "x"), root / "run", mode="incremental", split=split, per_batch=10)
        assert_same_result(got, want)


# --- failures and re-runs -------------------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> str:
    write_synthetic_export(tmp_path / "export", n_items=600, days=10, start="2025-03-03", n_files=6, seed=3)
    return str(tmp_path / "export")


def test_plan_cuts_by_item_counts_without_splitting_files(export: str, tmp_path: Path) -> None:
    plan = dist.plan_run(export, run=str(tmp_path / "run"), now=NOW, start="2025-03-03", items_per_batch=250)
    files = bm.find_export(export).data_files()
    assert [k for b in plan.batches for k in b["files"]] == [f.key for f in files]
    assert all(b["items"] <= 250 or len(b["files"]) == 1 for b in plan.batches)
    assert sum(b["items"] for b in plan.batches) == 600
    # plan.json is the Distributed Map's item list: a JSON array of the batches.
    assert json.loads((tmp_path / "run" / "plan.json").read_text()) == plan.batches


def test_a_lost_batch_fails_the_reduce_naming_it(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    assert len(plan.batches) >= 3
    for batch in plan.batches[:1] + plan.batches[2:]:
        dist.map_batch(str(run), batch)
    with pytest.raises(ExportIntegrityError, match=r"1 of \d+ batch\(es\) have no partial \(1\)"):
        dist.reduce_run(str(run))
    dist.map_batch(str(run), 1)  # the operator re-runs it
    want = bm.aggregate(export, mode="backfill", start="2025-03-03", now=NOW)
    assert_same_result(dist.reduce_run(str(run)), want)


def test_a_batch_run_twice_writes_the_same_partial(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    for batch in plan.batches:
        dist.map_batch(str(run), batch)

    def partials() -> dict[str, Any]:
        # The same content; rows come out of a group-by in no fixed order.
        return {
            p.name: pl.read_parquet(p).sort(pl.all(), nulls_last=True) if p.suffix == ".parquet" else p.read_text()
            for p in sorted((run / "partials").iterdir())
        }

    first = partials()
    dist.map_batch(str(run), plan.batches[0])
    again = partials()
    assert first.keys() == again.keys() and len(first) == 3 * len(plan.batches)
    for name, content in first.items():
        if isinstance(content, str):
            assert content == again[name]
        else:
            assert_frame_equal(content, again[name])
    assert_same_result(dist.reduce_run(str(run)), bm.aggregate(export, mode="backfill", start="2025-03-03", now=NOW))


def test_a_batch_not_in_the_plan_is_refused(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    forged = {"batch": 0, "files": plan.batches[1]["files"]}
    with pytest.raises(InvalidArgumentError, match="does not match batch 0"):
        dist.map_batch(str(run), forged)
    with pytest.raises(InvalidArgumentError, match="not in run"):
        dist.map_batch(str(run), 99)
    with pytest.raises(InvalidArgumentError, match="run.json not found"):
        dist.reduce_run(str(tmp_path / "nowhere"))


def test_a_plan_from_another_export_is_refused(export: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    dist.plan_run(export, run=str(run), now=NOW, start="2025-03-03", items_per_batch=200)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(meta | {"exportId": "01700000000000-deadbeef"}))
    with pytest.raises(ExportIntegrityError, match="was planned for export 01700000000000-deadbeef"):
        dist.reduce_run(str(run))


# --- sizing ---------------------------------------------------------------------------------


def test_single_run_estimate_scales_with_items_and_memory(export: str) -> None:
    info = bm.find_export(export)
    small = dist.single_run_estimate(info, memory_mb=3008, timeout_seconds=900)
    assert small.fits and small.items == 600
    # The estimate reads the manifest's item count: a table 500,000x this one does not fit
    # the stack's default Aggregator (3,008 MB, 900 s), and doubling memory halves the scan.
    huge = dataclasses.replace(info, item_count=300_000_000)
    at_3008 = dist.single_run_estimate(huge, memory_mb=3008, timeout_seconds=900)
    at_6016 = dist.single_run_estimate(huge, memory_mb=6016, timeout_seconds=900)
    assert not at_3008.fits
    fixed = dist.SINGLE_RUN_FIXED_SECONDS
    assert at_6016.seconds - fixed == pytest.approx((at_3008.seconds - fixed) / 2)
    # No more than 6 vCPUs however much memory.
    assert dist.single_run_estimate(huge, memory_mb=20_000, timeout_seconds=900).vcpus == 6
    assert dist.default_items_per_batch(3538) == 2 * dist.default_items_per_batch(1769)


# --- CLI ------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    import io

    from bubbly_metrics.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_plan_map_reduce_prints_what_aggregate_prints(export: str, tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    now = ["--now", "2025-03-13T02:30:00Z"]
    code, out, _ = cli("plan", export, "--run", run, "--start", "2025-03-03", "--items-per-batch", "150", *now)
    assert code == 0 and json.loads(out)["batches"] == 6
    code, out, _ = cli("map", run, "--batch", "0", "--batch", "5")
    assert code == 0 and [json.loads(line)["batch"] for line in out.splitlines()] == [0, 5]
    code, _, err = cli("reduce", run)
    assert code == 1 and "4 of 6 batch(es) have no partial (1, 2, 3, 4)" in err
    assert cli("map", run)[0] == 0  # the rest (and 0 and 5 again)
    code, reduced, _ = cli("reduce", run, "--format", "csv")
    _, aggregated, _ = cli("aggregate", export, "--mode", "backfill", "--start", "2025-03-03", "--format", "csv", *now)
    assert code == 0 and reduced == aggregated and reduced.count("\n") > 10
    code, _, err = cli("reduce", run, "--dry-run")
    assert code == 2 and "go with --publish" in err


# --- the state machine, executed ------------------------------------------------------------
#
# moto's Step Functions interpreter runs the definition taken from the synthesised template:
# the Distributed Map (ItemReader JSON from S3, ItemSelector with $$.Map.Item.Value,
# MaxConcurrency, ToleratedFailurePercentage 0, STANDARD children), the Lambda tasks with their
# Retry, then the Reduce.  Its Lambda backend would need Docker, so LambdaBackend.invoke is
# routed in-process to the handlers; everything else (S3 for the export, the run's plan and
# partials, DynamoDB, CloudWatch) is moto's server over HTTP.  moto 5.2.5 has no ItemBatcher and
# no JSONL ItemReader, which is why the definition uses neither (deploy/distributed.py).

EXEC_NOW = dt.datetime(2025, 3, 13, 2, 30, tzinfo=dt.UTC)
STACK = "BubblyAnalytics"


def _render(value: Any, names: dict[str, str]) -> Any:
    """Resolve the template's Fn::Join / Ref / Fn::GetAtt with the names moto knows."""
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_render(p, names) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return names[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return names["/".join(value["Fn::GetAtt"])]
    return value


def _synth(**context: str) -> dict[str, Any]:
    import tempfile

    from tests.cdk_env import cdk_json_context, import_cdk

    import_cdk()
    from deploy.app import build_app

    with tempfile.TemporaryDirectory() as out:
        build_app(
            context={
                **cdk_json_context(),
                "mainTable": "arn:aws:dynamodb:eu-west-2:123456789012:table/Main",
                "stackName": STACK,
                "region": "eu-west-2",
                "account": "123456789012",
                "placeholderCode": "true",
                **context,
            },
            outdir=out,
        )
        template: dict[str, Any] = json.loads((Path(out) / f"{STACK}.template.json").read_text())
    return template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The stack as ``cdk synth -c distributedMaxConcurrency=4`` writes it (placeholder code).

    4, not the default 100: moto runs one thread per concurrent child, and two dozen threads at
    once in one process trip a CPython 3.11 race ("AST constructor recursion depth mismatch")
    inside moto's server, which fails an invocation at random.
    """
    return _synth(distributedMaxConcurrency="4")


@pytest.fixture(scope="module")
def state_machine_definition(template: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The synthesised template's state machine definition, resolved for moto; and the function names."""
    resources = template["Resources"]
    names = {"AWS::Partition": "aws"}
    functions = {}
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::Lambda::Function":
            fn = resource["Properties"]["FunctionName"]
            names[f"{logical}/Arn"] = f"arn:aws:lambda:eu-west-2:123456789012:function:{fn}"
            functions[resource["Properties"]["Handler"]] = fn
        if resource["Type"] == "AWS::S3::Bucket":
            names[logical] = "bubbly-exports"
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    definition = _render(machine["Properties"]["DefinitionString"], names)
    # moto 5.2.5's ASL grammar takes ToleratedFailurePercentage as a decimal NUMBER token only;
    # an integer 0 (what AWS, CDK and the template have) lexes as INT and fails to parse.  The
    # same value, spelled 0.0, is the one change made to the template's definition.
    assert definition.count('"ToleratedFailurePercentage":0}') == 1
    return definition.replace('"ToleratedFailurePercentage":0}', '"ToleratedFailurePercentage":0.0}'), functions


class _Lambdas:
    """moto's LambdaBackend.invoke, routed to the handlers in this process."""

    def __init__(self, functions: dict[str, str], table: str) -> None:
        self.by_name = {name: handler for handler, name in functions.items()}
        self.table = table
        self.calls: list[tuple[str, Any]] = []
        self.fail_batch: int | None = None

    def invoke(self, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any) -> bytes:
        from bubbly_metrics.handlers.distributed import handle_map, handle_reduce
        from tests.aws_helpers import FakeContext

        handler = self.by_name[function_name.split(":")[-1]]
        event = json.loads(body) if body else {}
        self.calls.append((handler.rsplit(".", 1)[-1], event))
        context = FakeContext(remaining_ms=900_000, aws_request_id=f"req-{len(self.calls)}")
        try:
            if handler.endswith("map_handler"):
                if self.fail_batch is not None and event["batch"]["batch"] == self.fail_batch:
                    raise RuntimeError(f"injected failure of batch {self.fail_batch}")
                result = handle_map(event, context, env={"EXPORT_BUCKET": "bubbly-exports"})
            elif handler.endswith("reduce_handler"):
                env = {"ANALYTICS_TABLE": self.table, "EXPORT_BUCKET": "bubbly-exports"}
                result = handle_reduce(event, context, env=env, now=EXEC_NOW)
            else:
                raise AssertionError(f"the state machine invoked {function_name}")
        except Exception as exc:
            # What Lambda answers for an unhandled exception: Step Functions turns it into the
            # task's error (errorType) and fails the child, then the Map (0% tolerated).
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
        return json.dumps(result, default=str).encode()


@pytest.fixture
def executing(aws: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's server with its Step Functions interpreter switched on (off again afterwards)."""
    import urllib.request

    def config(on: bool) -> None:
        body = json.dumps({"stepfunctions": {"execute_state_machine": on}}).encode()
        req = urllib.request.Request(f"{aws}/moto-api/config", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        urllib.request.urlopen(req).close()

    # The interpreter's own clients (ItemReader's S3 GetObject, Lambda invokes) call moto at
    # localhost:$MOTO_PORT.
    monkeypatch.setenv("MOTO_PORT", aws.rsplit(":", 1)[1])
    config(True)
    try:
        yield aws
    finally:
        config(False)


def _wait(sfn: Any, arn: str, seconds: float = 120) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + seconds
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.2)


def _table_items(table: str) -> dict[tuple[str, str], dict[str, Any]]:
    from tests.aws_helpers import scan_all, without_generations

    # aggregatedAt is the wall clock of the write, generation its unique id; everything else must be equal.
    items = without_generations(scan_all(table))
    return {key: {k: v for k, v in item.items() if k != "aggregatedAt"} for key, item in items.items()}


def test_the_state_machine_executes_and_writes_what_the_single_lambda_writes(
    executing: str,
    state_machine_definition: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import boto3
    from moto.awslambda.models import LambdaBackend

    from bubbly_metrics.handlers.aggregator import handle
    from bubbly_metrics.synthetic import generate_items
    from tests.aws_helpers import FakeContext, create_analytics_table
    from tests.conftest import upload_tree

    definition, functions = state_machine_definition
    # Several hundred small data files, written as AWS lays them out, under the stack's prefix.
    rows = generate_items(n_items=2400, start=dt.date(2025, 2, 20), days=21, seed=17)
    written = write_full_export(
        tmp_path / "bucket", rows, export_time=EXEC_NOW - dt.timedelta(minutes=30), n_files=300,
        prefix="exports/backfill/20250313T020000Z/", compresslevel=1,
    )  # fmt: skip
    upload_tree(tmp_path / "bucket", "bubbly-exports", executing)
    create_analytics_table("single")
    create_analytics_table("distributed")
    lambdas = _Lambdas(functions, table="distributed")
    monkeypatch.setattr(LambdaBackend, "invoke", lambda self, *a: lambdas.invoke(*a))
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"{STACK}-DistributedBackfill", definition=definition, roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    env = {"EXPORT_BUCKET": "bubbly-exports", "S3_PREFIX": "exports/", "DISTRIBUTED_STATE_MACHINE_ARN": machine}
    backfill = {"mode": "backfill", "backfillStartDate": "2025-02-20"}

    single = handle(backfill, FakeContext(), env=env | {"ANALYTICS_TABLE": "single"}, now=EXEC_NOW)
    assert "engine" not in single and single["rowsWritten"] > 0  # small: one Lambda

    started = handle(
        backfill | {"engine": "distributed", "itemsPerBatch": 100},
        FakeContext(aws_request_id="req-distributed"),
        env=env | {"ANALYTICS_TABLE": "unused-by-the-start"},
        now=EXEC_NOW,
    )
    assert started["engine"] == "distributed" and started["dataFiles"] == 300
    assert started["batches"] >= 20  # ~8 items per file, 100 items per batch
    done = _wait(sfn, started["executionArn"])
    assert done["status"] == "SUCCEEDED", done
    maps = [e for name, e in lambdas.calls if name == "map_handler"]
    assert sorted(e["batch"]["batch"] for e in maps) == list(range(started["batches"]))
    assert all(e["run"] == started["run"] for e in maps)
    assert [name for name, _ in lambdas.calls].count("reduce_handler") == 1
    assert sum(len(e["batch"]["files"]) for e in maps) == len(written.data_files) == 300

    want, got = _table_items("single"), _table_items("distributed")
    # Day rows and the ledger alike: the reduce records its days as the single run does.
    ledger = [key for key in want if key[0] == "#ledger"]
    assert len(want) - len(ledger) == single["rowsWritten"] and len(ledger) == 21
    assert got == want

    # The same event again (a retried invocation: same request id): no second execution.
    again = handle(
        backfill | {"engine": "distributed", "itemsPerBatch": 100},
        FakeContext(aws_request_id="req-distributed"),
        env=env | {"ANALYTICS_TABLE": "unused-by-the-start"},
        now=EXEC_NOW,
    )
    assert again["executionArn"] == started["executionArn"]
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1


def test_a_failed_batch_fails_the_execution_and_writes_nothing(
    executing: str,
    state_machine_definition: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import boto3
    from moto.awslambda.models import LambdaBackend

    from bubbly_metrics.handlers.aggregator import handle
    from bubbly_metrics.synthetic import generate_items
    from tests.aws_helpers import FakeContext, create_analytics_table, scan_all
    from tests.conftest import upload_tree

    definition, functions = state_machine_definition
    rows = generate_items(n_items=300, start=dt.date(2025, 3, 1), days=12, seed=5)
    write_full_export(
        tmp_path / "bucket", rows, export_time=EXEC_NOW - dt.timedelta(minutes=30), n_files=12,
        prefix="exports/backfill/20250313T020000Z/", compresslevel=1,
    )  # fmt: skip
    upload_tree(tmp_path / "bucket", "bubbly-exports", executing)
    create_analytics_table("distributed")
    lambdas = _Lambdas(functions, table="distributed")
    lambdas.fail_batch = 2
    monkeypatch.setattr(LambdaBackend, "invoke", lambda self, *a: lambdas.invoke(*a))
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"{STACK}-DistributedBackfill", definition=definition, roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]
    env = {"EXPORT_BUCKET": "bubbly-exports", "S3_PREFIX": "exports/", "DISTRIBUTED_STATE_MACHINE_ARN": machine}
    started = handle(
        {"mode": "backfill", "backfillStartDate": "2025-03-01", "engine": "distributed", "itemsPerBatch": 50},
        FakeContext(),
        env=env | {"ANALYTICS_TABLE": "distributed"},
        now=EXEC_NOW,
    )
    done = _wait(sfn, started["executionArn"])
    assert done["status"] == "FAILED"
    calls = [name for name, _ in lambdas.calls]
    if "reduce_handler" in calls:
        # moto 5.2.5 counts a failed child of a Distributed Map but never fails the Map run
        # (ToleratedFailure* are parsed, not enforced); AWS fails the Map there.  Either way the
        # run fails without writing: here the reduce refuses the lost batch, naming it.
        assert done["error"] == "ExportIntegrityError" and "have no partial (2)" in done["cause"]
    else:
        assert "injected failure of batch 2" in done["cause"]
    assert scan_all("distributed") == {}


# --- the stack's part (synthesised; cfn-lint runs over the whole template in test_deploy) ----


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    text = "".join(p if isinstance(p, str) else "X" for p in machine["Properties"]["DefinitionString"]["Fn::Join"][1])
    return dict(json.loads(text))


def _policy_actions(template: dict[str, Any], role_id: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in template["Resources"].values():
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]:
            for st in r["Properties"]["PolicyDocument"]["Statement"]:
                for action in st["Action"] if isinstance(st["Action"], list) else [st["Action"]]:
                    out.setdefault(action, []).append(st["Resource"])
    return out


def _role_of(template: dict[str, Any], function_name: str) -> str:
    (fn,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["FunctionName"] == function_name
    ]
    return str(fn["Properties"]["Role"]["Fn::GetAtt"][0])


def test_the_state_machine_is_standard_with_a_strict_bounded_distributed_map(template: dict[str, Any]) -> None:
    (machine,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    states = _definition(template)["States"]
    batches, reduce = states["Batches"], states["Reduce"]
    assert batches["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert batches["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert batches["ItemReader"]["Parameters"]["Key.$"] == "$.plan.Key"
    assert batches["ToleratedFailurePercentage"] == 0 and batches["MaxConcurrency"] == 4  # from context
    assert batches["ResultPath"] is None and batches["Next"] == "Reduce" and reduce["End"] is True
    summarise = batches["ItemProcessor"]["States"]["SummariseBatch"]
    for task in (summarise, reduce):
        retry = task["Retry"][0]
        assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"]
        assert retry["BackoffRate"] == 2 and retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] >= 6
    # A batch is idempotent: anything else is retried twice; the reduce publishes, so it is not.
    assert summarise["Retry"][1] == {
        "ErrorEquals": ["States.ALL"],
        "IntervalSeconds": 1,
        "MaxAttempts": 2,
        "BackoffRate": 2,
    }
    assert len(reduce["Retry"]) == 1


def test_max_concurrency_comes_from_context() -> None:
    from deploy.config import ConfigError

    assert _definition(_synth())["States"]["Batches"]["MaxConcurrency"] == 100  # the default
    with pytest.raises(ConfigError, match="distributedMaxConcurrency must be between 1 and 10000"):
        _synth(distributedMaxConcurrency="0")


def test_map_and_reduce_roles_are_least_privilege(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    buckets = {k: r for k, r in resources.items() if r["Type"] == "AWS::S3::Bucket"}
    (bucket,) = [k for k, r in buckets.items() if "NotificationConfiguration" in r["Properties"]]
    (table,) = [k for k, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"]
    runs = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/distributed-runs/*"]]}
    mapper = _policy_actions(template, _role_of(template, f"{STACK}-MapLambda"))
    assert set(mapper) == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert mapper["s3:PutObject"] == mapper["s3:AbortMultipartUpload"] == [runs]  # its partials, nothing else
    # Reads: the exports (and the prefix's own key, which s3fs probes) and the runs, not the bucket.
    exports = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/exports*"]]}
    (reads,) = mapper["s3:GetObject"]
    assert sorted(map(json.dumps, reads)) == sorted(map(json.dumps, [exports, runs]))
    reducer = _policy_actions(template, _role_of(template, f"{STACK}-ReduceLambda"))
    assert "s3:PutObject" not in reducer
    assert reducer["s3:GetObject"] == mapper["s3:GetObject"]
    assert {a for a in reducer if a.startswith("dynamodb:")} == {  # as the Aggregator: it publishes the same way
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
    }
    assert all(r == [{"Fn::GetAtt": [table, "Arn"]}] for a, r in reducer.items() if a.startswith("dynamodb:"))
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    machine_actions = _policy_actions(template, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    assert set(machine_actions) == {
        "s3:GetObject",  # the ItemReader's plan.json
        "lambda:InvokeFunction",
        "states:StartExecution",  # a Distributed Map starts its children as executions
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
        *LOG_DELIVERY,  # its execution log (CloudWatch Logs' log delivery)
    }
    assert machine_actions["s3:GetObject"] == [runs]  # plans live under the runs prefix, nothing else


def test_runs_expire_with_the_buckets_lifecycle_rule(template: dict[str, Any]) -> None:
    (bucket,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket" and "NotificationConfiguration" in r["Properties"]
    ]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    # A rule without a prefix filter expires every object, the runs' partials included.
    assert any(r["Status"] == "Enabled" and r["ExpirationInDays"] == 1 and "Prefix" not in r for r in rules)
    assert dist.RUNS_PREFIX == "distributed-runs/"


# --- the Aggregator's choice ----------------------------------------------------------------


def test_the_aggregator_goes_distributed_only_past_its_time(
    aws: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    from bubbly_metrics.handlers.aggregator import handle
    from bubbly_metrics.synthetic import generate_items
    from tests.aws_helpers import FakeContext, create_analytics_table
    from tests.conftest import upload_tree

    rows = generate_items(n_items=200, start=dt.date(2025, 3, 1), days=12, seed=9)
    write_full_export(
        tmp_path / "bucket", rows, export_time=EXEC_NOW - dt.timedelta(minutes=30), n_files=4,
        prefix="exports/backfill/20250313T020000Z/",
    )  # fmt: skip
    upload_tree(tmp_path / "bucket", "bubbly-exports", aws)
    create_analytics_table("t")
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="m", definition='{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}',
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]  # fmt: skip
    env = {
        "EXPORT_BUCKET": "bubbly-exports",
        "ANALYTICS_TABLE": "t",
        "S3_PREFIX": "exports/",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
        "DISTRIBUTED_STATE_MACHINE_ARN": machine,
    }
    backfill = {"mode": "backfill", "backfillStartDate": "2025-03-01"}

    # 15 minutes left: 200 items are a single run's work.
    assert "engine" not in handle(backfill, FakeContext(remaining_ms=900_000), env=env, now=EXEC_NOW)
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    # 30 seconds left: the estimate (the fixed 60 s alone) does not fit; the run is planned and started.
    started = handle(backfill, FakeContext(remaining_ms=30_000), env=env, now=EXEC_NOW)
    assert started["engine"] == "distributed" and started["items"] == 200 and started["dataFiles"] == 4
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert execution["executionArn"] == started["executionArn"]
    given = json.loads(sfn.describe_execution(executionArn=started["executionArn"])["input"])
    assert given["run"] == started["run"] and given["plan"]["Key"].endswith("/plan.json")
    plan = json.loads(boto3.client("s3").get_object(Bucket="bubbly-exports", Key=given["plan"]["Key"])["Body"].read())
    assert sum(b["items"] for b in plan) == 200
    # A full export's completion that starts its backfill decides the same way; the summary's
    # event delivered twice (new request ids) starts one execution, named after the export.
    from tests.test_daily_pipeline import completion_event

    summary_key = next(
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="bubbly-exports")["Contents"]
        if o["Key"].endswith("/manifest-summary.json")
    )  # fmt: skip
    boto3.client("s3").put_object(
        Bucket="bubbly-exports", Key="exports/backfill/20250313T020000Z/backfill-request.json",
        Body=json.dumps({"backfillStartDate": "2025-03-01"}).encode(),
    )  # fmt: skip
    event = completion_event(summary_key, bucket="bubbly-exports")
    create_analytics_table("fresh")  # the ledger of "t" already holds these days
    fresh = env | {"ANALYTICS_TABLE": "fresh"}
    first = handle(event, FakeContext(remaining_ms=30_000, aws_request_id="a"), env=fresh, now=EXEC_NOW)
    second = handle(event, FakeContext(remaining_ms=30_000, aws_request_id="b"), env=fresh, now=EXEC_NOW)
    assert first["engine"] == "distributed" and first["startDate"] == "2025-03-01"
    assert second["executionArn"] == first["executionArn"] != started["executionArn"]
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 2
    # No state machine deployed: it aggregates here all the same, and says why.
    without = {k: v for k, v in env.items() if k != "DISTRIBUTED_STATE_MACHINE_ARN"}
    capsys.readouterr()
    assert "engine" not in handle(backfill, FakeContext(remaining_ms=30_000), env=without, now=EXEC_NOW)
    (warning,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "aggregating here" in line]
    assert warning["level"] == "WARNING" and warning["fits"] is False
    # Forced, without a state machine, or for a day: one clear error each.
    with pytest.raises(ConfigurationError, match="DISTRIBUTED_STATE_MACHINE_ARN environment variable is required"):
        handle(backfill | {"engine": "distributed"}, FakeContext(), env=without, now=EXEC_NOW)
    with pytest.raises(InvalidArgumentError, match="engine 'distributed' is for backfills"):
        handle({"mode": "incremental", "engine": "distributed"}, FakeContext(), env=env, now=EXEC_NOW)
    with pytest.raises(InvalidArgumentError, match="Invalid engine"):
        handle(backfill | {"engine": "spark"}, FakeContext(), env=env, now=EXEC_NOW)
