"""Agent templates and sandbox profiles, read from TOML.

Vendor files live in /usr/share/agentd/{templates,profiles}; a file of the same
name in /etc/agentd/{templates,profiles} replaces the vendor one whole, as
systemd's /etc overrides /usr/lib. Everything is validated when read, so a bad
file is reported by name instead of failing later inside a unit.
"""

from __future__ import annotations

import ipaddress
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

from . import sizes
from .approvalrules import ApprovalRules, parse_table
from .config import QUOTA_PERIODS
from .errors import InvalidArgument, InvalidConfig, NoSuchTemplate

T = TypeVar("T")
_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

NETWORK_MODES = ("none", "full")

# Bounds a template or a create-time override must respect.
MEMORY_MAX_BOUNDS = (16 << 20, 64 << 30)
CPU_QUOTA_BOUNDS = (1, 800)  # percent of one CPU
TASKS_MAX_BOUNDS = (8, 16384)


@dataclass(frozen=True)
class Limits:
    memory_max: int = 512 << 20  # bytes
    cpu_quota: int = 100  # percent of one CPU
    tasks_max: int = 128

    def validated(self) -> Limits:
        _bound("memory_max", self.memory_max, MEMORY_MAX_BOUNDS)
        _bound("cpu_quota", self.cpu_quota, CPU_QUOTA_BOUNDS)
        _bound("tasks_max", self.tasks_max, TASKS_MAX_BOUNDS)
        return self

    def with_overrides(self, overrides: dict[str, object]) -> Limits:
        """Apply create-time overrides (keys: memory_max, cpu_quota, tasks_max)."""
        unknown = set(overrides) - {"memory_max", "cpu_quota", "tasks_max"}
        if unknown:
            raise InvalidArgument(f"unknown limit(s): {', '.join(sorted(unknown))}")
        values = {}
        for key, value in overrides.items():
            if key == "memory_max" and isinstance(value, str):
                value = parse_size(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"limit {key} must be an integer, got {value!r}")
            values[key] = value
        return replace(self, **values).validated()


