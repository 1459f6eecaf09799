"""Runs inside the disposable machine, as root, with agentd installed and a
user alice. Messages between agents (issue 15), each figure beside a baseline
measured in this same run:

  ping       a bare D-Bus round trip from an agent's client to agentd
             (org.freedesktop.DBus.Peer.Ping on org.agentos.agentd1), N in a row.
  pair       one sender and one receiver agent. The receiver waits in a
             Receive long poll; the sender Sends, the receiver gets the message
             and Acks it. Per message: from just before Send to just after Ack
             returns, N in a row (the sender waits for the previous Ack, told
             through a pipe, then 2 ms, so the receiver is back in its long
             poll); also its parts (Send; Send returned -> Receive returned;
             Ack).
  pairs      P pairs at once (2P agents): each sender Sends M messages one
             after another as fast as it can, each receiver Receive(max=100)
             + Ack in a loop. Messages/s delivered and acknowledged (first Send
             to last Ack), latency per message (Send start to its Ack's end),
             loss, duplicates and order per pair (bodies are sequence numbers,
             ids must grow), agentd's and dbus-daemon's CPU seconds, and the
             audit rows written.
  ping_many  the same 2P clients only pinging, M each, all at once: what the
             bus and agentd's loop carry with no message work (calls/s).
  inprocess  agentd's Mailbox code in this process, no bus (tests/unit's World:
             the real store, registry, policy and audit over fake accounts and
             units): Send + Receive + Ack one message at a time, and in
             batches of 100 as the receivers do; on a store in /tmp (a tmpfs,
             as agentd's own database is in this machine: its root is an
             overlay on a tmpfs) and in the project tree (the host's disk:
             real fsyncs), and with Mailbox's audit row left out.

Clients are processes of this file (`client ROLE ...`) running as the agent's
Unix user (setpriv: its uid and gid, and the agentd-agents group), with sdbus
and agentd from /usr/lib/agentd/python, as an agent's runtime has them.
Times are time.monotonic (CLOCK_MONOTONIC: one clock for every process of the
machine).

    /usr/bin/python3 bench/messages_inner.py PING PAIR PAIRS PER_SENDER

Progress on stderr, one JSON report on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, "/usr/lib/agentd/python")
REPO = Path(__file__).resolve().parents[1]
CONF = Path("/etc/agentd/agentd.toml")
DB = "/var/lib/agentd/agentd.db"
OWNER = "alice"
GAP_S = 0.002  # pair phase: pause before each Send, so the receiver waits in Receive
IDLE_S = 20.0  # a receiver gives up after this long with nothing to receive


# -- figures ---------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    v = [x * 1000 for x in values]
    return {
        "n": len(v),
        "p50_ms": round(pct(v, 50), 3),
        "p99_ms": round(pct(v, 99), 3),
        "mean_ms": round(statistics.fmean(v), 3),
        "max_ms": round(max(v), 3),
    }


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(*argv: str, user: str | None = None) -> str:
    cmd = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise RuntimeError(f"{cmd}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


# -- clients (run as an agent) ---------------------------------------------------------------
async def client(role: str, args: list[str]) -> None:
    from sdbus import sd_bus_open_system, set_default_bus

    from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface

    bus = sd_bus_open_system()
    set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    await rt.dbus_ping()  # connected and authenticated before any clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    out: dict[str, Any] = {}
    if role == "ping":
        n = int(args[0])
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            await rt.dbus_ping()
            times.append([t0, time.monotonic()])
        out["pings"] = times
    elif role == "send":
        to, n, wait_fd = args[0], int(args[1]), int(args[2])
        sent = []
        for seq in range(n):
            if wait_fd >= 0 and seq:
                if not os.read(wait_fd, 1):
                    break  # the receiver is gone
                await asyncio.sleep(GAP_S)
            t0 = time.monotonic()
            mid = await rt.send(to, "bench", str(seq))
            sent.append([seq, mid, t0, time.monotonic()])
        out["sent"] = sent
    elif role == "recv":
        n, tell_fd = int(args[0]), int(args[1])
        got: list[list[Any]] = []
        seen: set[int] = set()
        receives = acks = 0
        idle_since = time.monotonic()
        while len(seen) < n:
            batch = json.loads(await rt.receive(100, 2000))
            receives += 1
            t_recv = time.monotonic()
            if not batch:
                if t_recv - idle_since > IDLE_S:
                    break
                continue
            await rt.ack([m["id"] for m in batch])
            acks += 1
            t_ack = time.monotonic()
            idle_since = t_ack
            for m in batch:
                got.append([int(m["body"]), m["id"], t_recv, t_ack, m["deliveries"]])
                seen.add(int(m["body"]))
            if tell_fd >= 0:
                os.write(tell_fd, b"x")
        out.update(got=got, receives=receives, acks=acks)
    print(json.dumps(out), flush=True)


# -- the root side ---------------------------------------------------------------------------
class Agents:
    def __init__(self) -> None:
        from agentd.names import account_name

        self.account_name = account_name
        self.agents_gid = int(sh("getent", "group", "agentd-agents").split(":")[2])

    def spawn(self, name: str, role: str, *args: object, fds: tuple[int, ...] = ()) -> Any:
        pw = pwd.getpwnam(self.account_name(name))
        return subprocess.Popen(
            [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                f"--groups={self.agents_gid}",
                "--",
                "/usr/bin/python3",
                str(Path(__file__).resolve()),
                "client",
                role,
                *map(str, args),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=fds,
        )


def ready(procs: list[Any]) -> None:
    for p in procs:
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"client {p.args[-3:]}: {line!r} instead of ready")


def go(procs: list[Any]) -> None:
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def results(procs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=900)
        if p.returncode:
            raise RuntimeError(f"client {p.args[-3:]}: exit {p.returncode}")
        out.append(json.loads(stdout))
    return out


def main_pid(unit: str) -> int:
    return int(sh("systemctl", "show", "-p", "MainPID", "--value", unit).strip())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process PID (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit_seq() -> int:
    db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])
    finally:
        db.close()


def audit_since(seq: int) -> dict[str, int]:
    db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(
            "SELECT action, count(*) FROM audit WHERE seq > ? GROUP BY action ORDER BY 2 DESC",
            (seq,),
        ).fetchall()
    finally:
        db.close()
    return {a: n for a, n in rows}


def setup(names: list[str]) -> None:
    """No rate limit on senders, agentd restarted, alice's agents created (not
    started: the clients act as them)."""
    CONF.write_text(
        "# bench/messages.py: no rate limit per sender\nmessages_per_second = 0\n\n"
        + CONF.read_text()
    )
    sh("systemctl", "restart", "agentd.service")
    end = time.monotonic() + 60
    while True:
        try:
            sh("agentctl", "agent", "list", user=OWNER)
            break
        except RuntimeError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    for name in names:
        sh("agentctl", "agent", "create", name, "--template", "sandbox", user=OWNER)


def ping_phase(agents: Agents, name: str, n: int) -> dict[str, Any]:
    procs = [agents.spawn(name, "ping", n)]
    ready(procs)
    go(procs)
    [r] = results(procs)
    return ms([t1 - t0 for t0, t1 in r["pings"]])


def check_pair(sent: list[list[Any]], got: list[list[Any]], n: int) -> dict[str, Any]:
    """Loss, duplicates and order of one pair's messages."""
    first: dict[int, list[Any]] = {}
    for g in got:
        first.setdefault(g[0], g)
    order = [g[0] for g in got if first[g[0]] is g]
    ids = [g[1] for g in got if first[g[0]] is g]
    sent_ids = {s[0]: s[1] for s in sent}
    return {
        "sent": len(sent),
        "received": len(first),
        "lost": n - len(first),
        "duplicates": len(got) - len(first),
        "in_order": order == sorted(order) and ids == sorted(ids) and len(set(ids)) == len(ids),
        "ids_match": all(sent_ids.get(seq) == g[1] for seq, g in first.items()),
    }


