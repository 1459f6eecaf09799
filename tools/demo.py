"""The demo: agentd's main job in a disposable systemd machine.

Boots the machine (tests/testbed), installs agentd with `make install`, starts
agentd.service, then, as two ordinary users and an admin, creates and starts
agents and shows what agentctl and the system itself report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.machine import Machine  # noqa: E402
from testbed.provision import install_agentd  # noqa: E402


def step(m: Machine, title: str, cmd: str, user: str | None = None) -> None:
    who = user or "root"
    print(f"\n\033[1m## {title}\033[0m\n$ ({who}) {cmd}", flush=True)
    r = m.run(cmd, user=user, check=False)
    sys.stdout.write(r.stdout)
    if r.stderr:
        sys.stdout.write(r.stderr)
    sys.stdout.flush()


def demo(m: Machine) -> None:
    install_agentd(m)
    step(m, "agentd is a notify service on the system bus", "agentctl status")
    step(m, "templates shipped with agentd", "agentctl template list")
    step(
        m,
        "alice creates a writing agent and starts it",
        "agentctl agent create scribe --template writing --start",
        user="alice",
    )
    step(
        m,
        "bob creates a research agent with a bigger memory limit",
        "agentctl agent create finder --template research --memory-max 1G --start",
        user="bob",
    )
    step(
        m,
        "carol (agentd-admin) adds an ops agent over plain busctl",
        "busctl call org.agentos.agentd1 /org/agentos/agentd1 org.agentos.agentd1.Manager "
        "CreateAgent 'ssa{sv}' watcher ops 0 && agentctl agent start watcher",
        user="carol",
    )
    time.sleep(1.5)  # let the runtimes register
    step(m, "each user sees their own agents", "agentctl agent list", user="alice")
    step(m, "the admin sees them all", "agentctl agent list", user="carol")
    step(
        m,
        "what the system sees: real users, private homes, hardened units",
        "getent passwd agent-scribe agent-finder agent-watcher; ls -ld /home/agents/*; "
        "systemctl list-units --no-pager 'agent-*'",
    )
    step(
        m,
        "the runtime runs as the agent under seccomp, no privileges",
        "pid=$(systemctl show -p MainPID --value agent-scribe.service); "
        "grep -E '^(Uid|Seccomp|NoNewPrivs|CapEff)' /proc/$pid/status",
    )
    step(m, "one agent in detail", "agentctl agent show scribe", user="alice")
    step(
        m,
        "bob may not touch alice's agent (refused and audited)",
        "agentctl agent stop scribe; echo exit=$?",
        user="bob",
    )
    step(m, "its journal", "agentctl agent logs scribe -n 5")
    step(
        m,
        "alice adds a sandbox agent (offline, shell tool) but does not start it",
        "agentctl agent create runner --template sandbox",
        user="alice",
    )
    step(
        m,
        "she queues a task: agentd starts the capable agent's unit, which runs the "
        "command in its sandbox as the agent and keeps what it writes under artifacts/",
        "id=$(agentctl task submit 'count words' --exec 'mkdir -p artifacts; "
        "wc -w /etc/os-release | tee artifacts/count.txt; id -un'); "
        "agentctl task wait $id; agentctl task show $id",
        user="alice",
    )
    step(
        m,
        "the shared model: one llama.cpp process for every agent, unprivileged, no network",
        "agentctl model show; systemctl show -p User,DynamicUser,"
        "PrivateNetwork,MemoryMax agentd-inference.service",
    )
    step(
        m,
        "alice chats with her agent, which answers as its template's persona",
        "agentctl chat runner -m 'In one sentence: what is a Unix user?' --max-tokens 48",
        user="alice",
    )
    step(
        m,
        "a task without a command: the agent thinks it through with the model "
        "(schema-constrained steps) and answers",
        "id=$(agentctl task submit 'Suggest a name for a backup script'); "
        "agentctl task wait $id; agentctl task show $id",
        user="alice",
    )
    step(
        m,
        "the admin caps runner at 200 tokens a day; the next chat is refused with the reset time",
        "agentctl quota set runner 200 --period daily && "
        "agentctl chat runner -m 'hello again' --max-tokens 200 >/dev/null; "
        "agentctl chat runner -m 'and again'; echo exit=$?",
        user="carol",
    )
    step(m, "tokens used, against quotas, by agent and by day", "agentctl usage", user="alice")
    step(
        m,
        "the task's events, live from the audit trail",
        "agentctl events --type 'task.*' --limit 10",
        user="alice",
    )
    step(
        m,
        "systemd-analyze rates the offline agent's sandbox",
        "systemd-analyze security agent-scribe.service --no-pager | tail -1; "
        "systemd-analyze security systemd-timesyncd.service --no-pager | tail -1",
    )
    step(m, "the hash-chained audit trail", "agentctl audit --limit 12; agentctl audit verify")
    step(
        m,
        "remove an agent, keeping its home as an archive",
        "agentctl agent rm scribe --keep-home && ls -l /var/lib/agentd/archive && "
        "(getent passwd agent-scribe || echo 'agent-scribe: no such user any more')",
    )


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    with Machine.boot(binds=[REPO]) as m:
        demo(m)
    print("\nThe machine is powered off; nothing was left on the host.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
