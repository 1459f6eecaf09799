"""agentd's configuration: /etc/agentd/agentd.toml over built-in defaults.

Unknown keys and out-of-range values are refused at load time (InvalidConfig)
rather than silently ignored: a typo in a security setting must not pass.

Ceilings (issue 10, finding 9; agentd.ceilings, agentd.diskwatch, agentd.homes),
each 0 for "no limit"; sizes may be written as integers (bytes) or as "16G":

- ``owner_memory_max`` (16 GiB), ``owner_cpu_quota_max`` (1600 %),
  ``owner_tasks_max`` (4096): what all the agents of one ordinary owner (not
  removed: creating, present or removing) may hold together, the sums of their
  MemoryMax, CPUQuota and TasksMax. A CreateAgent that would pass one is
  refused (LimitExceeded) before anything is made. Administrators (root,
  admin_group) are exempt, as from max_agents_per_owner: they are trusted with
  the whole machine, and agents.slice still bounds every agent together.
- ``home_max`` (10 GiB): the disk an agent's home may use (allocated blocks,
  each inode once); ``home_check_interval`` (60 s) between two measurements
  of every home. An agent over it is stopped and may not start until it is
  back under (agentd.diskwatch).
- ``archive_retention_count`` (100), ``archive_retention_bytes`` (20 GiB),
  ``archive_retention_days`` (0: no age limit): archives of kept homes in
  state_dir/archive beyond any of these are deleted, oldest first, whenever
  an archive is written and at startup (agentd.homes).

Approval policy (issue 12): an ``[approval]`` table, the same shape as a
template's (tools, shell_allow, timeout), adds requirements to every
template's; it can never waive one (agentd.approvalrules says how they merge).

Quota plans (issue 16): ``[plans.NAME]`` tables (agentd.plandefs parses them,
after the settings their left-out keys default to) and ``default_plan``, which
must name one of them; agentd.plans assigns them to users and groups.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sizes
from .approvalrules import ApprovalRules, parse_table
from .errors import InvalidConfig
from .plandefs import Plan, parse_plans

DEFAULT_CONFIG_FILE = Path("/etc/agentd/agentd.toml")

# UID/GID ranges agents must stay out of, with the document that reserves them.
# The default agent range, 70000-99999, lies in systemd's "unused" 65536-524287
# block, above Debian's 16-bit ranges (adduser never allocates there) and below
# the 100000+ subordinate-ID ranges useradd hands out for rootless containers.
RESERVED_ID_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 999, "system users (Debian policy 9.2.2, systemd)"),
    (1000, 60000, "regular users (Debian policy 9.2.2, systemd)"),
    (60001, 60577, "systemd-homed and nspawn (systemd UIDS-GIDS)"),
    (61184, 65519, "systemd DynamicUser= (systemd UIDS-GIDS)"),
    (65520, 65535, "nobody and (uid_t)-1 (Debian policy 9.2.2)"),
    (100000, 600100000, "subordinate IDs (login.defs SUB_UID_MIN..SUB_UID_MAX)"),
    (524288, 1879048191, "container UIDs (systemd UIDS-GIDS)"),
    (2147483648, 4294967295, "UIDs >= 2^31, unsafe for many tools (systemd UIDS-GIDS)"),
)


@dataclass(frozen=True)
class Config:
    uid_min: int = 70000
    uid_max: int = 99999
    home_root: Path = Path("/home/agents")
    state_dir: Path = Path("/var/lib/agentd")
    vendor_dir: Path = Path("/usr/share/agentd")
    admin_dir: Path = Path("/etc/agentd")
    admin_group: str = "agentd-admin"
    agents_group: str = "agentd-agents"
    max_agents_per_owner: int = 16
    heartbeat_interval: int = 10
    runtime_command: Path = Path("/usr/libexec/agentd/agentd-runtime")
    slice: str = "agents.slice"
    # Tasks: a claim lives lease_seconds past the last heartbeat; a lost claim is
    # retried after retry_backoff * 2^(attempt-1) seconds (capped at 300); an agent
    # with no work for idle_timeout seconds has its unit stopped (0: never).
    lease_seconds: int = 30
    retry_backoff: int = 2
    idle_timeout: int = 300
    # The model: agentd-inference.service's socket (the service reads the [model]
    # table of this file itself). Token quotas (0: unlimited) per agent and per
    # owner, over a period; a template's token_budget or an admin's
    # `agentctl quota set` takes precedence over the agent default.
    inference_socket: Path = Path("/run/agentd-inference/socket")
    agent_token_quota: int = 0
    owner_token_quota: int = 0
    token_quota_period: str = "monthly"
    # Who may create agents: members of creator_group; empty, any person: a UID
    # of at least login.defs' UID_MIN with a login shell (not nologin or false),
    # never nobody or a DynamicUser service. Administrators always may.
    creator_group: str = ""
    # Rates per caller UID (token buckets; 0: no limit). Refused calls past the
    # budget are answered LimitExceeded and counted, not audited one by one (one
    # summary row per uid per 10 s), so a flood cannot fill /var/lib/agentd.
    # Creations of agents, projects and tasks (administrators are not limited).
    denied_calls_per_second: int = 5
    denied_calls_burst: int = 100
    creates_per_second: int = 5
    creates_burst: int = 50
    # Messages each sender (agent or person) may send (agentd.messages; 0: no
    # limit): 20/s with a burst of 100 is far above a chatting agent's pace (a
    # model step takes seconds) and keeps a runaway loop from filling the store.
    messages_per_second: int = 20
    messages_burst: int = 100
    # Per owner (administrators are not limited): active projects, and tasks
    # not yet final (pending, in_progress, blocked).
    max_projects_per_owner: int = 100
    max_queued_tasks_per_owner: int = 1000
    # Ceilings per ordinary owner, over its agents not removed (agentd.ceilings;
    # 0: none). The defaults let an owner fill max_agents_per_owner (16) with any
    # vendor template: research is the largest in memory (1 GiB x 16 = 16 GiB) and
    # CPU (100 % x 16 = 1600 %), ops in tasks (256 x 16 = 4096); the tests' agents
    # (sandbox: 256 MiB, 50 %, 32 tasks) fit many times over. They cut what one
    # user could ask for (16 x 64 GiB, 16 x 800 %, 16 x 16384 tasks) by 64, 8 and
    # 64 times; 4096 tasks is a quarter of agents.slice's TasksMax (16384), so one
    # owner's fork bombs leave three quarters of the slice to the others.
    owner_memory_max: int = 16 << 30
    owner_cpu_quota_max: int = 1600
    owner_tasks_max: int = 4096
    # Each agent's home (agentd.diskwatch; 0: no limit): at most home_max bytes of
    # allocated blocks (and DiskWatch's MAX_ENTRIES entries), measured every
    # home_check_interval seconds outside the event loop. 10 GiB: 2.5 times the
    # 4 GiB a home may hold and still be archived by `rm --keep-home`.
    home_max: int = 10 << 30
    home_check_interval: int = 60
    # Archives of kept homes (state_dir/archive), all owners together: beyond the
    # newest archive_retention_count, or past archive_retention_bytes in all, or
    # older than archive_retention_days, the oldest are deleted (0: that bound
    # off). 100 archives of at most 4 GiB each could be 400 GiB; 20 GiB keeps
    # five of the largest and many ordinary ones.
    archive_retention_count: int = 100
    archive_retention_bytes: int = 20 << 30
    archive_retention_days: int = 0
    # Memory (agentd.memory; 0: unlimited): an agent's own memory and an owner's
    # knowledge base, in chunks (~800 characters each) and bytes of text. 20,000
    # chunks are ~16 MiB of text; at 100k chunks one search stays near 30 ms of CPU
    # (bench/memory.py), so an owner's knowledge base is bounded there.
    memory_agent_chunks: int = 20_000
    memory_agent_bytes: int = 16 << 20
    memory_owner_chunks: int = 100_000
    memory_owner_bytes: int = 64 << 20
    approval: ApprovalRules = field(default_factory=ApprovalRules)  # the admin's [approval]
    # Quota plans (agentd.plandefs, agentd.plans): [plans.NAME] tables, in the order
    # written, and the plan of every owner no assignment names ("": none).
    plans: tuple[Plan, ...] = ()
    default_plan: str = ""
    config_file: Path | None = field(default=None, compare=False)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agentd.db"

    @property
    def memory_db_path(self) -> Path:
        """The memory's own database (agentd.memory), beside agentd.db."""
        return self.state_dir / "memory.db"

    @property
    def archive_dir(self) -> Path:
        return self.state_dir / "archive"

    def as_dict(self) -> dict[str, str | int]:
        """Flat view for `agentctl status` (paths as strings)."""
        out: dict[str, str | int] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ApprovalRules):
                value = f"tools={list(value.tools)} shell_allow={list(value.shell_allow)}"
            elif f.name == "plans":
                value = ",".join(p.name for p in value)
            out[f.name] = value if isinstance(value, int) else str(value)
        return out


