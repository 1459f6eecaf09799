"""Goals benchmark (issue 14): boots the disposable machine, installs agentd
with the default model, runs goals_inner.py inside as root, prints its report.

    python3 bench/goals.py [--spawns 20] [--wide 100] [--steps 300] [--capable K] [--json F]

--spawns 0 --wide 0 --steps 0 --capable 4: the 1.5B phase (make model-1.5b) and serial.

Plans are injected (`goal submit --plan`), so the model's planning is not
measured; see goals_inner.py for the phases.
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
    parser.add_argument("--spawns", type=int, default=20, help="one sub-agent at a time, N times")
    parser.add_argument("--wide", type=int, default=100, help="independent model steps at once")
    parser.add_argument("--steps", type=int, default=300, help="command steps, max-agents 100")
    parser.add_argument("--no-serial", action="store_true", help="skip 40 steps on 1 vs 8")
    parser.add_argument(
        "--serial-model", type=int, default=0, help="N model steps on 1 agent vs on 8"
    )
    parser.add_argument(
        "--capable", type=int, default=0, help="K model steps at once vs one by one, 1.5B model"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=("alice",), admins=())
        r = m.run(
            [
                "/usr/bin/python3",
                str(REPO / "bench" / "goals_inner.py"),
                str(args.spawns),
                str(args.wide),
                str(args.steps),
                str(args.capable),
                str(int(not args.no_serial)),
                str(args.serial_model),
            ],
            timeout=7200,
        )
        report = json.loads(r.stdout)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
