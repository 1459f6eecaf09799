#!/bin/bash
# Lint, format and type checks: ruff (check and format --check) on everything,
# mypy on agentd and agentctl (strict for the engine: pyproject.toml). Needs
# `make lint-tools vendor` (tools/test.sh runs both first).
set -euo pipefail
cd "$(dirname "$0")/.."
LINT="$PWD/build/lint"
export PYTHONPATH="$LINT:$PWD/build/vendor${PYTHONPATH:+:$PYTHONPATH}"
TREES=(agentd agentctl tests bench tools)
echo "=== ruff check"
/usr/bin/python3 -m ruff check "${TREES[@]}"
echo "=== ruff format --check"
/usr/bin/python3 -m ruff format --check "${TREES[@]}"
echo "=== mypy"
/usr/bin/python3 -m mypy
