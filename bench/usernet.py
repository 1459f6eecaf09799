"""Online agents' own network namespace benchmark (agentd.usernet): boots the
disposable machine, installs agentd with a user alice, runs usernet_inner.py
inside as root, prints its report.

    python3 bench/usernet.py [--rounds 10] [--requests 50] [--json F]

Inside: an online agent in its own namespace (its traffic through slirp4netns)
against one in the host's namespace, interleaved: the start until registered,
TCP connect, a small GET and a 64 MiB download; see usernet_inner.py.
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
    parser.add_argument("--rounds", type=int, default=10, help="starts and downloads per mode")
    parser.add_argument("--requests", type=int, default=50, help="small GETs per round")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=("alice",), admins=())
        r = m.run(
            ["/usr/bin/python3", str(REPO / "bench" / "usernet_inner.py"),
             str(args.rounds), str(args.requests)],
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
