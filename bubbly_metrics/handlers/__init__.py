"""AWS Lambda entrypoints: thin front doors over the library (docs/rules.md#lambda-entrypoints).

- ``bubbly_metrics.handlers.export.lambda_handler`` — the Export Lambda: starts a DynamoDB
  export to S3 (:func:`bubbly_metrics.start_export.start_export`).
- ``bubbly_metrics.handlers.aggregator.lambda_handler`` — the Aggregator Lambda: does what the
  daily pipeline decides for its event (:func:`bubbly_metrics.daily.run_daily`: aggregate an
  export with :func:`bubbly_metrics.aggregate`, publish it with
  :func:`bubbly_metrics.publish.publish`).
- ``bubbly_metrics.handlers.distributed.map_handler`` and ``.reduce_handler`` — the distributed
  backfill's Map and Reduce Lambdas (:mod:`bubbly_metrics.distributed`).

Each parses its event and environment (``_events``: every field's shape and type, the S3 key's
length and place, the dates' bounds, before any AWS call), calls the library, logs one JSON
object per line (``_logging``) and returns a JSON-serialisable summary; every error is logged
and re-raised so Lambda records the failure.  Each module's docstring says what each event does.
"""