def latencies(sent: list[list[Any]], got: list[list[Any]]) -> dict[str, list[float]]:
    start = {s[0]: s for s in sent}
    parts: dict[str, list[float]] = {"round_trip": [], "send": [], "to_received": [], "ack": []}
    done: set[int] = set()
    for seq, _mid, t_recv, t_ack, _n in got:
        if seq in done or seq not in start:
            continue
        done.add(seq)
        _, _, t0, t1 = start[seq]
        parts["round_trip"].append(t_ack - t0)
        parts["send"].append(t1 - t0)
        parts["to_received"].append(t_recv - t1)
        parts["ack"].append(t_ack - t_recv)
    return parts


def pair_phase(agents: Agents, sender: str, receiver: str, n: int) -> dict[str, Any]:
    rfd, wfd = os.pipe()
    recv = agents.spawn(receiver, "recv", n, wfd, fds=(wfd,))
    send = agents.spawn(sender, "send", receiver, n, rfd, fds=(rfd,))
    os.close(rfd)
    os.close(wfd)
    ready([recv, send])
    go([recv])
    time.sleep(0.3)  # the receiver in its long poll before the first Send
    go([send])
    r, s = results([recv, send])
    parts = latencies(s["sent"], r["got"])
    return {
        **check_pair(s["sent"], r["got"], n),
        **{k: ms(v) for k, v in parts.items()},
    }


