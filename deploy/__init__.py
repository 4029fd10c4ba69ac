"""The AWS CDK app that deploys bubbly_metrics (``app.py``, ``stack.py``) and its bundle builder."""
