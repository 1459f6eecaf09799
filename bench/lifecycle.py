"""Agent lifecycle benchmark: boots the disposable machine, installs agentd,
runs lifecycle_inner.py inside, and prints its report.

    python3 bench/lifecycle.py [--agents 100] [--concurrent 200] [--registered 1000]
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
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument(
        "--registered", type=int, default=0, help="also register this many agents and list them"
    )
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=(), admins=())
        r = m.run(
            [
                "/usr/bin/python3",
                str(REPO / "bench" / "lifecycle_inner.py"),
                str(args.agents),
                str(args.concurrent),
                str(args.registered),
            ],
            timeout=3600,
        )
        report = json.loads(r.stdout)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