def pairs_phase(agents: Agents, senders: list[str], receivers: list[str], m: int) -> dict[str, Any]:
    recvs = [agents.spawn(r, "recv", m, -1) for r in receivers]
    sends = [agents.spawn(s, "send", r, m, -1) for s, r in zip(senders, receivers, strict=True)]
    ready(recvs + sends)
    pids = {"agentd": main_pid("agentd.service"), "dbus-daemon": main_pid("dbus.service")}
    cpu0 = {k: cpu_s(p) for k, p in pids.items()}
    seq0 = audit_seq()
    go(recvs)
    time.sleep(0.3)
    go(sends)
    rs = results(recvs)
    ss = results(sends)
    cpu = {k: round(cpu_s(p) - cpu0[k], 2) for k, p in pids.items()}
    audit = audit_since(seq0)
    checks = [check_pair(s["sent"], r["got"], m) for s, r in zip(ss, rs, strict=True)]
    round_trips: list[float] = []
    for s, r in zip(ss, rs, strict=True):
        round_trips += latencies(s["sent"], r["got"])["round_trip"]
    t_first = min(x[2] for s in ss for x in s["sent"])
    t_last = max(g[3] for r in rs for g in r["got"])
    wall = t_last - t_first
    delivered = sum(c["received"] for c in checks)
    sends_n = sum(len(s["sent"]) for s in ss)
    receives = sum(r["receives"] for r in rs)
    acks = sum(r["acks"] for r in rs)
    calls = sends_n + receives + acks
    return {
        "pairs": len(senders),
        "per_sender": m,
        "sent": sends_n,
        "delivered_and_acked": delivered,
        "lost": sum(c["lost"] for c in checks),
        "duplicates": sum(c["duplicates"] for c in checks),
        "every_pair_in_order": all(c["in_order"] and c["ids_match"] for c in checks),
        "wall_s": round(wall, 3),
        "messages_per_s": round(delivered / wall, 1),
        "round_trip": ms(round_trips),
        "calls": {"send": sends_n, "receive": receives, "ack": acks},
        "calls_per_s": round(calls / wall, 1),
        "messages_per_receive": round(delivered / max(1, receives), 2),
        "cpu_s": cpu,
        "agentd_cpu_ms_per_message": round(cpu["agentd"] / max(1, delivered) * 1000, 3),
        "agentd_cpu_share_of_one_core": round(cpu["agentd"] / wall, 2),
        "audit_rows": audit,
        "audit_rows_per_message": round(sum(audit.values()) / max(1, delivered), 2),
    }


def ping_many_phase(agents: Agents, names: list[str], m: int) -> dict[str, Any]:
    procs = [agents.spawn(n, "ping", m) for n in names]
    ready(procs)
    go(procs)
    rs = results(procs)
    pings = [p for r in rs for p in r["pings"]]
    wall = max(t1 for _, t1 in pings) - min(t0 for t0, _ in pings)
    return {
        "clients": len(names),
        "pings": len(pings),
        "wall_s": round(wall, 3),
        "pings_per_s": round(len(pings) / wall, 1),
        "latency": ms([t1 - t0 for t0, t1 in pings]),
    }


