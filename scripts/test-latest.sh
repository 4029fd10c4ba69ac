#!/usr/bin/env bash
# The suite against the newest releases of every dependency, ignoring the lock: run it to meet
# drift on purpose (then `scripts/lock.sh` and commit the lock, or hold a package back in
# requirements/build.in / pyproject with a comment saying which release breaks what).
#   scripts/test-latest.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv-latest
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
env -u PIP_CONSTRAINT pip install -q --upgrade --upgrade-strategy eager -e ".[test,lint]"
pip list --format=freeze > .cache/latest-versions.txt
echo "newest releases installed (listed in .cache/latest-versions.txt)" >&2
pytest "$@"
