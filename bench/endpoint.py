"""Endpoint benchmark (issue 16): boots the disposable machine, installs agentd
(the default model) with a user alice, runs endpoint_inner.py inside as root,
prints its report.

    python3 bench/endpoint.py [--n 200] [--agents 8] [--seconds 60] [--json F]

Inside, in agents' own units (--exec tasks, as the agents): the endpoint's
overhead over Runtime.Think (the same one-token request, alternated, N of
each), and the share of tokens each of --agents busy agents gets through its
endpoint; see endpoint_inner.py.
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
    parser.add_argument("--n", type=int, default=200, help="requests of each kind (overhead)")
    parser.add_argument("--agents", type=int, default=8, help="busy agents at once (fair share)")
    parser.add_argument("--seconds", type=int, default=60, help="how long they are busy")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=("alice",), admins=())
        r = m.run(
            ["/usr/bin/python3", str(REPO / "bench" / "endpoint_inner.py"),
             str(args.n), str(args.agents), str(args.seconds)],
            timeout=3600,
        )  # fmt: skip
        sys.stderr.write(r.stderr)
        report = json.loads(r.stdout)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
