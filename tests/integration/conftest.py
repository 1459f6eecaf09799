"""Integration fixtures: agentd installed with `make install` in the disposable
systemd machine and started as agentd.service (see agentd_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd
from testbed.provision import install_agentd


@pytest.fixture(scope="session")
def agentd(machine: Any) -> Agentd:
    install_agentd(machine)
    return Agentd(machine)


@pytest.fixture(scope="module", autouse=True)
def agents_of_the_module_go_with_it(agentd: Agentd) -> Iterator[None]:
    """Every agent a test module made is removed after it: the modules share one
    machine, and an owner may hold only max_agents_per_owner (16) agents, so a
    module's leftovers must not crowd out the next module's."""
    before = _agent_names(agentd)
    yield
    for name in sorted(_agent_names(agentd) - before):
        agentd.ctl("agent", "rm", "--force", name, check=False)


def _agent_names(agentd: Agentd) -> set[str]:
    try:
        return {a["name"] for a in agentd.ctl_json("agent", "list")}
    except Exception:  # agentd down (a test stopped it): nothing to compare
        return set()
