#!/bin/bash
# The main job, end to end: boot a disposable systemd machine, install agentd
# in it, create and start agents as two users, show what the system sees.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
make --no-print-directory vendor
make --no-print-directory vendor-llama   # llama.cpp for agentd-inference (~4 min the first time)
make --no-print-directory model          # the default GGUF, sha256-checked
exec /usr/bin/python3 tools/demo.py "$@"
