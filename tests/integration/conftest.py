"""Integration fixtures: agentd installed with `make install` in the disposable
systemd machine and started as agentd.service (see agentd_helpers)."""

from __future__ import annotations

from typing import Any

import pytest
from agentd_helpers import Agentd
from testbed.provision import install_agentd


@pytest.fixture(scope="session")
def agentd(machine: Any) -> Agentd:
    install_agentd(machine)
    return Agentd(machine)
