"""Sandbox: an agent's template and profile as systemd transient-unit properties.

The result is the exact ``a(sv)`` list handed to systemd's StartTransientUnit,
kept as plain data so it can be unit-tested and shown to an operator. The
baseline is as tight as the runtime allows (systemd-analyze security rates it
beside systemd's best-hardened services); a profile only opens the network.

Invariant of the online profile (network = "full"): the agent reaches the
Internet and agentd's bus, and nothing of this host or its LAN.

Its default (namespace = "own") gives the agent a network namespace of its own
(PrivateNetwork=yes) whose only way out is agentd.usernet's user-mode NAT: a
slirp4netns unit bound to the agent's, running in the host's namespace under
the same IPAddressDeny, with the host's loopback turned off. The agent's
loopback and abstract sockets are then its own, so the runtime listens there
(its OpenAI-compatible endpoint, as offline agents do) and its tools are kept
from binding by agentd.nobind alone; the unit's IPAddressDeny still holds the
list below, and IPAddressAllow opens only the namespace's own loopback and
IPv6 link-local (its tap's only peer is slirp4netns).

What follows is namespace = "host", the agent sharing the host's namespace
(what every online agent did before agentd.usernet, and the choice where
slirp4netns or /dev/net/tun is missing). It is denied
this host's loopback, link-local (cloud metadata at 169.254.169.254),
multicast and, unless the profile says otherwise, private ranges
(templates.HOST_LOCAL, templates.PRIVATE), in both directions; it may not
listen on any socket, and the code it controls (its tools) may not bind one;
and it cannot reach the host's abstract Unix sockets where the kernel can say
so. The system bus (a path socket, /run/dbus/system_bus_socket) keeps
working: the runtime registers, heartbeats and reports over it.

What works on the target, systemd 252 (Debian 12, built -BPF_FRAMEWORK) in the
test machine (host kernel 6.18, hybrid cgroups: v1 controllers plus a cgroup2
at /sys/fs/cgroup/unified), measured with transient units:

- IPAddressDeny= (systemd's own cgroup-skb firewall, no libbpf needed): works
  in the hybrid layout. connect() to 127.0.0.1, ::1, ::ffff:127.0.0.1,
  0.0.0.0, ::, 169.254.x and 10.x (the last two on a veth into a test
  namespace) times out; 198.18.x on the same veth connects. Used.
- SocketBindDeny=any and RestrictNetworkInterfaces=~lo: accepted, NOT
  enforced (they need BPF_FRAMEWORK; bind(0.0.0.0:47820) and connect(127.0.0.1)
  succeeded, nothing logged). Not used: a property that silently does nothing
  must not look like protection.
- SystemCallFilter=~listen: listen() fails with EPERM, for a bound socket and
  for an unbound TCP one (which listen() would autobind to an ephemeral port,
  a path no bind hook sees); connect() still works. Used. ~bind is NOT: the
  vendored sd-bus binds every AF_UNIX client socket to an abstract name
  ("@RANDOM/bus/COMM/DESCRIPTION") and fails when it cannot (measured: the
  runtime died at sd_bus_open_system with EPERM), and seccomp cannot tell an
  AF_UNIX bind from an AF_INET one (the address is behind a pointer). So bind()
  is denied one level down, to the code the agent controls: every tool process
  the runtime starts (each --exec command, each shell step) runs under
  agentd.nobind's seccomp filter, where bind() and listen() fail with EPERM
  for every family (measured in the unit: UDP and TCP on 0.0.0.0 and a path
  socket in the home), inherited by all it forks and execs, while connect()
  and sendto() still work (they autobind) and so does busctl (systemd 252's
  sd-bus does not bind).
- io_uring: @system-service allows io_uring_setup/_enter/_register (measured,
  systemd-analyze syscall-filter), and IORING_OP_BIND/_LISTEN (Linux 6.11)
  bind and listen inside the kernel, past any seccomp filter: online units
  deny the three syscalls (EPERM), and so does agentd.nobind.
- A tool runs as the runtime's UID and this kernel has no Yama, so it could
  write the runtime's memory (/proc/PID/mem, process_vm_writev, which
  @system-service allows) and make it bind: the runtime makes itself
  non-dumpable before starting a tool (agentd.nobind.shield_runtime), which
  leaves that to CAP_SYS_PTRACE, held by no process in the unit.
- Abstract Unix sockets belong to the network namespace: RestrictAddressFamilies
  =AF_UNIX leaves them reachable, PrivateNetwork=yes isolates them but removes
  all egress. What isolates them without a namespace is Landlock's
  LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (Landlock ABI 6, Linux 6.12; this kernel
  has ABI 7): connect() to a host abstract socket fails with EPERM, the bus and
  TCP egress still work. systemd 252 cannot apply Landlock, and its
  @system-service filter refuses the landlock_* syscalls (EPERM), so online
  units allow those three syscalls and start the runtime through
  agentd/confine.py, which scopes itself and execs the runtime (same PID, so
  MainPID and Type=exec are unchanged). On an older kernel (Debian 12's stock
  6.1 has ABI 3) it logs a warning and goes on, or, with the profile's
  require_landlock = true, exits EX_CONFIG (RestartPreventExitStatus keeps
  systemd from retrying). Full isolation needs a network namespace with its
  own egress: namespace = "own" (above).

Left open, documented in the profile:

- The runtime itself (agentd's code, not the agent's) can still bind, since
  sd-bus must; it binds only its bus socket. SocketBindDeny= would close even
  that on a systemd built with BPF_FRAMEWORK (Debian 12's is not:
  `systemctl --version` says -BPF_FRAMEWORK).
- A tool's unconnected UDP socket, once it has sent (sendto autobinds an
  ephemeral port), receives from any source IPAddressDeny lets through, as any
  UDP client does; it cannot choose the port, and cannot listen.
- The host's own non-loopback addresses: a service bound to 0.0.0.0 answers
  on the host's public address, and such traffic enters through lo, past
  typical "accept on lo" firewall rules. agentd runs with PrivateNetwork and
  cannot see them, and systemd matches addresses, not interfaces, so an admin
  lists them in ip_deny. Private ranges cover most hosts' addresses.
- IPAddressDeny also drops replies from denied sources, so a resolver on a
  private address needs ip_allow; systemd-resolved's 127.0.0.53 stub is
  replaced by its upstream list (RESOLVED_UPSTREAM bound on /etc/resolv.conf,
  skipped where the file does not exist).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .names import account_name
from .sd import EX_CONFIG
from .templates import HOST_LOCAL, PRIVATE, IPNetwork, Limits, Profile

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


@dataclass(frozen=True)
class TeamMount:
    """A team the agent is in (agentd.teams): its group and shared directory."""

    group: str
    directory: Path


def _teams(teams: Sequence[TeamMount], agents_group: str) -> list[UnitProperty]:
    """A member's teams: their groups, their directories bound read-write (the
    only place members' files meet; /home is a tmpfs otherwise), and UMask
    0007 so what a member writes there its team can read. The umask opens
    nothing else: the agent's home is 0700 and its own files' group is its
    private group agent-NAME, which has no other member."""
    if not teams:
        return []
    binds = [(str(t.directory), str(t.directory), False, MS_REC) for t in teams]
    return [
        ("SupplementaryGroups", ("as", [agents_group, *(t.group for t in teams)])),
        ("BindPaths", ("a(ssbt)", binds)),
        ("UMask", ("u", 0o007)),
    ]


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


def addresses(nets: Iterable[IPNetwork]) -> list[tuple[int, bytes, int]]:
    """IPAddressDeny/IPAddressAllow's a(iayu): (AF_INET or AF_INET6, address, prefix)."""
    return [(2 if n.version == 4 else 10, n.network_address.packed, n.prefixlen) for n in nets]


