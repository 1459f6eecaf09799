"""How much one caller can make agentd store or do: argument bounds and rates.

agentd runs as root, any local user and any agent may call it, and every change
and every refusal is an fsynced, hash-chained audit row (and a journald record).
Without bounds a loop of ``CreateAgent("<30 MB>")`` fills /var/lib/agentd. So:

- **Every argument of every D-Bus method is bounded before anything else is done
  with it**: before the caller's credentials are asked of the bus, before polkit,
  the policy, the engine or the audit log (agentd.api.access.rule checks them
  first). ARGUMENTS gives, per policy action and argument, the longest string
  (characters; bytes for ``ay``), the most items of any one array or dict, the
  deepest nesting of arrays, dicts, structs and variants, and the most
  characters of all its strings together. Over a bound is InvalidArgument
  naming the argument and the bound, never echoing the value; its audit row
  carries only the length. The walk is iterative and checks a container's
  length before looking inside it, so a deep or huge value costs agentd no
  more than the part it reads before refusing. tests/unit/test_limits.py walks
  every method of every interface and fails if a string, array or dict
  argument has no entry here; docs/dbus-api.md ("Limits") lists them.
- **Rates per caller UID** (token buckets, in memory, agentd.toml):
  refusals (``denied_calls_per_second``, burst ``denied_calls_burst``) and
  creations of agents, projects and tasks (``creates_per_second``, burst
  ``creates_burst``). A refusal within the budget is audited as always; past
  it the caller gets LimitExceeded, the refusal is only counted, and one
  summary row per uid per SUMMARY_SECONDS says how many were not written, so a
  flood of refused calls cannot fill the disk. While a caller's refusal budget
  is spent, all its calls are refused up front (no polkit round trip, no
  database write) until the bucket refills.
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .chat import MAX_CHARS
from .config import Config
from .tasks.model import MAX_ARTIFACTS, MAX_DEPS, MAX_RESULT, MAX_TEXT, MAX_TITLE

# -- argument bounds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """What one argument may hold. ``items`` and ``depth`` 0: a plain string."""

    chars: int  # the longest string (characters; bytes for ay)
    items: int = 0  # the most elements of any one array, or entries of any one dict
    depth: int = 0  # the deepest nesting of arrays, dicts, structs and variants
    total: int = 0  # the most characters of all its strings together (0: chars)

    @property
    def most(self) -> int:
        return self.total or self.chars


@dataclass(frozen=True)
class Violation:
    """The first bound an argument broke: what, by how much (a length, never the value)."""

    argument: str
    what: str  # "characters", "items", "levels of nesting", "characters in all"
    found: int
    limit: int

    def message(self) -> str:
        if self.what == "range":
            return f"argument {self.argument} holds a number out of range ({INT_MIN}..{INT_MAX})"
        if self.what == "levels of nesting":
            return f"argument {self.argument} is nested deeper than {self.limit} levels"
        return (
            f"argument {self.argument} is too long: {self.found} {self.what}, "
            f"at most {self.limit} allowed"
        )


# SQLite's integers are 64-bit signed: a D-Bus t (or a number in an a{sv}) past
# them would fail deep in the engine (OverflowError) instead of here, typed.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

NAME = Bound(64)  # agent, project, template names (names.MAX_LEN is 26; projects 64)
SHORT = Bound(16)  # enumerations: quota kind, period
TEXT = Bound(MAX_TEXT)  # descriptions, notes, reasons, errors: 64 KiB (tasks.model)
PATH = Bound(4096)  # PATH_MAX
# A conversation: agentd.thinking refuses more than MAX_CHARS * 4 characters of JSON.
MESSAGES = Bound(MAX_CHARS * 4)
# a{sv} options of Chat and Think: max_tokens, temperature, json_schema, persona, task
OPTIONS = Bound(MAX_TEXT, items=16, depth=3, total=2 * MAX_TEXT)
# CreateAgent's limits: memory_max ("512M" or t), cpu_quota, tasks_max
AGENT_LIMITS = Bound(64, items=8, depth=3, total=512)
# SubmitTask's spec: title, description and exec (64 KiB each), project, agent, needs
# (at most 32 names), after (at most 64 ids), priority, max_attempts
SPEC = Bound(MAX_TEXT, items=max(MAX_DEPS, 16), depth=3, total=3 * MAX_TEXT + 16 * 1024)
FILTER = Bound(64, items=8, depth=2, total=1024)  # ListTasks: status project agent ...
TYPES = Bound(128, items=64, depth=1, total=64 * 128)  # ListEvents: eventlog.MAX_PATTERNS
# (name, path) pairs: at most MAX_ARTIFACTS, names of 128, paths of PATH_MAX
ARTIFACTS = Bound(4096, items=MAX_ARTIFACTS, depth=2, total=MAX_ARTIFACTS * (4096 + 128))

# Per policy action (agentd.policy.RULES), per argument: the bound of every string,
# array and dict argument of every D-Bus method. Integers and booleans need none.
ARGUMENTS: dict[str, dict[str, Bound]] = {
    "agent.create": {"name": NAME, "template": NAME, "limits": AGENT_LIMITS},
    "agent.get": {"name": NAME},
    "agent.show": {"name": NAME},
    "agent.start": {"name": NAME},
    "agent.stop": {"name": NAME},
    "agent.remove": {"name": NAME},
    "template.show": {"name": NAME},
    "audit.list": {"types": TYPES},
    "task.completed": {"result": Bound(MAX_RESULT), "artifacts": ARTIFACTS},
    "task.failed": {"error": TEXT, "result": Bound(MAX_RESULT), "artifacts": ARTIFACTS},
    "task.blocked": {"reason": TEXT},
    "model.think": {"messages": MESSAGES, "options": OPTIONS},
    "project.create": {"name": NAME, "description": TEXT},
    "project.show": {"name": NAME},
    "project.remove": {"name": NAME},
    "task.create": {"spec": SPEC},
    "task.list": {"filter": FILTER},
    "artifact.read": {"name": Bound(128)},
    "task.unblock": {"note": TEXT},
    "model.reload": {"path": PATH},
    "model.install": {"name": NAME, "source": PATH, "path": PATH},
    "model.use": {"name": NAME},
    "model.remove": {"name": NAME},
    "model.chat": {"agent": NAME, "messages": MESSAGES, "options": OPTIONS},
    "quota.set": {"kind": SHORT, "subject": NAME, "period": SHORT},
    "quota.reset": {"kind": SHORT, "subject": NAME},
}
# What an argument without an entry gets (a new method nobody bounded yet): closed
# rather than open; the test above names the argument so it gets a real entry.
FALLBACK = Bound(MAX_TITLE, items=64, depth=3, total=64 * MAX_TITLE)


def check(argument: str, value: object, bound: Bound) -> Violation | None:
    """The first bound VALUE breaks, or None. Iterative (no recursion on a deep
    value); a container's length is checked before anything inside it is read."""
    stack: list[tuple[object, int]] = [(value, 0)]
    total = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not INT_MIN <= item <= INT_MAX:
                return Violation(argument, "range", 0, INT_MAX)
        elif isinstance(item, str | bytes | bytearray):
            if len(item) > bound.chars:
                what = "characters" if isinstance(item, str) else "bytes"
                return Violation(argument, what, len(item), bound.chars)
            total += len(item)
            if total > bound.most:
                return Violation(argument, "characters in all", total, bound.most)
        elif isinstance(item, dict | list | tuple):
            if depth + 1 > bound.depth:
                return Violation(argument, "levels of nesting", depth + 1, bound.depth)
            if len(item) > bound.items:
                return Violation(argument, "items", len(item), bound.items)
            children: Iterable[object]
            children = [x for kv in item.items() for x in kv] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