# -- in-process baseline ---------------------------------------------------------------------
class NoAudit:
    def append(self, *args: Any, **kwargs: Any) -> None:
        pass


async def inprocess(where: Path, audit: bool, n: int, batches: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from world import ALICE, World  # tests/unit/world.py

    from agentd.messages import MAX_RECEIVE, Mailbox

    w = World(where, messages_per_second=0)
    mb = Mailbox(w.store, w.reg, w.audit, w.reg.events)
    if not audit:
        mb.audit = NoAudit()  # type: ignore[assignment]
    for name in ("a1", "a2"):
        await w.reg.create(ALICE, name, "sandbox")
    a1, a2 = w.reg.find("a1"), w.reg.find("a2")
    assert a1 is not None and a2 is not None
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        mb.send_from_agent(a1, "a2", "bench", str(i))
        got = await mb.receive(a2, 1, 0)
        mb.ack(a2, [g["id"] for g in got])
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    for _ in range(batches):
        for i in range(MAX_RECEIVE):
            mb.send_from_agent(a1, "a2", "bench", str(i))
        got = await mb.receive(a2, MAX_RECEIVE, 0)
        done += mb.ack(a2, [g["id"] for g in got])
    wall = time.perf_counter() - t0
    fs = sh("findmnt", "-n", "-o", "FSTYPE", "-T", str(where)).strip()
    return {
        "store_fs": fs,
        "audit_row": audit,
        "one_at_a_time": ms(times),
        "batched_messages_per_s": round(done / wall, 1),
    }


async def inprocess_phase(n: int, batches: int) -> dict[str, Any]:
    out = {}
    for label, parent, audit in (
        ("tmpfs", "/tmp", True),
        ("tmpfs_no_audit_row", "/tmp", False),
        ("disk", str(REPO / "build"), True),
    ):
        with tempfile.TemporaryDirectory(dir=parent, prefix="bench-messages-") as tmp:
            out[label] = await inprocess(Path(tmp), audit, n, batches)
    return out


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    n_ping, n_pair, n_pairs, per_sender = map(int, sys.argv[1:5])
    senders = [f"ms{i}" for i in range(n_pairs)]
    receivers = [f"mr{i}" for i in range(n_pairs)]
    setup(senders + receivers)
    agents = Agents()
    report: dict[str, Any] = {"machine": {"cores": os.cpu_count()}}
    phases = {
        "ping": lambda: ping_phase(agents, senders[0], n_ping),
        "pair": lambda: pair_phase(agents, senders[0], receivers[0], n_pair),
        "pairs": lambda: pairs_phase(agents, senders, receivers, per_sender),
        "ping_many": lambda: ping_many_phase(agents, senders + receivers, per_sender),
        "inprocess": lambda: asyncio.run(inprocess_phase(n_pair, 30)),
    }
    for name, phase in phases.items():
        t0 = time.monotonic()
        try:
            report[name] = phase()
        except Exception:
            log(sh("journalctl", "-u", "agentd", "--no-pager", "-n", "40"))
            raise
        log(f"{name}: {time.monotonic() - t0:.1f}s")
    ping, pair, pairs = report["ping"], report["pair"], report["pairs"]
    report["ratios"] = {
        "pair_round_trip_p50_vs_ping_p50": round(pair["round_trip"]["p50_ms"] / ping["p50_ms"], 2),
        "pair_round_trip_p99_vs_ping_p99": round(pair["round_trip"]["p99_ms"] / ping["p99_ms"], 2),
        "pairs_calls_per_s_vs_ping_many_pings_per_s": round(
            pairs["calls_per_s"] / report["ping_many"]["pings_per_s"], 3
        ),
        "pairs_messages_per_s_vs_inprocess_batched_tmpfs": round(
            pairs["messages_per_s"] / report["inprocess"]["tmpfs"]["batched_messages_per_s"], 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        asyncio.run(client(sys.argv[2], sys.argv[3:]))
    else:
        main()
