"""Agent runtime start benchmark: boots the disposable machine, installs agentd,
runs runtime_start_inner.py inside, prints its report and writes it to
bench/results-runtime.json.

    python3 bench/runtime_start.py [--agents 20] [--import-runs 15] [--before REV]

"before" is the runtime as of REV, by default the commit before issue 11's work
on the runtime's start (its import diet).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "75c3c80534ba7f157d9b2da4df750bf6295f1fa6"  # issue 10's last commit
sys.path.insert(0, str(REPO / "tests"))

from testbed.machine import Machine  # noqa: E402
from testbed.provision import install_agentd  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--import-runs", type=int, default=15)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-runtime.json")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=(), admins=())
        r = m.run(
            [
                "/usr/bin/python3",
                str(REPO / "bench" / "runtime_start_inner.py"),
                str(args.agents),
                str(args.import_runs),
                args.before,
            ],
            timeout=1800,
        )
        report = json.loads(r.stdout)
    text = json.dumps(report, indent=2)
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