def online_denied(profile: Profile) -> list[IPNetwork]:
    """What an online agent may not reach: HOST_LOCAL, PRIVATE unless the profile
    turns it off, and the profile's ip_deny (its ip_allow punches holes)."""
    return [*HOST_LOCAL, *(PRIVATE if profile.deny_private else ()), *profile.ip_deny]


RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
USERNET_ENV, USERNET_IF = "AGENTD_USERNET", "tap0"  # agentd.usernet's interface
# IPv6 on that tap needs slirp4netns's router advertisements (fe80::2 to ff02::1)
# and neighbour discovery in its network, fd00::/64 (its gateway is fd00::2).
# The namespace's own kernel sockets are the unit's (made by its first process),
# so IPAddressDeny filters them too: with link-local denied the agent got no
# IPv6 route, with fc00::/7 denied no answer through it (measured). Its only
# peer on that link is slirp4netns, whose gateway is not the host and whose
# own sockets carry the whole deny list (agentd.usernet).
TAP_LINK = tuple(ipaddress.ip_network(n) for n in ("fe80::/10", "ff02::/16", "fd00::/64"))
LANDLOCK_SYSCALLS = ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"]
# IORING_OP_BIND and _LISTEN (Linux 6.11) bind and listen past seccomp; systemd
# 252's @system-service allows io_uring, and nothing in an agent's unit needs it.
IO_URING_SYSCALLS = ["io_uring_setup", "io_uring_enter", "io_uring_register"]


