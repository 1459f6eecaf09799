"""Task queue benchmark: boots the disposable machine, installs agentd, runs
tasks_inner.py inside, and prints its report.

    python3 bench/tasks.py [--agents 8] [--per-agent 250] [--runs 10] [--phases a,b]

Phases (tasks_inner.py): inprocess_queue, dbus_ping, dbus_queue (ClaimTask +
CompleteTask per task), dbus_queue_complete_and_claim (CompleteAndClaim: one
call per task), systemd_unit_start, submit_to_running_from_stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.machine import Machine  # noqa: E402
from testbed.provision import install_agentd  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--per-agent", type=int, default=250)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--phases", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=(), admins=())
        r = m.run(
            [
                "/usr/bin/python3",
                str(REPO / "bench" / "tasks_inner.py"),
                str(args.agents),
                str(args.per_agent),
                str(args.runs),
            ],
            timeout=1800,
            env={"BENCH_PHASES": args.phases},
        )
        print(json.dumps(json.loads(r.stdout), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
