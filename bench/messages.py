"""Messages benchmark (issue 15): boots the disposable machine, installs agentd
with a user alice, runs messages_inner.py inside as root, prints its report.

    python3 bench/messages.py [--ping 500] [--pair 300] [--pairs 8] [--per-sender 300] [--json F]

Inside: `messages_per_second = 0` (no rate limit per sender) in agentd.toml,
agentd restarted, 2 x --pairs agents of alice (sandbox, not started: the
benchmark's clients act as them, under their Unix users). Phases: Peer.Ping
round trips (the baseline), one pair's Send -> Receive -> Ack round trips,
--pairs pairs at once, the same clients only pinging, and agentd's Mailbox
in-process; see messages_inner.py.
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
    parser.add_argument("--ping", type=int, default=500, help="Peer.Ping round trips in a row")
    parser.add_argument("--pair", type=int, default=300, help="one pair's messages in a row")
    parser.add_argument("--pairs", type=int, default=8, help="sender-receiver pairs at once")
    parser.add_argument("--per-sender", type=int, default=300, help="messages each sender sends")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with Machine.boot(binds=[REPO]) as m:
        install_agentd(m, users=("alice",), admins=())
        r = m.run(
            [
                "/usr/bin/python3",
                str(REPO / "bench" / "messages_inner.py"),
                str(args.ping),
                str(args.pair),
                str(args.pairs),
                str(args.per_sender),
            ],
            timeout=3600,
        )
        sys.stderr.write(r.stderr)
        report = json.loads(r.stdout)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
