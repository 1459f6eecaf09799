#!/bin/bash
# The whole test suite: lint and types (tools/lint.sh), unit tests, then
# integration tests in a disposable systemd machine (needs root; see
# ../shared/TESTBED.md). Extra args go to pytest (and skip the lint step).
#
# Without args, tests/integration runs against the .deb (make deb) installed
# with apt in a fresh machine (tests/testbed/provision.py, AGENTD_TEST_PACKAGE):
# the package operators install, whose files are `make install DESTDIR=`'s
# (packaging/debian/rules). `make install` straight onto a host (the demo's
# way, and the default of `tools/test.sh tests/integration/FILE.py`) is run
# end to end by tests/integration/test_agents.py in the first pass. Running
# the whole of tests/integration twice took ~12 min more (measured: 724 s a
# pass) for what the two installs share: the same files, the same code.
#
# --slow (first argument): only the tests marked `slow` (the 1.5B model, from
# `make model-1.5b`); without it they are skipped, so the default run stays fast.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--slow" ]]; then
    shift
    make --no-print-directory model-1.5b
    export AGENTD_SLOW_TESTS=1
    set -- -m slow "${@:-tests}"
fi
bash tools/deps.sh
make --no-print-directory vendor
make --no-print-directory vendor-llama   # llama.cpp for agentd/inference
make --no-print-directory model          # the default GGUF (build/models, build/model-cache)
make --no-print-directory model-minilm   # the embedding model (memory), converted to GGUF
make --no-print-directory lint-tools     # ruff, mypy (build/lint)
make --no-print-directory test-clients   # the openai client (build/test-clients)
export PYTHONPATH="$PWD/build/vendor${PYTHONPATH:+:$PYTHONPATH}"
export AGENTD_LLAMA_VENDOR="$PWD/build/vendor-llama"
PYTEST=(/usr/bin/python3 -m pytest -p no:cacheprovider -ra)
if (($#)) || ((EUID != 0)); then
    exec "${PYTEST[@]}" "${@:-tests}"
fi

rc=0
bash tools/lint.sh || rc=$?
"${PYTEST[@]}" --durations=15 tests --ignore=tests/integration \
    tests/integration/test_agents.py || rc=$?
echo
echo "=== tests/integration, against the installed .deb (AGENTD_TEST_PACKAGE)"
make --no-print-directory -s deb
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agentd/__init__.py)
AGENTD_TEST_PACKAGE="$PWD/build/agentd_${version}_amd64.deb" \
    "${PYTEST[@]}" --durations=15 tests/integration || rc=$?
exit "$rc"