def _bound(key: str, value: int, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InvalidArgument(f"{key}={value} is out of range ({lo}..{hi})")


def parse_size(text: str) -> int:
    """'512M' -> bytes (agentd.sizes: the grammar agentctl reads too)."""
    try:
        return sizes.parse_size(text)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# What an online agent may never reach, whatever its profile says: this host
# itself (loopback; 0.0.0.0 and :: reach it too), link-local (cloud metadata
# services live at 169.254.169.254), multicast and broadcast (the LAN's
# discovery services).
HOST_LOCAL = _nets(
    "127.0.0.0/8",  # loopback
    "::1/128",
    "0.0.0.0/8",  # connect() to 0.0.0.0 or :: reaches loopback
    "::/128",
    "169.254.0.0/16",  # link-local
    "fe80::/10",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "255.255.255.255/32",  # limited broadcast
)
# What `deny_private = true` (the default) adds: RFC 1918, shared address space
# (RFC 6598: carrier NAT, Tailscale, Alibaba's 100.100.100.200 metadata) and
# IPv6 unique local addresses (AWS's fd00:ec2::254 metadata).
PRIVATE = _nets("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass(frozen=True)
class Profile:
    """A sandbox profile: what an agent's unit may reach beyond the baseline.

    For network = "full" only: deny_private, ip_deny and ip_allow shape what the
    agent may reach (HOST_LOCAL is always denied, ip_allow may not reopen it);
    namespace = "own" gives the agent a network namespace of its own, its egress
    through user-mode NAT (agentd.usernet), so it can serve itself on its own
    loopback; "host" shares the host's, where require_landlock refuses to start
    the agent if the kernel cannot keep it from the host's abstract Unix sockets
    (agentd.sandbox says why).
    """

    name: str
    description: str = ""
    network: str = "none"
    deny_private: bool = True
    ip_deny: tuple[IPNetwork, ...] = ()
    ip_allow: tuple[IPNetwork, ...] = ()
    require_landlock: bool = False
    namespace: str = "own"
    source: str = ""

    @property
    def usernet(self) -> bool:
        """Online in a namespace of its own: egress through agentd.usernet."""
        return self.network == "full" and self.namespace == "own"


@dataclass(frozen=True)
class Template:
    name: str
    description: str = ""
    capabilities: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    system_prompt: str = ""
    profile: str = "offline"
    token_budget: int = 0  # tokens per token_period (0: the configured default)
    token_period: str = "monthly"
    concurrency: int = 1  # tasks the agent works on at once (its WIP limit)
    limits: Limits = field(default_factory=Limits)
    source: str = ""
    approval: ApprovalRules = field(default_factory=ApprovalRules)  # agentd.approvalrules
    steps: int = 10  # model steps per task (issue 12)
    task_tokens: int = 20000  # the token budget of one task
    # a program the runtime keeps running as the agent (agentd.program), e.g. a
    # script in its home built on an agent framework: argv, argv[0] absolute or
    # relative to the home
    program: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "capabilities": list(self.capabilities),
            "tools": list(self.tools),
            "system_prompt": self.system_prompt,
            "profile": self.profile,
            "token_budget": self.token_budget,
            "token_period": self.token_period,
            "concurrency": self.concurrency,
            "memory_max": self.limits.memory_max,
            "cpu_quota": self.limits.cpu_quota,
            "tasks_max": self.limits.tasks_max,
            "source": self.source,
            "approval_tools": list(self.approval.tools),
            "approval_shell_allow": list(self.approval.shell_allow),
            "approval_timeout": self.approval.timeout,
            "steps": self.steps,
            "task_tokens": self.task_tokens,
            "program": list(self.program),
        }


def _str_list(path: Path, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _ID_RE.match(v) for v in value
    ):
        raise InvalidConfig(f"{path}: {key} must be a list of lowercase identifiers")
    return tuple(value)


def _typed(path: Path, data: dict[str, object], key: str, kind: type[T], default: T) -> T:
    value = data.pop(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidConfig(f"{path}: {key} must be of type {kind.__name__}")
    return value


def _parse_limits(path: Path, raw: object) -> Limits:
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{path}: [limits] must be a table")
    raw = dict(raw)
    try:
        mem = raw.pop("memory_max", "512M")
        limits = Limits(
            memory_max=parse_size(mem) if isinstance(mem, str) else mem,
            cpu_quota=raw.pop("cpu_quota", 100),
            tasks_max=raw.pop("tasks_max", 128),
        )
        if raw:
            raise InvalidConfig(f"{path}: unknown limit(s) {', '.join(sorted(raw))}")
        return limits.validated()
    except InvalidArgument as e:
        raise InvalidConfig(f"{path}: {e}") from None


def parse_template(path: Path) -> Template:
    data = _read_toml(path)
    t = Template(
        name=path.stem,
        description=_typed(path, data, "description", str, ""),
        capabilities=_str_list(path, "capabilities", data.pop("capabilities", [])),
        tools=_str_list(path, "tools", data.pop("tools", [])),
        system_prompt=_typed(path, data, "system_prompt", str, ""),
        profile=_typed(path, data, "profile", str, "offline"),
        token_budget=_typed(path, data, "token_budget", int, 0),
        token_period=_typed(path, data, "token_period", str, "monthly"),
        concurrency=_typed(path, data, "concurrency", int, 1),
        limits=_parse_limits(path, data.pop("limits", {})),
        source=str(path),
        approval=parse_table(str(path), data.pop("approval", {})),
        steps=_typed(path, data, "steps", int, 10),
        task_tokens=_typed(path, data, "task_tokens", int, 20000),
        program=_program(path, data.pop("program", [])),
    )
    if not 1 <= t.steps <= 100:
        raise InvalidConfig(f"{path}: steps must be 1..100")
    if not 100 <= t.task_tokens <= 10_000_000:
        raise InvalidConfig(f"{path}: task_tokens must be 100..10000000")
    if t.token_budget < 0:
        raise InvalidConfig(f"{path}: token_budget must be >= 0")
    if t.token_period not in QUOTA_PERIODS:
        raise InvalidConfig(f"{path}: token_period must be one of {', '.join(QUOTA_PERIODS)}")
    if not 1 <= t.concurrency <= 64:
        raise InvalidConfig(f"{path}: concurrency must be 1..64")
    if data:
        raise InvalidConfig(f"{path}: unknown key(s) {', '.join(sorted(data))}")
    return t


PROGRAM_ARGS = 64
PROGRAM_ARG_CHARS = 4096


def _program(path: Path, value: object) -> tuple[str, ...]:
    """program = ["python3", "bot.py", ...]: argv, nothing else."""
    if (
        not isinstance(value, list)
        or len(value) > PROGRAM_ARGS
        or not all(isinstance(v, str) and 0 < len(v) <= PROGRAM_ARG_CHARS for v in value)
        or any("\0" in v for v in value)
    ):
        raise InvalidConfig(
            f"{path}: program must be a list of at most {PROGRAM_ARGS} non-empty strings "
            f"of {PROGRAM_ARG_CHARS} characters (its argv)"
        )
    if value and ".." in Path(value[0]).parts:
        raise InvalidConfig(f"{path}: program's first word may not contain '..'")
    return tuple(value)


ONLINE_KEYS = ("deny_private", "ip_deny", "ip_allow", "require_landlock", "namespace")
NAMESPACES = ("own", "host")


def _cidrs(path: Path, key: str, value: object) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidConfig(f"{path}: {key} must be a list of CIDR strings")
    try:
        return tuple(ipaddress.ip_network(v) for v in value)
    except ValueError as e:
        raise InvalidConfig(f"{path}: {key}: {e}") from None


def parse_profile(path: Path) -> Profile:
    data = _read_toml(path)
    network = _typed(path, data, "network", str, "none")
    if network not in NETWORK_MODES:
        raise InvalidConfig(f"{path}: network must be one of {', '.join(NETWORK_MODES)}")
    if network != "full" and any(k in data for k in ONLINE_KEYS):
        raise InvalidConfig(f'{path}: {", ".join(ONLINE_KEYS)} apply to network = "full" only')
    p = Profile(
        name=path.stem,
        description=_typed(path, data, "description", str, ""),
        network=network,
        deny_private=_typed(path, data, "deny_private", bool, True),
        ip_deny=_cidrs(path, "ip_deny", data.pop("ip_deny", [])),
        ip_allow=_cidrs(path, "ip_allow", data.pop("ip_allow", [])),
        require_landlock=_typed(path, data, "require_landlock", bool, False),
        namespace=_typed(path, data, "namespace", str, "own"),
        source=str(path),
    )
    if p.namespace not in NAMESPACES:
        raise InvalidConfig(f"{path}: namespace must be one of {', '.join(NAMESPACES)}")
    reopened = [str(a) for a in p.ip_allow for h in HOST_LOCAL if a.overlaps(h)]
    if reopened:
        raise InvalidConfig(
            f"{path}: ip_allow may not reopen this host, link-local or multicast: "
            + ", ".join(sorted(set(reopened)))
        )
    if data:
        raise InvalidConfig(f"{path}: unknown key(s) {', '.join(sorted(data))}")
    return p


def _read_toml(path: Path) -> dict[str, object]:
    if not _ID_RE.match(path.stem):
        raise InvalidConfig(f"{path}: file name is not a valid template/profile name")
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidConfig(f"{path}: {e}") from None


class _Parsed(Generic[T]):
    """Files parsed by PARSER, kept by path with their (mtime, size): an admin's
    edit is seen at the next look-up, while the scheduler's many look-ups parse
    nothing."""

    def __init__(self, parser: Callable[[Path], T], recheck: float = 0.0) -> None:
        self.parser = parser
        self.recheck = recheck
        self.cache: dict[Path, tuple[tuple[int, int], T, float]] = {}

    def get(self, path: Path) -> T:
        cached = self.cache.get(path)
        now = time.monotonic()
        if cached is not None and now - cached[2] < self.recheck:
            return cached[1]
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        if cached is not None and cached[0] == key:
            self.cache[path] = (key, cached[1], now)
            return cached[1]
        value = self.parser(path)
        self.cache[path] = (key, value, now)
        return value


class Catalog:
    """Templates and profiles from the vendor dir overlaid by the admin dir."""

    def __init__(self, vendor_dir: Path, admin_dir: Path, recheck: float = 0.0) -> None:
        """RECHECK: seconds during which a look-up trusts what it read last
        without a stat (agentd: 1 s). The claim path looks up the agent's
        template per claim; the stats were 90 us of a ~850 us in-process
        claim+complete cycle (cProfile, 2,000 cycles, tmpfs)."""
        self.dirs = (vendor_dir, admin_dir)
        self.recheck = recheck
        self._templates = _Parsed(parse_template, recheck)
        self._profiles = _Parsed(parse_profile, recheck)
        self._listing: dict[str, tuple[tuple[int, ...], dict[str, Path], float]] = {}

    def _files(self, kind: str, want: str | None = None) -> dict[str, Path]:
        """name -> file, later dirs overriding earlier ones; relisted only when a
        directory's mtime changes (a file added, removed or renamed). WANT, a
        name not in the listing, is looked for at once, whatever RECHECK says:
        a template just written is usable right away."""
        cached = self._listing.get(kind)
        now = time.monotonic()
        fresh = cached is not None and now - cached[2] < self.recheck
        if fresh and cached is not None and (want is None or want in cached[1]):
            return cached[1]
        dirs = [base / kind for base in self.dirs]
        stamp = tuple(d.stat().st_mtime_ns if d.is_dir() else -1 for d in dirs)
        if cached is not None and cached[0] == stamp:
            self._listing[kind] = (stamp, cached[1], now)
            return cached[1]
        found: dict[str, Path] = {}
        for d in dirs:
            if d.is_dir():
                for p in sorted(d.glob("*.toml")):
                    found[p.stem] = p
        self._listing[kind] = (stamp, found, now)
        return found

    def templates(self) -> list[Template]:
        return [self._templates.get(p) for _, p in sorted(self._files("templates").items())]

    def template(self, name: str) -> Template:
        path = self._files("templates", name).get(name) if _ID_RE.match(name or "") else None
        if path is None:
            raise NoSuchTemplate(f"no template named {name!r}")
        t = self._templates.get(path)
        self.profile(t.profile)  # a template naming a missing profile is unusable
        return t

    def profiles(self) -> list[Profile]:
        return [self._profiles.get(p) for _, p in sorted(self._files("profiles").items())]

    def profile(self, name: str) -> Profile:
        path = self._files("profiles", name).get(name) if _ID_RE.match(name or "") else None
        if path is None:
            raise InvalidConfig(f"no sandbox profile named {name!r}")
        return self._profiles.get(path)
