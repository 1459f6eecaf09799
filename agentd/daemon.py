"""agentd's main: load config, reconcile, serve the D-Bus API, notify systemd.

Order matters: the registry is reconciled with the system *before* the bus
name is taken and READY=1 is sent, so no client ever sees a half-made agent
left by a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import __version__, buspolicy, names, sd
from . import config as config_mod
from .accounts import Accounts, Homes
from .agent import Agent
from .api.access import Callers
from .api.approvals import ApprovalsObject
from .api.bus import open_system_bus, take_name
from .api.goals import GoalsObject
from .api.interfaces import BUS_NAME, ROOT_PATH
from .api.manager import ManagerObject
from .api.memory import MemoryObject
from .api.model import ModelObject
from .api.observe import ObserveObject
from .api.polkit import Polkit
from .api.runtime import RuntimeObject
from .api.sessions import SessionsObject
from .api.tasks import TasksObject
from .api.teams import MessagesObject, TeamsObject
from .approvals import Approvals
from .audit import AuditLog
from .diskwatch import DiskWatch, StartGuard, mechanism
from .errors import AgentdError, InvalidConfig
from .eventlog import EventLog
from .events import AgentRemoved, Events, UnitStateChanged
from .fleet import Fleet
from .goals.delegation import Delegation
from .goals.runner import GoalRunner
from .goals.service import Goals
from .goals.subagents import SubAgents
from .homes import Pruned, Retention
from .journal import AgentJournal
from .memory import model as memory_model
from .memory.memories import Memories, ModelEmbedder
from .memory.service import MemoryService
from .messages import Mailbox
from .metrics import Counters, Metrics
from .modelclient import ModelClient
from .models.admin import ModelAdmin
from .models.fetch import UnitFetcher
from .quotas import Meter
from .registry import Registry
from .scheduler import Scheduler
from .sessions import Sessions
from .store import Store
from .systemd import Systemd
from .tasks.queue import TaskQueue
from .teams import TeamDirs, Teams
from .templates import Catalog
from .thinking import Thinking
from .usernet import UserNet

log = logging.getLogger("agentd")


def ensure_groups(cfg: config_mod.Config) -> None:
    """agentd's two groups, if sysusers.d has not made them (e.g. a source install)."""
    import grp

    for group in (cfg.admin_group, cfg.agents_group):
        try:
            grp.getgrnam(group)
        except KeyError:
            subprocess.run(["groupadd", "--system", group], check=True)
            log.info("created group %s", group)


def audit_pruned(audit: AuditLog, pruned: list[Pruned]) -> None:
    """One row per archive the retention deleted (agentd.homes)."""
    for p in pruned:
        audit.append(
            "archive.prune",
            actor_uid=0,
            archive=p["file"],
            bytes=p["bytes"],
            age_days=p["age_days"],
            reason=f"beyond archive_retention_{p['why']}",
        )
        log.info("archive %s deleted: beyond archive_retention_%s", p["file"], p["why"])


def check_catalog(catalog: Catalog) -> None:
    """Report every bad template or profile at startup, by file name."""
    for loader in (catalog.templates, catalog.profiles):
        try:
            loader()
        except InvalidConfig as e:
            log.error("%s", e)


async def open_memory(
    cfg: config_mod.Config, registry: Registry, meter: Meter, audit: AuditLog
) -> Memories | None:
    """The agents' memory (agentd.memory), or None: agentd serves without it when
    its database cannot be used (sqlite-vec missing, another dimension), saying so."""
    limits = memory_model.Limits(
        cfg.memory_agent_chunks,
        cfg.memory_agent_bytes,
        cfg.memory_owner_chunks,
        cfg.memory_owner_bytes,
    )
    service = MemoryService(
        cfg.memory_db_path, ModelEmbedder(ModelClient(cfg.inference_socket)), limits=limits
    )
    try:
        await service.open()
    except AgentdError as e:
        log.error("memory unavailable: %s", e)
        return None
    memories = Memories(service, registry.policy, audit, meter, registry)
    live = registry.present(await _memory_agents(service))
    for agent_id in await memories.reconcile(lambda i: i in live):
        log.warning("reconcile: dropped the memory of removed agent #%d", agent_id)
    return memories


async def _memory_agents(service: MemoryService) -> list[int]:
    return [s.id for s in await service.scopes() if s.kind == "agent"]


