"""Install agentd into a booted Machine the way an operator would: make install,
then systemctl start. Shared by the integration tests, the demo and bench/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def install_agentd(
    machine: Any,
    users: tuple[str, ...] = ("alice", "bob", "carol"),
    admins: tuple[str, ...] = ("carol",),
) -> None:
    machine.run(["make", "-C", str(REPO), "--no-print-directory", "install"], timeout=300)
    machine.run(["systemctl", "start", "agentd.service"], timeout=60)
    for user in users:
        machine.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
    for user in admins:
        machine.run(["usermod", "-aG", "agentd-admin", user])