_INT_BOUNDS = {
    "uid_min": (1, 2**31 - 1),
    "uid_max": (1, 2**31 - 1),
    "max_agents_per_owner": (0, 100000),
    "heartbeat_interval": (1, 3600),
    "lease_seconds": (2, 86400),
    "retry_backoff": (0, 3600),
    "idle_timeout": (0, 7 * 86400),
    "agent_token_quota": (0, 10**15),
    "owner_token_quota": (0, 10**15),
    "denied_calls_per_second": (0, 100000),
    "denied_calls_burst": (1, 1000000),
    "creates_per_second": (0, 100000),
    "creates_burst": (1, 1000000),
    "messages_per_second": (0, 100000),
    "messages_burst": (1, 1000000),
    "max_projects_per_owner": (0, 1000000),
    "max_queued_tasks_per_owner": (0, 10000000),
    "owner_memory_max": (0, 1 << 60),
    "owner_cpu_quota_max": (0, 10**6),
    "owner_tasks_max": (0, 10**9),
    "home_max": (0, 1 << 60),
    "home_check_interval": (1, 86400),
    "archive_retention_count": (0, 10**6),
    "archive_retention_bytes": (0, 1 << 60),
    "archive_retention_days": (0, 36500),
    "memory_agent_chunks": (0, 10**7),
    "memory_agent_bytes": (0, 1 << 40),
    "memory_owner_chunks": (0, 10**8),
    "memory_owner_bytes": (0, 1 << 40),
}
# Byte settings that may also be written as sizes ("16G", agentd.sizes).
_SIZE_KEYS = frozenset(
    {
        "owner_memory_max",
        "home_max",
        "archive_retention_bytes",
        "memory_agent_bytes",
        "memory_owner_bytes",
    }
)
# A home limit below this would stop an agent for its runtime's own files.
MIN_HOME_MAX = 1 << 20
# String settings an empty value is meaningful for ("" = the default rule).
_MAY_BE_EMPTY = frozenset({"creator_group"})
QUOTA_PERIODS = ("daily", "weekly", "monthly")
# Tables of the same file read by other programs (agentd-inference reads [model]).
FOREIGN_TABLES = ("model",)


