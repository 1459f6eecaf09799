#!/bin/bash
# The whole test suite: unit tests, then integration tests in a disposable
# systemd machine (needs root; see ../shared/TESTBED.md). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
make --no-print-directory vendor
export PYTHONPATH="$PWD/build/vendor${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -m pytest -p no:cacheprovider -ra "${@:-tests}"
