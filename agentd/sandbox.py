"""Sandbox: an agent's template and profile as systemd transient-unit properties.

The result is the exact ``a(sv)`` list handed to systemd's StartTransientUnit,
kept as plain data so it can be unit-tested and shown to an operator. The
baseline is as tight as the runtime allows (systemd-analyze security rates it
beside systemd's best-hardened services); a profile only opens the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .templates import Limits, Profile

MS_REC = 16384
EPERM = 1

# (signature, value) pairs, keyed by systemd property name.
UnitProperty = tuple[str, tuple[str, object]]


@dataclass(frozen=True)
class AgentIdentity:
    name: str
    uid: int
    gid: int
    home: Path


def _hardening(home: Path) -> list[UnitProperty]:
    return [
        ("NoNewPrivileges", ("b", True)),
        ("ProtectSystem", ("s", "strict")),
        ("ProtectHome", ("s", "tmpfs")),
        ("BindPaths", ("a(ssbt)", [(str(home), str(home), False, MS_REC)])),
        ("PrivateTmp", ("b", True)),
        ("PrivateDevices", ("b", True)),
        ("PrivateIPC", ("b", True)),
        ("PrivateUsers", ("b", True)),
        ("DevicePolicy", ("s", "closed")),
        ("ProtectKernelTunables", ("b", True)),
        ("ProtectKernelModules", ("b", True)),
        ("ProtectKernelLogs", ("b", True)),
        ("ProtectControlGroups", ("b", True)),
        ("ProtectClock", ("b", True)),
        ("ProtectHostname", ("b", True)),
        ("ProtectProc", ("s", "invisible")),
        ("ProcSubset", ("s", "pid")),
        ("RestrictNamespaces", ("t", 0)),
        ("RestrictSUIDSGID", ("b", True)),
        ("RestrictRealtime", ("b", True)),
        ("LockPersonality", ("b", True)),
        ("MemoryDenyWriteExecute", ("b", True)),
        ("RemoveIPC", ("b", True)),
        ("KeyringMode", ("s", "private")),
        ("UMask", ("u", 0o077)),
        ("CapabilityBoundingSet", ("t", 0)),
        ("AmbientCapabilities", ("t", 0)),
        ("SystemCallArchitectures", ("as", ["native"])),
        ("SystemCallFilter", ("(bas)", (True, ["@system-service"]))),
        ("SystemCallFilter", ("(bas)", (False, ["@privileged", "@resources"]))),
        ("SystemCallErrorNumber", ("i", EPERM)),
    ]


def _network(profile: Profile) -> list[UnitProperty]:
    if profile.network == "none":
        # AF_UNIX stays: the runtime reaches agentd over the system bus socket.
        return [
            ("PrivateNetwork", ("b", True)),
            ("IPAddressDeny", ("a(iayu)", [(2, bytes(4), 0), (10, bytes(16), 0)])),
            ("RestrictAddressFamilies", ("(bas)", (True, ["AF_UNIX"]))),
        ]
    return [
        ("RestrictAddressFamilies", ("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))),
    ]


def _limits(limits: Limits) -> list[UnitProperty]:
    return [
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        ("MemoryMax", ("t", limits.memory_max)),
        ("MemorySwapMax", ("t", 0)),
        ("CPUQuotaPerSecUSec", ("t", limits.cpu_quota * 10_000)),
        ("TasksMax", ("t", limits.tasks_max)),
    ]


def unit_properties(
    ident: AgentIdentity,
    limits: Limits,
    profile: Profile,
    *,
    runtime_command: Path,
    slice_: str,
    heartbeat_interval: int,
    agents_group: str = "agentd-agents",
) -> list[UnitProperty]:
    """All properties of agent-NAME.service, in the order systemd applies them."""
    cmd = str(runtime_command)
    base: list[UnitProperty] = [
        ("Description", ("s", f"agentd agent {ident.name}")),
        ("Slice", ("s", slice_)),
        ("Type", ("s", "exec")),
        ("User", ("s", ident.name)),
        ("Group", ("s", ident.name)),
        # The D-Bus policy confines by the groups the process carries, so say it here
        # too rather than rely on /etc/group alone.
        ("SupplementaryGroups", ("as", [agents_group])),
        ("WorkingDirectory", ("s", str(ident.home))),
        ("ExecStart", ("a(sasb)", [(cmd, [cmd], False)])),
        (
            "Environment",
            (
                "as",
                [
                    f"AGENTD_AGENT={ident.name}",
                    f"AGENTD_HEARTBEAT_INTERVAL={heartbeat_interval}",
                ],
            ),
        ),
        ("SyslogIdentifier", ("s", f"agent-{ident.name}")),
        (
            "LogExtraFields",
            ("aay", [f"AGENT_NAME={ident.name}".encode(), f"AGENT_UID={ident.uid}".encode()]),
        ),
        ("CollectMode", ("s", "inactive-or-failed")),
        ("Restart", ("s", "on-failure")),
        ("RestartUSec", ("t", 2_000_000)),
        ("OOMPolicy", ("s", "continue")),
        # The runtime exits at once on SIGTERM; a stuck one is killed soon, so a
        # stop (and a removal, which waits for it) never takes long.
        ("TimeoutStopUSec", ("t", 10_000_000)),
    ]
    return base + _limits(limits) + _hardening(ident.home) + _network(profile)
