#!/usr/bin/env bash
# Lint and type checks (a CI step of their own, and what .pre-commit-config.yaml runs):
#   pip install -e ".[lint]" && scripts/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(bubbly_metrics tests bench deploy scripts setup.py)
python -m ruff check "${paths[@]}" notebooks  # notebooks: lint only (their parameter cells align comments)
python -m ruff format --check "${paths[@]}"
python -m mypy                                # the package (pyproject's [tool.mypy])
python -m mypy tests
