"""User-mode networking: an online agent's own network namespace gets its egress.

An online agent (network = "full") with namespace = "own" runs with
PrivateNetwork=yes: its loopback, its abstract sockets and any listener are its
own, which is what lets its runtime serve the OpenAI-compatible endpoint there.
agentd cannot give that namespace a veth (it runs with PrivateNetwork=yes and no
CAP_NET_ADMIN in the host's namespace, and a bridge plus NAT rules would be a
firewall change on the host), so the way out is slirp4netns, the user-mode
network stack rootless containers use: it opens a tap device inside the
agent's namespace and carries the agent's connections out as its own sockets in
the host's namespace.

agentd starts it when the runtime registers, as the transient unit
agentd-net-NAME-PID.service (PID: the agent unit's main process, whose
namespace it joins), and keeps this invariant:

- Nothing of the host is reached through it: --disable-host-loopback (the
  gateway, 10.0.2.2, does not lead to 127.0.0.1), --disable-dns (no resolver
  of its own: the agent uses its resolv.conf's servers), and the unit carries
  the profile's IPAddressDeny/IPAddressAllow on its own sockets, so what the
  agent unit's filter lets out is checked again where it leaves.
- Nothing reaches the agent from outside: no port is forwarded (no
  --api-socket), so a listener in the agent's namespace answers only there.
- It lives and dies with the agent's runtime: BindsTo= the agent's unit stops
  it with the unit; a runtime started again (Restart=on-failure: a new
  namespace) registers again, gets a new one, and the old one is stopped. A
  re-registration of the same runtime (after agentd restarts) keeps it.
- Its capabilities are the ones it needs to set up (joining the namespace:
  CAP_SYS_ADMIN and CAP_SYS_PTRACE, the agent's runtime being another UID and
  non-dumpable; the tap: CAP_NET_ADMIN; /dev/net/tun alone among devices).
  Once set up, --enable-sandbox gives them all up but CAP_NET_BIND_SERVICE and
  pivots into a root of its own holding only /etc and /run, which the unit
  has made empty (but the loader's cache): no file of the host's, no bus, no
  systemd socket. --enable-seccomp limits its system calls.
- Left open, and why: it runs as UID 0. slirp4netns 1.2.0 run as another
  user joins the target's user namespace first, which fails for a namespace
  of the init user namespace (measured: "setns(CLONE_NEWUSER): Operation not
  permitted" under DynamicUser=yes with the capabilities above); and a
  Landlock scope on its abstract sockets (agentd.confine) also stops it
  opening /proc/PID/ns/net (Landlock's ptrace rule; measured). So were the
  agent's traffic ever to take over libslirp, the process would hold no
  capability and no file, but could still connect to the host's abstract
  Unix sockets as UID 0, where an IPAddressDeny does not reach.
"""

from __future__ import annotations

import asyncio
import logging

from .agent import UnitsAPI
from .audit import AuditLog
from .errors import AgentdError
from .sandbox import (
    USERNET_IF,
    UnitProperty,
    addresses,
    online_denied,
)
from .templates import Profile

log = logging.getLogger("agentd.usernet")

SLIRP4NETNS = "/usr/bin/slirp4netns"
PREFIX = "agentd-net-"
# 65520, slirp4netns's largest: measured by its authors as several times the
# throughput of the 1500 default; the agent's side is a tap, nothing fragments.
MTU = 65520
# CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN:
# the set-up's (see above); --enable-sandbox needs CAP_SETPCAP to empty its
# bounding set and keeps CAP_NET_BIND_SERVICE alone (it forwards no port, so
# binds none).
CAPABILITIES = (8, 10, 12, 19, 21)
MS_PRIVATE = 1 << 18
# RestrictNamespaces= is the set of namespace types allowed: a mount namespace
# (--enable-sandbox) and joining the agent's network namespace.
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
FAMILIES = ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]  # netlink: --configure


def net_unit(agent: str, pid: int) -> str:
    return f"{PREFIX}{agent}-{pid}.service"


def net_target(unit: str) -> tuple[str, int] | None:
    """(agent, pid) of a unit net_unit() named, else None."""
    if not unit.startswith(PREFIX) or not unit.endswith(".service"):
        return None
    agent, _, pid = unit[len(PREFIX) : -len(".service")].rpartition("-")
    return (agent, int(pid)) if agent and pid.isdigit() else None


def slirp_argv(pid: int) -> list[str]:
    return [
        SLIRP4NETNS,
        "--configure",
        f"--mtu={MTU}",
        "--disable-host-loopback",
        "--disable-dns",
        "--enable-ipv6",
        "--enable-sandbox",
        "--enable-seccomp",
        str(pid),
        USERNET_IF,
    ]