def _network(profile: Profile) -> list[UnitProperty]:
    if profile.network == "none":
        # AF_UNIX: the runtime reaches agentd over the system bus socket. AF_INET(6)
        # and loopback: the agent's OpenAI-compatible endpoint (agentd.endpoint), on
        # the loopback of its own namespace, the only interface there is.
        return [
            ("PrivateNetwork", ("b", True)),
            ("IPAddressDeny", ("a(iayu)", [(2, bytes(4), 0), (10, bytes(16), 0)])),
            ("IPAddressAllow", ("a(iayu)", addresses(LOOPBACK))),
            ("RestrictAddressFamilies", ("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))),
        ]
    if profile.usernet:
        return [
            ("PrivateNetwork", ("b", True)),
            ("RestrictAddressFamilies", ("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))),
            ("IPAddressDeny", ("a(iayu)", addresses(online_denied(profile)))),
            ("IPAddressAllow", ("a(iayu)", addresses([*LOOPBACK, *TAP_LINK, *profile.ip_allow]))),
            ("SystemCallFilter", ("(bas)", (False, IO_URING_SYSCALLS))),
            ("BindReadOnlyPaths", ("a(ssbt)", [(RESOLVED_UPSTREAM, "/etc/resolv.conf", True, 0)])),
            # The runtime waits for agentd.usernet's interface before its first task.
            ("Environment", ("as", [f"{USERNET_ENV}={USERNET_IF}"])),
        ]
    props: list[UnitProperty] = [
        ("RestrictAddressFamilies", ("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))),
        ("IPAddressDeny", ("a(iayu)", addresses(online_denied(profile)))),
        ("SystemCallFilter", ("(bas)", (True, LANDLOCK_SYSCALLS))),
        ("SystemCallFilter", ("(bas)", (False, ["listen"]))),
        ("SystemCallFilter", ("(bas)", (False, IO_URING_SYSCALLS))),
        ("RestartPreventExitStatus", ("(aiai)", ([EX_CONFIG], []))),
        # systemd-resolved's stub (127.0.0.53) is loopback: give the agent the
        # upstream servers instead, where the host has them.
        ("BindReadOnlyPaths", ("a(ssbt)", [(RESOLVED_UPSTREAM, "/etc/resolv.conf", True, 0)])),
    ]
    if profile.ip_allow:
        props.append(("IPAddressAllow", ("a(iayu)", addresses(profile.ip_allow))))
    return props


# -- Landlock, applied in the online unit before the runtime runs ------------
# agentd/confine.py, run as a file by stdlib-only `python3 -I -S`: importing
# this module there instead (templates, config, tomllib...) cost 65 ms of each
# online agent's start, the file 10 ms (bench/runtime_start.py, one run).
CONFINE = str(Path(__file__).with_name("confine.py"))
PYTHON = sys.executable or "/usr/bin/python3"


def _exec_start(command: Path, profile: Profile) -> list[tuple[str, list[str], bool]]:
    cmd = str(command)
    if profile.network == "none" or profile.usernet:
        return [(cmd, [cmd], False)]  # PrivateNetwork already hides abstract sockets
    mode = "required" if profile.require_landlock else "best-effort"
    return [(PYTHON, [PYTHON, "-I", "-S", CONFINE, mode, cmd], False)]


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
    teams: Sequence[TeamMount] = (),
) -> list[UnitProperty]:
    """All properties of agent-NAME.service, in the order systemd applies them
    (a property given twice: the later one wins, or adds for lists)."""
    base: list[UnitProperty] = [
        ("Description", ("s", f"agentd agent {ident.name}")),
        ("Slice", ("s", slice_)),
        ("Type", ("s", "exec")),
        ("User", ("s", account_name(ident.name))),
        ("Group", ("s", account_name(ident.name))),
        # The D-Bus policy confines by the groups the process carries, so say it here
        # too rather than rely on /etc/group alone.
        ("SupplementaryGroups", ("as", [agents_group])),
        ("WorkingDirectory", ("s", str(ident.home))),
        ("ExecStart", ("a(sasb)", _exec_start(runtime_command, profile))),
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
    hardening = _hardening(ident.home) + _teams(teams, agents_group)
    return base + _limits(limits) + hardening + _network(profile)
