"""Finding 2 of issue 10: nothing a caller sends reaches the disk unbounded.

Every string, array and dict argument of every D-Bus method has a bound
(agentd.limits.ARGUMENTS), checked before anything else; audit rows are
bounded with a marker; refusals and creations are rate-limited per UID (a
fake clock drives the token buckets); projects and queued tasks are limited
per owner; only people may create agents; Think's task option must be a
task the agent holds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sdbus.dbus_proxy_async_method import DbusMethodAsync
from world import ALICE, BOB, ROOT, World

from agentd import config, limits
from agentd.api import interfaces
from agentd.api.access import ACTION, BOUNDS, Callers
from agentd.api.approvals import ApprovalsObject
from agentd.api.errors import AgentdDbusError, short_name
from agentd.api.manager import AgentObject, ManagerObject
from agentd.api.model import ModelObject
from agentd.api.runtime import RuntimeObject
from agentd.api.tasks import TasksObject
from agentd.approvalrules import ApprovalRules
from agentd.approvals import Approvals
from agentd.audit import MAX_DETAIL, MAX_VALUE, AuditLog
from agentd.errors import InvalidConfig, LimitExceeded, PermissionDenied
from agentd.eventlog import EventLog
from agentd.limits import Bound, CallerLimits, Rates, SystemLogins, check
from agentd.modelclient import ModelClient
from agentd.policy import Caller, Policy
from agentd.quotas import Meter
from agentd.store import Store
from agentd.tasks.queue import TaskQueue
from agentd.thinking import Thinking

SERVICES = {
    interfaces.ManagerInterface: ManagerObject,
    interfaces.AgentInterface: AgentObject,
    interfaces.RuntimeInterface: RuntimeObject,
    interfaces.TasksInterface: TasksObject,
    interfaces.ModelInterface: ModelObject,
    interfaces.ApprovalsInterface: ApprovalsObject,
}
KEYS = {
    ManagerObject: "manager",
    AgentObject: "agent",
    RuntimeObject: "runtime",
    TasksObject: "tasks",
    ModelObject: "model",
    ApprovalsObject: "approvals",
}


def split_signature(sig: str) -> list[str]:
    """D-Bus signature -> its complete types ("sa{sv}a(ss)" -> s, a{sv}, a(ss))."""
    out, i = [], 0
    while i < len(sig):
        j = i
        while sig[j] == "a":
            j += 1
        if sig[j] in "({":
            depth, j = 0, j
            while True:
                depth += sig[j] in "({"
                depth -= sig[j] in ")}"
                j += 1
                if depth == 0:
                    break
        else:
            j += 1
        out.append(sig[i:j])
        i = j
    return out


def methods() -> list[tuple[type, str, DbusMethodAsync]]:
    return [
        (service, name, m)
        for interface, service in SERVICES.items()
        for name, m in vars(interface).items()
        if isinstance(m, DbusMethodAsync)
    ]


def unbounded_types(sig: str) -> bool:
    """Whether a value of this type has a length: strings, arrays, structs, variants."""
    return sig[0] in "sogav(" or sig == "ay"


def test_every_string_array_and_dict_argument_of_every_method_has_a_bound() -> None:
    missing, checked = [], 0
    for service, name, method in methods():
        wrapper = vars(service)[name].original_method
        bounds = getattr(wrapper, BOUNDS)
        types = split_signature(method.input_signature)
        assert list(bounds.names) == list(method.input_args_names), (service, name)
        for arg, sig in zip(method.input_args_names, types, strict=True):
            if unbounded_types(sig):
                checked += 1
                if arg not in bounds.bounds:
                    missing.append(f"{method.method_name}({arg} {sig})")
    assert not missing, f"arguments without a bound in agentd.limits.ARGUMENTS: {missing}"
    assert checked >= 30


def test_every_bound_is_of_a_real_argument() -> None:
    real = {
        (getattr(vars(service)[name].original_method, ACTION), arg)
        for service, name, method in methods()
        for arg in method.input_args_names
    }
    stale = {(a, arg) for a, args in limits.ARGUMENTS.items() for arg in args} - real
    assert not stale


# -- the bound itself -----------------------------------------------------------------------------


def test_check_measures_strings_items_depth_and_total() -> None:
    assert check("n", "x" * 64, limits.NAME) is None
    v = check("n", "x" * 65, limits.NAME)
    assert v is not None and (v.what, v.found, v.limit) == ("characters", 65, 64)
    assert "xxx" not in v.message() and "64" in v.message()
    spec = {"title": ("s", "t"), "needs": ("as", ["a"] * 65)}
    assert check("spec", spec, limits.SPEC).what == "items"  # type: ignore[union-attr]
    deep: object = ("s", "x")
    for _ in range(10):
        deep = ("v", deep)
    assert check("options", {"k": deep}, limits.OPTIONS).what == "levels of nesting"  # type: ignore[union-attr]
    many = {f"k{i}": ("s", "x" * 60000) for i in range(10)}
    assert check("options", many, limits.OPTIONS).what == "characters in all"  # type: ignore[union-attr]


def test_a_huge_container_is_refused_without_being_walked() -> None:
    huge = ["x"] * 10_000_000  # checked by its length before any element is looked at
    v = check("types", huge, limits.TYPES)
    assert v is not None and v.what == "items" and v.found == 10_000_000


# -- over-long arguments through the bus layer ----------------------------------------------------


class FakeLogins:
    def __init__(self, shells: dict[int, str], uid_min: int = 1000) -> None:
        self.shells, self.minimum = shells, uid_min

    def uid_min(self) -> int:
        return self.minimum

    def shell(self, uid: int) -> str | None:
        return self.shells.get(uid)


PEOPLE = FakeLogins({1000: "/bin/bash", 1001: "/bin/sh"})


class CountingCallers(Callers):
    """One fixed caller; records whether credentials and polkit were asked."""

    def __init__(self, policy: Policy, caller: Caller) -> None:
        super().__init__(None, policy, self)
        self.caller = caller
        self.asked: list[str] = []

    async def credentials(self) -> Caller:
        self.asked.append("credentials")
        return self.caller

    async def allowed(self, caller: Caller, action_id: str) -> bool:  # polkit
        self.asked.append("polkit")
        return False


class Api:
    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.w = World(tmp_path, **cfg)
        self.w.reg.policy.logins = PEOPLE
        self.queue = TaskQueue(self.w.store, self.w.reg)
        self.meter = Meter(self.w.cfg, self.w.store, self.w.audit, self.w.reg)
        self.thinking = Thinking(
            self.w.reg,
            self.meter,
            ModelClient(tmp_path / "no-model.sock", patience_s=0.1),
            self.w.audit,
        )
        self.a1 = self.w.run(self.w.reg.create(ALICE, "a1", "sandbox"))
        self.approvals = Approvals(self.queue, self.w.reg.catalog, ApprovalRules())

    def objects(self, callers: Callers) -> dict[str, Any]:
        policy = self.w.reg.policy
        return {
            "manager": ManagerObject(
                self.w.reg, EventLog(self.w.audit, self.w.reg, policy), callers, None
            ),
            "agent": AgentObject(self.w.reg, callers, "a1"),
            "runtime": RuntimeObject(self.w.reg, self.queue, callers, self.thinking),
            "tasks": TasksObject(self.queue, callers),
            "model": ModelObject(self.thinking, self.meter, callers),
            "approvals": ApprovalsObject(self.approvals, callers),
        }

    def call(self, caller: Caller, obj: str, method: str, *args: object) -> tuple[str, str]:
        """(error short name or "", message) of one call."""
        callers = CountingCallers(self.w.reg.policy, caller)
        target = self.objects(callers)[obj]
        self.callers = callers

        async def go() -> tuple[str, str]:
            try:
                await getattr(target, method)(*args)
            except AgentdDbusError as e:
                return short_name(e), str(e)
            return "", ""

        return asyncio.run(go())


def too_long(sig: str, bound: Bound) -> object:
    """A value of type SIG just over BOUND."""
    if sig == "s":
        return "x" * (bound.chars + 1)
    if sig == "as":
        return ["x"] * (bound.items + 1)
    if sig == "a(ss)":
        return [("x", "y")] * (bound.items + 1)
    if sig == "at":
        return [1] * (bound.items + 1)
    assert sig == "a{sv}", sig
    return {f"k{i}": ("s", "v") for i in range(bound.items + 1)}


def valid(sig: str) -> object:
    return {
        "s": "x",
        "b": False,
        "t": 1,
        "u": 1,
        "d": 1.0,
        "as": [],
        "at": [],
        "a(ss)": [],
        "a{sv}": {},
    }[sig]


def test_every_bounded_argument_over_its_bound_is_refused_first(tmp_path: Path) -> None:
    """Over a bound: InvalidArgument naming the argument and the bound, not the
    value; an audit row with only the length; polkit never asked; nothing done."""
    api = Api(tmp_path)
    tried = 0
    for service, name, method in methods():
        bounds = getattr(vars(service)[name].original_method, BOUNDS)
        types = split_signature(method.input_signature)
        for i, (arg, sig) in enumerate(zip(method.input_args_names, types, strict=True)):
            if arg not in bounds.bounds:
                continue
            args = [valid(t) for t in types]
            args[i] = too_long(sig, bounds.bounds[arg])
            before = api.w.audit.head()[0]
            error, message = api.call(BOB, KEYS[service], name, *args)
            assert error == "InvalidArgument", (method.method_name, arg, error, message)
            assert arg in message and "xxxxxxxx" not in message
            assert api.callers.asked == ["credentials"], (method.method_name, arg)  # no polkit
            rows = api.w.audit.entries(after=before)
            assert len(rows) == 1 and rows[0].result == "refused", rows
            assert rows[0].detail["argument"] == arg and "xxxxxxxx" not in json.dumps(
                rows[0].detail
            )
            api.w.reg.policy.rates.buckets.clear()  # this test is not about the rate
            tried += 1
    assert tried >= 30
    assert [a.name for a in api.w.reg.agents()] == ["a1"]


def test_a_megabyte_agent_name_costs_one_small_audit_row(tmp_path: Path) -> None:
    api = Api(tmp_path)
    before = api.w.audit.head()[0]
    error, message = api.call(BOB, "manager", "create_agent", "a" * 1_000_000, "sandbox", {})
    assert error == "InvalidArgument" and "1000000 characters, at most 64" in message
    (row,) = api.w.audit.entries(after=before)
    assert (row.action, row.actor_uid, row.detail["length"]) == ("agent.create", BOB.uid, 10**6)
    assert len(json.dumps(row.detail)) < 300


# -- audit rows are bounded -----------------------------------------------------------------------


def test_audit_values_and_agent_names_are_truncated_with_a_marker(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    audit = AuditLog(Store(tmp_path / "a.db"), journal=lambda **f: sent.append(f))
    e = audit.append(
        "x.y",
        actor_uid=1000,
        agent="n" * 5000,
        result="refused",
        reason="r" * 100_000,
        many=list(range(1000)),
        note="short",
    )
    assert e.detail["reason"].startswith("rrr")
    assert e.detail["reason"].endswith("…[truncated 99016 characters]")
    assert len(e.detail["reason"].encode()) <= MAX_VALUE
    assert len(e.agent.encode()) <= MAX_VALUE and "truncated" in e.agent  # type: ignore[union-attr]
    assert len(e.detail["many"]) == 65 and "truncated 936 items" in e.detail["many"][-1]
    assert e.detail["note"] == "short"
    stored = audit.store.query("SELECT detail, agent FROM audit WHERE seq=?", (e.seq,))[0]
    assert json.loads(stored["detail"]) == e.detail and stored["agent"] == e.agent
    assert audit.verify().ok  # the hash covers what is stored
    assert len(sent[0]["MESSAGE"]) < 3 * MAX_VALUE and len(sent[0]["AGENT_NAME"]) <= MAX_VALUE


def test_a_whole_row_is_at_most_max_detail(tmp_path: Path) -> None:
    audit = AuditLog(Store(tmp_path / "a.db"), journal=None)
    e = audit.append("x", actor_uid=0, **{f"k{i}": "v" * 2000 for i in range(60)})
    stored = audit.store.scalar("SELECT detail FROM audit WHERE seq=?", (e.seq,))
    assert len(stored.encode()) <= MAX_DETAIL and "truncated" in stored
    assert audit.verify().ok


def test_multibyte_text_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    audit = AuditLog(Store(tmp_path / "a.db"), journal=None)
    e = audit.append("x", actor_uid=0, reason="é" * 5000)
    assert len(e.detail["reason"].encode()) <= MAX_VALUE and e.detail["reason"].startswith("éé")


# -- rates ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    rates = Rates(CallerLimits(creates_per_second=5, creates_burst=50), clock)
    assert all(rates.take("create", 1000) for _ in range(50))
    assert not rates.take("create", 1000) and rates.spent("create", 1000)
    assert rates.take("create", 1001)  # per uid
    assert rates.wait("create", 1000) == pytest.approx(0.2)
    clock.now += 1.0
    assert sum(rates.take("create", 1000) for _ in range(10)) == 5
    clock.now += 3600
    assert sum(rates.take("create", 1000) for _ in range(100)) == 50  # never above the burst


def test_a_rate_of_zero_is_no_limit() -> None:
    rates = Rates(CallerLimits(creates_per_second=0), Clock())
    assert all(rates.take("create", 1) for _ in range(1000))


def test_idle_buckets_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_BUCKETS", 10)
    clock = Clock()
    rates = Rates(CallerLimits(), clock)
    for uid in range(20):
        rates.take("create", uid)
    clock.now += 3600
    rates.take("create", 99)
    assert len(rates.buckets) <= 11


def policy_world(tmp_path: Path, **lim: Any) -> tuple[World, Policy, Clock]:
    w = World(tmp_path)
    clock = Clock()
    policy = Policy(
        "no-such-admin-group",
        w.reg._is_agent_uid,
        w.audit,
        limits=CallerLimits(**lim),
        logins=PEOPLE,
        clock=clock,
    )
    return w, policy, clock


def test_a_denial_flood_writes_the_budget_then_one_summary_row(tmp_path: Path) -> None:
    w, policy, clock = policy_world(tmp_path, denied_calls_per_second=5, denied_calls_burst=100)
    before = w.audit.head()[0]
    errors: list[str] = []
    for _ in range(1000):
        try:
            policy.check(BOB, "audit.verify")
        except (PermissionDenied, LimitExceeded) as e:
            errors.append(e.name)
    assert errors.count("PermissionDenied") == 100 and errors.count("LimitExceeded") == 900
    assert len(w.audit.entries(after=before, limit=10000)) == 100
    with pytest.raises(LimitExceeded):  # refused up front while the budget is spent
        policy.throttle(BOB)
    policy.throttle(ALICE)  # another caller is not
    clock.now += limits.SUMMARY_SECONDS
    policy.throttle(ALICE)  # the first call after the interval writes the summary
    rows = w.audit.entries(after=before + 100, limit=10000)
    assert [(r.action, r.actor_uid, r.detail["count"]) for r in rows] == [
        ("audit.suppressed", BOB.uid, 901)
    ]
    with pytest.raises(PermissionDenied):  # refilled: audited again
        policy.check(BOB, "audit.verify")


def test_the_summary_is_written_by_a_timer_after_the_flood_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentd.policy

    monkeypatch.setattr(agentd.policy, "SUMMARY_SECONDS", 0.01)
    w, policy, _ = policy_world(tmp_path, denied_calls_burst=1)

    async def flood() -> None:
        for _ in range(3):
            with pytest.raises((PermissionDenied, LimitExceeded)):
                policy.check(BOB, "audit.verify")
        assert not [e for e in w.audit.entries() if e.action == "audit.suppressed"]
        await asyncio.sleep(0.1)  # no more calls: the timer writes it

    asyncio.run(flood())
    rows = [e for e in w.audit.entries(limit=100) if e.action == "audit.suppressed"]
    assert [r.detail["count"] for r in rows] == [2]


def test_creations_are_rate_limited_per_person_not_for_admins(tmp_path: Path) -> None:
    w, policy, clock = policy_world(tmp_path, creates_per_second=5, creates_burst=50)
    for _ in range(50):
        policy.screen(ALICE, "task.create")
    with pytest.raises(LimitExceeded, match="creates_per_second"):
        policy.screen(ALICE, "project.create")
    assert w.audit.entries(limit=1000)[-1].detail["error"] == "LimitExceeded"
    policy.screen(BOB, "agent.create")
    for _ in range(200):
        policy.screen(ROOT, "task.create")
    clock.now += 0.2
    policy.screen(ALICE, "task.create")


# -- per-owner limits -----------------------------------------------------------------------------


def test_projects_per_owner(tmp_path: Path) -> None:
    w = World(tmp_path, max_projects_per_owner=2)
    q = TaskQueue(w.store, w.reg)
    q.create_project(ALICE, "p1")
    q.create_project(ALICE, "p2")
    with pytest.raises(LimitExceeded, match="max_projects_per_owner=2"):
        q.create_project(ALICE, "p3")
    assert w.audit_rows("project.create")[-1].result == "refused"
    q.create_project(BOB, "b1")  # per owner
    q.create_project(ROOT, "r1")  # administrators are not limited
    q.create_project(ROOT, "r2")
    q.create_project(ROOT, "r3")
    q.remove_project(ALICE, "p2")
    q.create_project(ALICE, "p3")


def test_queued_tasks_per_owner(tmp_path: Path) -> None:
    w = World(tmp_path, max_queued_tasks_per_owner=2)
    q = TaskQueue(w.store, w.reg)
    w.run(w.reg.create(ALICE, "a1", "sandbox"))
    t1 = q.submit(ALICE, {"title": "1"}).id
    q.submit(ALICE, {"title": "2"})
    with pytest.raises(LimitExceeded, match="max_queued_tasks_per_owner=2"):
        q.submit(ALICE, {"title": "3"})
    assert w.audit_rows("task.create")[-1].detail["error"] == "LimitExceeded"
    q.cancel(ALICE, t1)  # final: no longer counts
    t3 = q.submit(ALICE, {"title": "3"}).id
    with pytest.raises(LimitExceeded):  # a retried task would be queued again
        q.retry(ALICE, t1)
    q.cancel(ALICE, t3)
    q.retry(ALICE, t1)
    q.submit(ROOT, {"title": "r1", "agent": "a1"})  # administrators are not limited


# -- who may create agents ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "shell", "why"),
    [
        (1000, "/bin/bash", ""),
        (1000, "/usr/sbin/nologin", "no login shell"),
        (1000, "/bin/false", "no login shell"),
        (999, "/bin/bash", "below UID_MIN"),
        (65534, "/bin/bash", "nobody"),
        (61184, "/bin/sh", "DynamicUser"),
        (5000, None, "no account"),
    ],
)
def test_only_people_with_a_login_shell_create_agents(
    tmp_path: Path, uid: int, shell: str | None, why: str
) -> None:
    w, policy, _ = policy_world(tmp_path)
    policy.logins = FakeLogins({uid: shell} if shell else {})
    caller = Caller(uid, frozenset({uid}))
    if not why:
        policy.screen(caller, "agent.create")
        policy.screen(caller, "project.create")
        return
    with pytest.raises(PermissionDenied, match=why):
        policy.screen(caller, "agent.create")
    row = w.audit.entries(limit=1000)[-1]
    assert (row.action, row.result, row.actor_uid) == ("agent.create", "denied", uid)
    policy.screen(caller, "project.create")  # only agents need an owner who is a person


def test_creator_group(tmp_path: Path) -> None:
    import grp

    group = grp.getgrgid(0).gr_name  # root's group exists everywhere
    w, policy, _ = policy_world(tmp_path, creator_group=group)
    policy.screen(Caller(1000, frozenset({1000, 0})), "agent.create")
    with pytest.raises(PermissionDenied, match="creator_group"):
        policy.screen(ALICE, "agent.create")  # a login shell is not enough then
    assert w.audit.entries()[-1].result == "denied"
    _, policy, _ = policy_world(tmp_path / "2", creator_group="no-such-group")
    with pytest.raises(PermissionDenied):
        policy.screen(ALICE, "agent.create")
    policy.screen(ROOT, "agent.create")  # administrators always may


def test_system_logins_reads_uid_min(tmp_path: Path) -> None:
    defs = tmp_path / "login.defs"
    defs.write_text("# comment\nUID_MIN\t\t\t 2000\nUID_MAX 60000\n")
    assert SystemLogins(defs).uid_min() == 2000
    assert SystemLogins(tmp_path / "missing").uid_min() == 1000
    assert SystemLogins().shell(0) is not None and SystemLogins().shell(2**31 - 7) is None


def test_config_keys(tmp_path: Path) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text('creator_group = ""\ncreates_burst = 7\nmax_projects_per_owner = 3\n')
    cfg = config.load(f)
    assert (cfg.creator_group, cfg.creates_burst, cfg.max_projects_per_owner) == ("", 7, 3)
    assert CallerLimits.from_config(cfg).creates_burst == 7
    f.write_text("denied_calls_burst = 0\n")
    with pytest.raises(InvalidConfig, match="denied_calls_burst"):
        config.load(f)


# -- Think's task option --------------------------------------------------------------------------


def test_think_meters_only_a_task_the_agent_holds(tmp_path: Path) -> None:
    api = Api(tmp_path)
    a2 = api.w.run(api.w.reg.create(ALICE, "a2", "sandbox"))
    mine = api.queue.submit(ALICE, {"title": "mine", "agent": "a1"}).id
    theirs = api.queue.submit(ALICE, {"title": "theirs", "agent": "a2"}).id
    api.queue.assign()
    assert api.queue.claim(api.a1).id == mine  # type: ignore[union-attr]
    assert api.queue.claim(a2).id == theirs  # type: ignore[union-attr]
    assert api.queue.thinking_on(api.a1, mine) == mine
    hello = json.dumps([{"role": "user", "content": "hi"}])
    for task in (theirs, 999):
        before = api.w.audit.head()[0]
        error, _ = api.call(Caller(api.a1.uid), "runtime", "think", hello, {"task": ("t", task)})
        assert error == "PermissionDenied"
        (row,) = api.w.audit.entries(after=before)
        assert (row.action, row.result, row.agent, row.task_id) == (
            "model.think",
            "denied",
            "a1",
            task,
        )
    asyncio.run(api.queue.complete(api.a1, mine, 1, "{}", []))
    with pytest.raises(PermissionDenied):  # held once, not now
        api.queue.thinking_on(api.a1, mine)


# -- documented ------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
MINE = (
    "creator_group",
    "denied_calls_per_second",
    "denied_calls_burst",
    "creates_per_second",
    "creates_burst",
    "max_projects_per_owner",
    "max_queued_tasks_per_owner",
)


def test_every_bound_is_in_the_limits_section_of_the_api_reference() -> None:
    doc = (REPO / "docs/dbus-api.md").read_text()
    section = doc.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    missing = [
        f"{method.method_name}({arg})"
        for service, name, method in methods()
        for arg in getattr(vars(service)[name].original_method, BOUNDS).bounds
        if arg in method.input_args_names
        and not any(f"`{method.method_name}`" in r and f"`{arg}`" in r for r in rows)
    ]
    assert not missing
    assert all(key in section for key in MINE)


def test_the_shipped_agentd_toml_shows_the_defaults(tmp_path: Path) -> None:
    shipped = (REPO / "policies/agentd.toml").read_text()
    lines = [
        line[1:] if line.startswith(MINE, 1) and line.startswith("#") else line
        for line in shipped.splitlines()
    ]
    assert sum(line.startswith(MINE) for line in lines) == len(MINE)
    f = tmp_path / "agentd.toml"
    f.write_text("\n".join(lines) + "\n")
    cfg, defaults = config.load(f), config.Config()
    assert all(getattr(cfg, k) == getattr(defaults, k) for k in MINE)
    man = (REPO / "docs/man/agentd.8").read_text().replace("\\-", "-")
    assert all(k in man for k in MINE)