def _coerce(key: str, value: object, default: object) -> object:
    if key in _SIZE_KEYS and isinstance(value, str):
        try:
            value = sizes.parse_size(value)
        except ValueError as e:
            raise InvalidConfig(f"{key}: {e}") from None
    if isinstance(default, int):  # bool is an int too
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidConfig(f"{key}: expected an integer, got {value!r}")
        lo, hi = _INT_BOUNDS.get(key, (0, 2**63))
        if not lo <= value <= hi:
            raise InvalidConfig(f"{key}: {value} is outside {lo}..{hi}")
        return value
    if not isinstance(value, str) or (not value and key not in _MAY_BE_EMPTY):
        raise InvalidConfig(f"{key}: expected a non-empty string, got {value!r}")
    if isinstance(default, Path):
        if not value.startswith("/"):
            raise InvalidConfig(f"{key}: {value!r} must be an absolute path")
        return Path(value)
    return value


def plan_defaults(cfg: Config) -> tuple[Plan, tuple[str, ...]]:
    """What a plan's left-out keys are (the settings for every owner), and its periods."""
    tokens, period = cfg.owner_token_quota, cfg.token_quota_period
    return Plan("", tokens, period, cfg.max_agents_per_owner, cfg.owner_memory_max), QUOTA_PERIODS


def check_uid_range(lo: int, hi: int) -> None:
    """Refuse an agent ID range that is empty or overlaps a documented range."""
    if lo > hi:
        raise InvalidConfig(f"uid_min {lo} is greater than uid_max {hi}")
    for rlo, rhi, what in RESERVED_ID_RANGES:
        if lo <= rhi and rlo <= hi:
            raise InvalidConfig(
                f"agent ID range {lo}-{hi} overlaps {rlo}-{rhi}, reserved for {what}"
            )


def load(
    path: Path = DEFAULT_CONFIG_FILE, *, overrides: Mapping[str, object] | None = None
) -> Config:
    """Load PATH (missing file = defaults) and validate every key."""
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InvalidConfig(f"{path}: {e}") from None
    data = {**data, **(overrides or {})}
    defaults = Config()
    known = {f.name for f in dataclasses.fields(Config)} - {"config_file", "approval", "plans"}
    # Any: one value per field, each of its field's type (_coerce checks it against
    # the default), which no single static type says for all the fields at once.
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in FOREIGN_TABLES:
            if not isinstance(value, dict) and not (
                isinstance(value, str) and value.startswith("/")
            ):
                raise InvalidConfig(f"{path}: {key} must be a table, or an absolute path")
            continue
        if key == "approval":
            values[key] = parse_table(str(path), value)
            continue
        if key == "plans":
            continue  # below, over the settings they default to
        if key not in known:
            raise InvalidConfig(f"{path}: unknown setting {key!r}")
        values[key] = _coerce(key, value, getattr(defaults, key))
    cfg = dataclasses.replace(defaults, config_file=path, **values)
    if "plans" in data:
        cfg = dataclasses.replace(
            cfg, plans=parse_plans(str(path), data["plans"], *plan_defaults(cfg))
        )
    if cfg.default_plan and cfg.default_plan not in {p.name for p in cfg.plans}:
        raise InvalidConfig(f"{path}: default_plan: no plan named {cfg.default_plan!r} in [plans]")
    check_uid_range(cfg.uid_min, cfg.uid_max)
    if cfg.token_quota_period not in QUOTA_PERIODS:
        raise InvalidConfig(
            f"token_quota_period: {cfg.token_quota_period!r} is not one of "
            f"{', '.join(QUOTA_PERIODS)}"
        )
    if 0 < cfg.home_max < MIN_HOME_MAX:
        raise InvalidConfig(f"home_max: {cfg.home_max} is below {MIN_HOME_MAX} (1M), or 0")
    if cfg.lease_seconds <= cfg.heartbeat_interval:
        raise InvalidConfig(
            f"lease_seconds ({cfg.lease_seconds}) must exceed "
            f"heartbeat_interval ({cfg.heartbeat_interval})"
        )
    return cfg