def net_properties(
    agent: str, agent_unit: str, pid: int, profile: Profile, slice_: str
) -> list[UnitProperty]:
    """All properties of agentd-net-AGENT-PID.service (see the module's invariant)."""
    argv = slirp_argv(pid)
    return [
        ("Description", ("s", f"agentd user-mode network of agent {agent}")),
        ("Slice", ("s", slice_)),
        ("Type", ("s", "exec")),
        ("ExecStart", ("a(sasb)", [(argv[0], argv, False)])),
        ("BindsTo", ("as", [agent_unit])),
        ("After", ("as", [agent_unit])),
        ("CollectMode", ("s", "inactive-or-failed")),
        ("SyslogIdentifier", ("s", f"agent-{agent}-net")),
        ("LogExtraFields", ("aay", [f"AGENT_NAME={agent}".encode()])),
        ("IPAddressDeny", ("a(iayu)", addresses(online_denied(profile)))),
        ("IPAddressAllow", ("a(iayu)", addresses(profile.ip_allow))),
        ("CapabilityBoundingSet", ("t", sum(1 << cap for cap in CAPABILITIES))),
        # what --enable-sandbox carries into its own root: nothing of the host's
        ("TemporaryFileSystem", ("a(ss)", [("/etc", "ro"), ("/run", "ro")])),
        ("BindReadOnlyPaths", ("a(ssbt)", [("/etc/ld.so.cache", "/etc/ld.so.cache", True, 0)])),
        # --enable-sandbox's pivot_root refuses shared mounts (systemd's default)
        ("MountFlags", ("t", MS_PRIVATE)),
        ("RestrictNamespaces", ("t", CLONE_NEWNS | CLONE_NEWNET)),
        ("RestrictAddressFamilies", ("(bas)", (True, FAMILIES))),
        ("DevicePolicy", ("s", "closed")),
        ("DeviceAllow", ("a(ss)", [("/dev/net/tun", "rw")])),
        ("NoNewPrivileges", ("b", True)),
        ("ProtectSystem", ("s", "strict")),
        ("ProtectHome", ("s", "yes")),
        ("PrivateTmp", ("b", True)),
        ("ProtectKernelModules", ("b", True)),
        ("ProtectKernelLogs", ("b", True)),
        ("ProtectControlGroups", ("b", True)),
        ("ProtectClock", ("b", True)),
        ("LockPersonality", ("b", True)),
        ("RestrictRealtime", ("b", True)),
        ("MemoryDenyWriteExecute", ("b", True)),
        ("MemoryAccounting", ("b", True)),
        ("MemoryMax", ("t", 64 << 20)),
        ("TasksAccounting", ("b", True)),
        ("TasksMax", ("t", 8)),  # slirp4netns and the child that opens the tap
    ]


class UserNet:
    """Keeps each registered online agent's slirp4netns unit, one per runtime."""

    def __init__(self, units: UnitsAPI, audit: AuditLog, slice_: str) -> None:
        self.units = units
        self.audit = audit
        self.slice = slice_
        self._locks: dict[str, asyncio.Lock] = {}

    async def attach(self, agent: str, agent_unit: str, profile: Profile) -> str | None:
        """Give AGENT's running runtime its network (idempotent); the unit's
        name, or None when the agent needs none or has no runtime now. A
        failure is logged and audited: the agent still works, offline."""
        if not profile.usernet:
            return None
        async with self._locks.setdefault(agent, asyncio.Lock()):
            pid = (await self.units.status(agent_unit)).main_pid
            if not pid:
                return None
            want = net_unit(agent, pid)
            try:
                return await self._keep_only(agent, agent_unit, want, pid, profile)
            except AgentdError as e:
                log.warning("agent %s: no network: %s", agent, e)
                self.audit.append(
                    "agent.network", actor_uid=0, agent=agent, result="error", reason=str(e)
                )
                return None

    async def _keep_only(
        self, agent: str, agent_unit: str, want: str, pid: int, profile: Profile
    ) -> str:
        up = False
        for unit, state in await self.units.list_units(f"{PREFIX}{agent}-*.service"):
            target = net_target(unit)
            if target is None or target[0] != agent:  # another agent's, NAME-x
                continue
            if unit == want and state in ("active", "activating"):
                up = True
            elif unit != want:  # a namespace that died with an earlier runtime
                await self.units.stop(unit, wait=False)
        if up:
            return want
        props = net_properties(agent, agent_unit, pid, profile, self.slice)
        result = await self.units.wait_job(await self.units.start_transient(want, props))
        if result != "done":
            raise AgentdError(f"{want} did not start: job {result}")
        log.info("agent %s: network through %s", agent, want)
        return want
