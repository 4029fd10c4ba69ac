#!/usr/bin/env bash
# Refresh requirements/lock.txt: the exact versions CI installs (tests, lint, CDK, the bundle and
# the build backend), resolved once for every platform and Python >= 3.11 (uv's universal mode).
#
#   scripts/lock.sh                  # newest releases of everything (review the diff, run .ci/run)
#   scripts/lock.sh --upgrade-package moto   # move one package, keep the rest
#
# Extra arguments go to `uv pip compile`.  uv is pinned here so a refresh is itself reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tools=.cache/lock-tools
if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q "uv==$UV_VERSION"
fi
if [ "$#" -eq 0 ]; then set -- --upgrade; fi
"$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --all-extras \
  --custom-compile-command scripts/lock.sh \
  pyproject.toml requirements/build.in -o requirements/lock.txt "$@"
echo "requirements/lock.txt: $(grep -c '^[a-zA-Z]' requirements/lock.txt) packages pinned" >&2
