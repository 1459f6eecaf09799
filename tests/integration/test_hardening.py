"""systemd-analyze security: agents rate at or below systemd-timesyncd, agentd
at or below systemd-journald, on the same machine."""

from __future__ import annotations

import re

import pytest
from agentd_helpers import Agentd

pytestmark = pytest.mark.integration


def exposure(agentd: Agentd, unit: str) -> float:
    out = agentd.sh(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out[-2000:]
    return float(m.group(1))


def test_offline_agent_is_as_hardened_as_timesyncd(agentd: Agentd) -> None:
    agentd.create("hard-off", template="writing", start=True)
    agent = exposure(agentd, "agent-hard-off.service")
    timesyncd = exposure(agentd, "systemd-timesyncd.service")
    print(f"agent-hard-off.service {agent} vs systemd-timesyncd.service {timesyncd}")
    assert agent <= timesyncd


def test_agentd_is_as_hardened_as_journald(agentd: Agentd) -> None:
    mine = exposure(agentd, "agentd.service")
    journald = exposure(agentd, "systemd-journald.service")
    print(f"agentd.service {mine} vs systemd-journald.service {journald}")
    assert mine <= journald
