"""agentd.usernet: one slirp4netns unit per online runtime, kept, replaced and
confined as its invariant says (the real one runs in
tests/integration/test_harden_network.py)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from agentd.errors import SystemError_
from agentd.templates import Profile
from agentd.units import UnitStatus
from agentd.usernet import UserNet, net_properties, net_target, net_unit

ONLINE = Profile("online", network="full")
LAN = Profile(
    "lan",
    network="full",
    deny_private=False,
    ip_allow=(ipaddress.ip_network("198.51.100.0/24"),),
)


class FakeUnits:
    """systemd as agentd.usernet sees it: units by name, MainPID of the agent's."""

    def __init__(self, main_pid: int = 4242, fail: bool = False) -> None:
        self.main_pid = main_pid
        self.fail = fail
        self.units: dict[str, str] = {}
        self.started: list[tuple[str, list[Any]]] = []
        self.stopped: list[str] = []

    async def start_transient(self, unit: str, properties: list[Any]) -> str:
        if self.fail:
            raise SystemError_(f"systemd refused to start {unit}: no")
        self.started.append((unit, properties))
        self.units[unit] = "active"
        return f"/job/{len(self.started)}"

    async def stop(self, unit: str, wait: bool = True) -> str:
        self.stopped.append(unit)
        self.units.pop(unit, None)
        return "/job/stop"

    async def wait_job(self, job: str) -> str:
        return "done"

    async def status(self, unit: str) -> UnitStatus:
        return UnitStatus(active_state="active", main_pid=self.main_pid)

    async def list_units(self, pattern: str) -> list[tuple[str, str]]:
        prefix = pattern.removesuffix("*.service")
        return [(u, s) for u, s in self.units.items() if u.startswith(prefix)]


class FakeAudit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def append(self, event: str, **fields: Any) -> None:
        self.rows.append((event, fields))


def attach(net: UserNet, agent: str = "web", profile: Profile = ONLINE) -> str | None:
    return asyncio.run(net.attach(agent, f"agent-{agent}.service", profile))


def props(unit: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, value in unit:
        out.setdefault(name, []).append(value[1])
    return out


def test_names_round_trip_and_tell_agents_apart() -> None:
    assert net_unit("web", 4242) == "agentd-net-web-4242.service"
    assert net_target("agentd-net-web-4242.service") == ("web", 4242)
    assert net_target("agentd-net-web-x-7.service") == ("web-x", 7)
    for other in ("agent-web.service", "agentd-net-web.service", "agentd-net--7.service"):
        assert net_target(other) is None


def test_a_registering_runtime_gets_one_unit_joined_to_its_namespace() -> None:
    units, audit = FakeUnits(), FakeAudit()
    net = UserNet(units, audit, "agents.slice")  # type: ignore[arg-type]
    assert attach(net) == "agentd-net-web-4242.service"
    ((_name, unit),) = units.started
    p = props(unit)
    argv = p["ExecStart"][0][0][1]
    assert argv[0] == "/usr/bin/slirp4netns" and argv[-2:] == ["4242", "tap0"]
    for flag in (
        "--disable-host-loopback",
        "--disable-dns",
        "--enable-sandbox",
        "--enable-seccomp",
    ):
        assert flag in argv
    assert not [a for a in argv if a.startswith("--api-socket")]  # no port forwarded in
    assert p["BindsTo"] == [["agent-web.service"]] and p["Slice"] == ["agents.slice"]
    assert p["DeviceAllow"] == [[("/dev/net/tun", "rw")]] and p["DevicePolicy"] == ["closed"]
    assert audit.rows == []


def test_again_for_the_same_runtime_keeps_it_and_a_new_runtime_replaces_it() -> None:
    units = FakeUnits()
    units.units["agentd-net-web-x-9.service"] = "active"  # agent web-x's: not ours
    net = UserNet(units, FakeAudit(), "agents.slice")  # type: ignore[arg-type]
    attach(net)
    attach(net)  # agentd restarted: the same runtime registers again
    assert len(units.started) == 1 and units.stopped == []
    units.main_pid = 5151  # Restart=on-failure: a new runtime, a new namespace
    assert attach(net) == "agentd-net-web-5151.service"
    assert units.stopped == ["agentd-net-web-4242.service"]
    assert "agentd-net-web-x-9.service" in units.units


def test_the_unit_carries_the_profiles_deny_and_allow_lists() -> None:
    def cidrs(entries: list[Any]) -> set[str]:
        return {str(ipaddress.ip_network((bytes(a), n))) for _f, a, n in entries[0]}

    p = props(net_properties("web", "agent-web.service", 7, LAN, "agents.slice"))
    deny = cidrs(p["IPAddressDeny"])
    assert {"127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"} <= deny
    assert "10.0.0.0/8" not in deny  # deny_private = false
    assert cidrs(p["IPAddressAllow"]) == {"198.51.100.0/24"}
    assert "10.0.0.0/8" in cidrs(props(net_properties("w", "a", 7, ONLINE, "s"))["IPAddressDeny"])
    caps = p["CapabilityBoundingSet"][0]
    assert caps == (1 << 8) | (1 << 10) | (1 << 12) | (1 << 19) | (1 << 21)
    assert p["NoNewPrivileges"] == [True] and p["ProtectSystem"] == ["strict"]
    # what its sandbox takes along: no host file, no bus, no systemd socket
    assert p["TemporaryFileSystem"] == [[("/etc", "ro"), ("/run", "ro")]]


@pytest.mark.parametrize(
    "profile",
    [Profile("offline"), Profile("hostns", network="full", namespace="host")],
)
def test_agents_that_need_none_get_none(profile: Profile) -> None:
    units = FakeUnits()
    assert attach(UserNet(units, FakeAudit(), "s"), profile=profile) is None  # type: ignore[arg-type]
    assert units.started == []


def test_no_runtime_no_unit_and_a_refusal_is_audited_not_raised() -> None:
    units = FakeUnits(main_pid=0)
    assert attach(UserNet(units, FakeAudit(), "s")) is None  # type: ignore[arg-type]
    assert units.started == []
    units, audit = FakeUnits(fail=True), FakeAudit()
    assert attach(UserNet(units, audit, "s")) is None  # type: ignore[arg-type]
    ((event, fields),) = audit.rows
    assert event == "agent.network" and fields["result"] == "error"
    assert "refused" in fields["reason"] and fields["agent"] == "web"