def forget(memories: Memories, agent: Agent) -> None:
    """A removed agent's memory goes too (archived beside a kept home)."""

    async def run() -> None:
        try:
            await memories.forget_agent(agent)
        except AgentdError as e:
            log.error("memory of removed agent %s: %s", agent.name, e)

    _background.add(task := asyncio.get_running_loop().create_task(run()))
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


async def serve(cfg: config_mod.Config) -> None:
    """Compose the daemon: every service is built here and handed what it uses."""
    ensure_groups(cfg)
    store = Store(cfg.db_path)
    events = Events(store)
    audit = AuditLog(store, events=events, background=True)
    retention = Retention(
        cfg.archive_retention_count, cfg.archive_retention_bytes, cfg.archive_retention_days
    )
    homes = Homes(
        cfg.home_root,
        cfg.archive_dir,
        retention=retention,
        on_prune=lambda pruned: audit_pruned(audit, pruned),
    )
    homes.ensure_root()
    catalog = Catalog(cfg.vendor_dir, cfg.admin_dir, recheck=1.0)  # edits seen within 1 s
    check_catalog(catalog)

    bus = open_system_bus()
    systemd = Systemd(bus)
    await systemd.connect()
    units = StartGuard(systemd)  # a home over its limit refuses the start (diskwatch)
    accounts = Accounts(cfg.agents_group)
    registry = Registry(cfg, store, audit, accounts, homes, units, catalog, events=events)
    policy = registry.policy  # the registry answers the policy's "is this UID an agent?"
    watch = DiskWatch(registry, homes)
    units.guard = watch.check_start
    home_limit, why = mechanism(cfg.home_root)
    log.info("home disk limit: %s (%s)", home_limit, why)

    repaired = await registry.reconcile()
    for line in repaired:
        log.warning("reconcile: %s", line)
    await homes.prune()

    queue = TaskQueue(
        store, registry, cfg=cfg, audit=audit, policy=policy, events=events, catalog=catalog
    )
    queue.grace()
    meter = Meter(cfg, store, audit, registry, policy=policy, catalog=catalog)
    thinking = Thinking(
        registry, meter, ModelClient(cfg.inference_socket), audit, policy=policy, catalog=catalog
    )
    callers = Callers(bus, policy, Polkit(bus), store=store)
    manager = ManagerObject(
        registry, EventLog(audit, registry, policy), callers, bus, catalog=catalog, cfg=cfg
    )
    runtime = RuntimeObject(registry, queue, callers, thinking)
    runtime.usernet = UserNet(systemd, audit, cfg.slice)  # online agents' egress
    tasks = TasksObject(queue, callers)
    approvals = Approvals(queue, catalog, cfg.approval)  # approval gates (issue 12)
    runtime.approvals = approvals
    approvals_obj = ApprovalsObject(approvals, callers)
    model = ModelObject(thinking, meter, callers)
    model.admin = ModelAdmin(  # agentctl model install/use/rm (agentd.models)
        Path("/var/lib/agentd-models"),
        policy,
        audit,
        thinking.reload,
        UnitFetcher(systemd),
        model.job_event,
    )
    memories = await open_memory(cfg, registry, meter, audit)
    runtime.memories = memories
    sessions = Sessions(store, thinking, audit, memories)  # chat sessions (issue 13)
    dropped = sessions.reconcile()
    if dropped:
        log.warning("reconcile: dropped %d chat sessions of removed agents", dropped)

    def forget_sessions(e: AgentRemoved) -> None:
        sessions.forget_agent(e.agent)

    events.subscribe(AgentRemoved, forget_sessions)
    # goals (issue 14): after the queue, so that a goal reconciled at start
    # finds its tasks as the queue left them
    crew = SubAgents(store, registry, queue.router, catalog, audit, cfg.state_dir / "goals")
    runner = GoalRunner(store, queue, catalog, audit, events, subagents=crew)
    runner.reconcile()
    runtime.delegation = Delegation(store, queue, catalog, audit, events)
    goals = GoalsObject(Goals(runner, registry, queue, policy), callers)
    goals.subscribe(events)
    # teams and messages (issue 15)
    teams = Teams(
        store,
        registry,
        accounts,
        TeamDirs(cfg.home_root / ".teams", cfg.archive_dir),
        audit,
        events,
    )
    for line in await teams.reconcile():
        log.warning("reconcile: %s", line)
    queue.router.teams = teams
    mailbox = Mailbox(store, registry, audit, events, share_team=teams.share)
    runtime.mailbox = mailbox
    queue.loop.extra.append(lambda task: inbox(mailbox, registry, task))
    teams_obj = TeamsObject(teams, callers)
    teams_obj.subscribe(events)
    runtime.streams = model.streams
    objects = [manager, runtime, tasks, model, approvals_obj, goals, teams_obj]
    objects.append(MessagesObject(mailbox, callers))
    objects.append(SessionsObject(sessions, callers, model.streams))
    # agentctl top, agent ps and metrics (issue 16): reads, on the root object
    fleet = Fleet(store, registry, policy, systemd, manager.state_of, thinking.show)
    counters = Counters()
    counters.errors = callers.failures
    counters.subscribe(events)
    metrics = Metrics(fleet, store, policy, counters, lambda: audit.head()[0])
    objects.append(ObserveObject(fleet, metrics, callers, AgentJournal(registry)))
    if memories is not None:
        objects.append(MemoryObject(memories, callers))
        events.subscribe(AgentRemoved, lambda e: forget(memories, e.agent))
    # sdbus holds exported objects weakly: these names keep them (and their
    # vtables) alive for as long as agentd serves.
    exported = [obj.export_to_dbus(ROOT_PATH, bus) for obj in objects]
    states = dict(await systemd.list_units("agent-*.service"))
    for agent in registry.agents(("present", "removing")):  # a failed removal stays visible
        manager.export_agent(agent.name, states.get(agent.unit, "inactive"))

    # Subscription order is delivery order: the registry marks a dead unit's
    # agent offline before the queue drops its long polls and the bus says so.
    events.subscribe(UnitStateChanged, registry.on_unit_state)

    def unit_down(e: UnitStateChanged) -> None:
        if e.active_state in ("inactive", "failed"):
            queue.runtime_gone(e.name)

    events.subscribe(UnitStateChanged, unit_down)
    manager.subscribe(events)
    tasks.subscribe(events)
    scheduler = Scheduler(registry, queue, systemd, events, held=watch.held)

    def on_unit_state(unit: str, active_state: str) -> None:
        name = names.agent_of_unit(unit)
        if name is not None:
            events.publish(UnitStateChanged(name, active_state))

    await systemd.watch_units("agent-", on_unit_state)
    scheduling = asyncio.get_running_loop().create_task(scheduler.run())
    watching = asyncio.get_running_loop().create_task(watch.run())
    approvals.expire()  # deadlines that passed while agentd was down
    await take_name()
    audit.append(
        "agentd.start",
        actor_uid=0,
        version=__version__,
        repaired=len(repaired),
        home_limit=f"{home_limit}: {why}",
    )
    sd.notify(f"READY=1\nSTATUS=serving {len(registry.agents())} agents")
    log.info(
        "agentd %s ready on %s (%d agents, %d repairs)",
        __version__,
        BUS_NAME,
        len(registry.agents()),
        len(repaired),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), cfg.heartbeat_interval)
        except TimeoutError:
            registry.sweep()
            approvals.expire()  # unanswered past the deadline: denied
            mailbox.prune()  # acknowledged messages past their keep
    sd.notify("STOPPING=1")
    scheduling.cancel()
    watching.cancel()
    for handle in exported:
        handle.stop()
    await model.streams.close()
    await model.polled.close()
    if model.admin is not None:
        await model.admin.close()
    with contextlib.suppress(TimeoutError):  # let queued starts/stops be audited
        await asyncio.wait_for(registry.settle(), 5)
    if memories is not None:
        await memories.service.close()
    audit.append("agentd.stop", actor_uid=0)
    store.close()
    audit.close()


def inbox(mailbox: Mailbox, registry: Registry, task: Any) -> dict[str, Any]:
    """A task's context gets its agent's unread messages (its first prompt shows them)."""
    agent = registry.find(task.agent) if task.agent else None
    return {"messages": mailbox.unread(agent)} if agent is not None else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentd", description="The agentd daemon.")
    parser.add_argument(
        "--config",
        type=Path,
        default=config_mod.DEFAULT_CONFIG_FILE,
        help="configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, templates and profiles, then exit",
    )
    parser.add_argument("--version", action="version", version=f"agentd {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        cfg = config_mod.load(args.config)
        buspolicy.check(cfg.agents_group)
        if args.check_config:
            catalog = Catalog(cfg.vendor_dir, cfg.admin_dir)
            catalog.templates()
            catalog.profiles()
            print(f"{args.config}: ok")
            return 0
        asyncio.run(serve(cfg))
    except AgentdError as e:
        log.error("agentd: %s", e)
        return sd.EX_CONFIG  # systemd will not loop-restart on a bad config for ever
    return 0


if __name__ == "__main__":
    sys.exit(main())