@dataclass(frozen=True)
class Arguments:
    """The bounds of one method's arguments, by position (self excluded) and name."""

    names: tuple[str, ...]
    bounds: Mapping[str, Bound]

    def check(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> Violation | None:
        named = list(zip(self.names, args, strict=False)) + list(kwargs.items())
        for name, value in named:
            if isinstance(value, str | bytes | bytearray | dict | list | tuple | int):
                found = check(name, value, self.bounds.get(name, FALLBACK))
                if found is not None:
                    return found
        return None


def arguments(action: str, names: Iterable[str], extra: Mapping[str, Bound] | None) -> Arguments:
    """ACTION's bounds (ARGUMENTS), with EXTRA (declared at the @rule) over them."""
    return Arguments(tuple(names), {**ARGUMENTS.get(action, {}), **(extra or {})})


# -- who may create agents ---------------------------------------------------------------------

NO_LOGIN_SHELLS = frozenset({"nologin", "false", "true", "sync", "halt", "shutdown"})
# Not people whatever their shell: systemd DynamicUser= and nobody (systemd UIDS-GIDS).
DYNAMIC_UIDS = range(61184, 65520)
NOBODY = 65534


class Logins(Protocol):
    def uid_min(self) -> int: ...

    def shell(self, uid: int) -> str | None:
        """UID's login shell; None if UID has no account."""
        ...

    def member(self, uid: int, gid: int) -> bool:
        """Whether UID is in group GID now, by the group database (not by the
        groups a process of UID was started with)."""
        ...


class SystemLogins:
    """/etc/login.defs and the passwd database (NSS: files, nss-systemd, LDAP...)."""

    def __init__(self, login_defs: Path = Path("/etc/login.defs")) -> None:
        self.login_defs = login_defs

    def uid_min(self) -> int:
        try:
            lines = self.login_defs.read_text(errors="replace").splitlines()
        except OSError:
            return 1000
        for line in lines:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
                return int(fields[1])
        return 1000  # login.defs(5)'s default

    def shell(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_shell
        except KeyError:
            return None

    def member(self, uid: int, gid: int) -> bool:
        # One NSS look-up of each, per call of an administrator only (callers
        # not in the group per their connection's credentials never get here).
        try:
            user = pwd.getpwuid(uid)
            return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
        except KeyError:
            return False


def creator_refusal(uid: int, gids: frozenset[int], group_gid: int | None, logins: Logins) -> str:
    """Why UID (in GIDS) may not create agents, or "" if it may. GROUP_GID: the gid
    of agentd.toml's creator_group, None when unset (then: a person with a login
    shell, UID_MIN or above); a configured group that does not exist admits nobody."""
    if uid == NOBODY or uid in DYNAMIC_UIDS:
        return f"uid {uid} is nobody or a DynamicUser service, not a person"
    if group_gid is not None:
        return "" if group_gid in gids else f"uid {uid} is not in creator_group"
    minimum = logins.uid_min()
    if uid < minimum:
        return f"uid {uid} is a system account (below UID_MIN {minimum})"
    shell = logins.shell(uid)
    if shell is None:
        return f"uid {uid} has no account"
    if os.path.basename(shell) in NO_LOGIN_SHELLS:
        return f"uid {uid} has no login shell ({shell})"
    return ""


# -- rates ---------------------------------------------------------------------------------

SUMMARY_SECONDS = 10.0  # one "N refusals not written" row per flooding uid per interval
MAX_BUCKETS = 4096  # idle (full) buckets are dropped past this many


@dataclass(frozen=True)
class CallerLimits:
    """agentd.toml's limits on what one caller may do per second, and who creates."""

    denied_calls_per_second: int = Config.denied_calls_per_second
    denied_calls_burst: int = Config.denied_calls_burst
    creates_per_second: int = Config.creates_per_second
    creates_burst: int = Config.creates_burst
    creator_group: str = Config.creator_group
    messages_per_second: int = Config.messages_per_second
    messages_burst: int = Config.messages_burst

    @classmethod
    def from_config(cls, cfg: Config) -> CallerLimits:
        return cls(
            cfg.denied_calls_per_second,
            cfg.denied_calls_burst,
            cfg.creates_per_second,
            cfg.creates_burst,
            cfg.creator_group,
            cfg.messages_per_second,
            cfg.messages_burst,
        )

    def rate(self, kind: str) -> tuple[float, float]:
        """(tokens per second, bucket size) of KIND: "denied", "create" or
        "message"; rate 0: no limit."""
        if kind == "denied":
            return self.denied_calls_per_second, self.denied_calls_burst
        if kind == "message":
            return self.messages_per_second, self.messages_burst
        return self.creates_per_second, self.creates_burst


class Rates:
    """Token buckets per (kind, uid), and the refusals not written one by one."""

    def __init__(self, limits: CallerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.buckets: dict[tuple[str, int], tuple[float, float]] = {}  # tokens, at
        self.suppressed: dict[int, int] = {}
        self.since = clock()

    def _level(self, kind: str, uid: int) -> float | None:
        """Tokens in UID's KIND bucket now; None if KIND is not limited."""
        rate, burst = self.limits.rate(kind)
        if rate <= 0:
            return None
        now = self.clock()
        tokens, at = self.buckets.get((kind, uid), (burst, now))
        return min(float(burst), tokens + (now - at) * rate)

    def take(self, kind: str, uid: int) -> bool:
        """Spend one of UID's KIND tokens; False (nothing spent) if none is left."""
        level = self._level(kind, uid)
        if level is None:
            return True
        if len(self.buckets) > MAX_BUCKETS:
            self._prune()
        ok = level >= 1
        self.buckets[(kind, uid)] = (level - 1 if ok else level, self.clock())
        return ok

    def spent(self, kind: str, uid: int) -> bool:
        """Whether UID has no KIND token left (nothing spent)."""
        level = self._level(kind, uid)
        return level is not None and level < 1

    def wait(self, kind: str, uid: int) -> float:
        """Seconds until UID has a KIND token again."""
        level = self._level(kind, uid)
        rate = self.limits.rate(kind)[0]
        return 0.0 if level is None or level >= 1 else (1 - level) / rate

    def _prune(self) -> None:
        for key in list(self.buckets):
            level = self._level(*key)
            if level is None or level >= self.limits.rate(key[0])[1]:
                del self.buckets[key]

    def suppress(self, uid: int) -> None:
        if not self.suppressed:
            self.since = self.clock()  # an interval starts with its first refusal
        self.suppressed[uid] = self.suppressed.get(uid, 0) + 1

    def due(self) -> bool:
        return bool(self.suppressed) and self.clock() - self.since >= SUMMARY_SECONDS

    def drain(self) -> tuple[dict[int, int], float]:
        """The refusals counted since the last drain, per uid, and over how long."""
        counts, seconds = self.suppressed, self.clock() - self.since
        self.suppressed, self.since = {}, self.clock()
        return counts, seconds
