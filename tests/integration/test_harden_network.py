"""Issue 10, finding 7: an online agent reaches the Internet, not this host.

An agent with the vendor `online` profile runs the probe below as an exec task,
so it runs as code the agent controls does: a child of the real runtime, in
its unit's cgroup (IPAddressDeny), with the unit's seccomp filter (no listen,
no io_uring), the tool filter the runtime adds (agentd.nobind: no bind) and
the Landlock domain (no abstract sockets of the host), none of which
Machine.run_in_unit would carry.
Every target is first reached by root from outside the sandbox (the positive
control: the target is up, so the agent's failure is the sandbox's doing), and
agentd must answer another user within 1 s while the probes run.

Where the traffic goes: the machine shares the build host's network namespace,
so its loopback and abstract sockets ARE the host's. Everything else lives in
a network namespace this test creates (`ip netns add`, gone with the machine
even if teardown fails), joined by a veth whose host end holds only
198.18.47.1 and fe80::47:1; /32 and /128 routes send exactly the addresses
below into it, checked with `ip route get` before any packet is sent. So no
probe leaves the machine, and none goes to a real metadata service.

- 198.18.47.2, 2001:2::47:2 (benchmarking ranges, RFC 2544 and 5180, never
  routed on the Internet): "the Internet", must stay reachable;
- 10.213.47.2, 172.31.213.2, 192.168.213.2, fd53:47::2: private;
- 169.254.213.2, fe80::47:2: link-local (where cloud metadata lives).

The vendor profile gives the agent a network namespace of its own, its egress
through agentd.usernet's slirp4netns unit (net-a); a second agent has an admin
profile `hostns` (namespace = "host": the host's namespace, where Landlock and
the unit's seccomp do the work) and runs the same probes; a third, with an
admin profile `lan` (deny_private = false, ip_deny = the public-like
198.18.47.2, its own namespace), shows the profile's knobs reach the kernel
and that slirp4netns's gateway does not lead to the host's loopback.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agentd_helpers import Agentd, wait_for

pytestmark = pytest.mark.integration

DIR = "/opt/agentd-tests/net"  # not /tmp: units have PrivateTmp
NS, HOST_IF, NS_IF = "agtnet", "agtnet-h", "agtnet-n"
PUBLIC = {"public4": "198.18.47.2", "public6": "2001:2::47:2"}
PRIVATE = {
    "private10": "10.213.47.2",
    "private172": "172.31.213.2",
    "private192": "192.168.213.2",
    "ula": "fd53:47::2",
}
LINK_LOCAL = {"link_local4": "169.254.213.2", "link_local6": "fe80::47:2"}
LOOPBACK = {
    "loopback4": "127.0.0.1",
    "loopback6": "::1",
    "mapped": "::ffff:127.0.0.1",
    "any4": "0.0.0.0",
    "any6": "::",
}
TARGETS = {**PUBLIC, **PRIVATE, **LINK_LOCAL, **LOOPBACK}
ROUTED = {**PUBLIC, **PRIVATE, **LINK_LOCAL}
# Reached over UDP too (probe "udp_NAME"): egress without bind() still works.
UDP_TARGETS = {k: TARGETS[k] for k in ("public4", "public6", "loopback4", "loopback6")}
DENIED = ("timeout", "err:EPERM")  # IPAddressDeny drops the SYN (measured: timeout)
RESOLV_MARK = "nameserver 198.18.47.53"  # what the agent must see as /etc/resolv.conf

# Serves "hello" on every address given (host:port over TCP and UDP, or @name
# for an abstract socket), printing "ready" once all listen.
SERVE = r"""
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept(); c.sendall(b"hello"); c.close()
def echo(s):  # over IPv6, from the address asked (else the kernel picks, maybe a denied one)
    v6 = s.family == socket.AF_INET6
    if v6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    while True:
        _, anc, _, peer = s.recvmsg(16, 256)
        info = [c for c in anc if c[:2] == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)]
        if v6 and info and not peer[0].startswith("::ffff:"):
            s.sendmsg([b"hello"], info[:1], 0, peer)
        else:
            s.sendto(b"hello", peer)
threads = []
for a in sys.argv[1:]:
    if a.startswith("@"):
        s = socket.socket(socket.AF_UNIX); s.bind("\0" + a[1:])
        s.listen(); threads.append((serve, s)); continue
    host, port = a.rsplit(":", 1)
    host = host.strip("[]")
    for kind, fn in ((socket.SOCK_STREAM, serve), (socket.SOCK_DGRAM, echo)):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
        if host == "::":  # IPv4 too
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        if kind == socket.SOCK_STREAM: s.listen()
        threads.append((fn, s))
for fn, s in threads:
    threading.Thread(target=fn, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# argv: PORT ABSTRACT TARGETS_JSON UDP_TARGETS_JSON.
# Prints {probe: "ok:..." | "err:ERRNO" | "timeout"}.
PROBE = r"""
import ctypes, errno, json, os, socket, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
port, abstract, targets = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
udp_targets = json.loads(sys.argv[4])
def outcome(fn):
    try:
        return "ok:" + str(fn())
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "err:" + errno.errorcode.get(e.errno, str(e.errno))
def connect(host):
    def go():
        fam, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(fam, kind, proto) as s:
            s.settimeout(3); s.connect(addr); return s.recv(16).decode()
    return go
def udp(host):  # no bind(): sendto() autobinds an ephemeral port
    def go():
        fam, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(fam, kind, proto) as s:
            s.settimeout(3); s.sendto(b"hi", addr); return s.recvfrom(16)[0].decode()
    return go
def unix(fn):
    def go():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3); return fn(s)
    return go
def abstract_connect(s):
    s.connect("\0" + abstract); return s.recv(16).decode()
def bind(family, kind, host):
    def go():
        with socket.socket(family, kind) as s:
            s.bind((host, 0)); return s.getsockname()
    return go
def listen_tcp():
    with socket.socket() as s:
        s.listen(); return s.getsockname()
def bind_unix(s):
    path = os.path.join(os.environ.get("HOME", "/"), "probe-bind.sock")
    try:
        s.bind(path); return "bound"
    finally:
        if os.path.exists(path): os.unlink(path)
def listen_unix(s):
    path = os.path.join(os.environ.get("HOME", "/"), "probe.sock")
    try:
        s.bind(path); s.listen(); return "listening"
    finally:
        if os.path.exists(path): os.unlink(path)
def bus():  # agentd over the system bus (agents may Ping it, not read properties)
    r = subprocess.run(["busctl", "--system", "call", "org.agentos.agentd1",
        "/org/agentos/agentd1", "org.freedesktop.DBus.Peer", "Ping"],
        capture_output=True, text=True, timeout=10)
    if r.returncode: raise OSError(errno.EIO, r.stderr)
    return "pong"
def resolv():
    with open("/etc/resolv.conf") as f: return f.read().strip()
def io_uring():  # io_uring_setup(1, params): IORING_OP_BIND/_LISTEN bind past seccomp
    libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(ctypes.c_long(425), ctypes.c_long(1), params)
    if fd < 0: raise OSError(ctypes.get_errno(), "io_uring_setup")
    os.close(fd); return "ring"
def runtime_pid():  # the probe's parent, or its parent if a shell stayed between
    pid = os.getppid()
    try:
        with open(f"/proc/{pid}/stat") as f: fields = f.read().rsplit(")", 1)
    except OSError:  # hidden: not dumpable, so not ours to see (ProtectProc)
        return pid
    return int(fields[1].split()[1]) if fields[0].endswith("(sh") else pid
def write_mem(pid):  # what would let a tool make the runtime bind
    with open(f"/proc/{pid}/mem", "r+b", buffering=0): return "opened"
def child_mem():  # the same on a process of the agent that is not shielded
    child = subprocess.Popen(["sleep", "30"])
    try: return write_mem(child.pid)
    finally: child.kill(); child.wait()
def alive(pid):
    os.kill(pid, 0); return "alive"
def landlock_abi():
    libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_long(1))
rt = runtime_pid()
probes = {name: connect(host) for name, host in targets.items()}
probes.update({"udp_" + name: udp(host) for name, host in udp_targets.items()})
probes.update(abstract=unix(abstract_connect), listen_tcp=listen_tcp,
    bind_tcp=bind(socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0"),
    bind_udp=bind(socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0"),
    bind_udp6=bind(socket.AF_INET6, socket.SOCK_DGRAM, "::"),
    bind_unix=unix(bind_unix), listen_unix=unix(listen_unix), bus=bus, resolv=resolv,
    landlock_abi=landlock_abi, io_uring=io_uring, runtime_mem=lambda: write_mem(rt),
    runtime_alive=lambda: alive(rt), child_mem=child_mem)
with ThreadPoolExecutor(len(probes)) as pool:
    futures = {name: pool.submit(outcome, fn) for name, fn in probes.items()}
print(json.dumps({name: f.result() for name, f in futures.items()}))
"""

LAN_PROFILE = """description = "test: the LAN allowed, one public address denied"
network = "full"
deny_private = false
ip_deny = ["198.18.47.2/32"]
"""


HOST_PROFILE = """description = "test: online in the host's network namespace"
network = "full"
namespace = "host"
"""
GATEWAY = {"gateway": "10.0.2.2"}  # slirp4netns's: the host's loopback, were it enabled
AGENTS = {"net-a": "netprobe", "net-host": "netprobe-host", "net-lan": "netprobe-lan"}
# In its own namespace the loopback is the agent's: nothing listens there.
OWN_LOOPBACK = "err:ECONNREFUSED"
# nor is the host's link (the probe's scope id) there
NO_HOST_LINK = (*DENIED, "err:ENETUNREACH", "err:ENODEV")


def template(profile: str) -> str:
    return (
        f'description = "network probe"\nprofile = "{profile}"\n'
        'capabilities = ["netprobe"]\ntools = ["shell"]\n'
        '[limits]\nmemory_max = "256M"\ncpu_quota = 50\ntasks_max = 64\n'
    )


def free_port() -> int:
    """A port free for TCP and UDP in this machine's network namespace (the
    host's: the machine shares it)."""
    while True:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind(("::", port))
        except OSError:
            continue
        return port


def setup_namespace(a: Agentd, port: int) -> None:
    """The test's network namespace and the routes into it; refuses to go on
    unless every routed test address really goes there."""
    a.sh(f"ip link del {HOST_IF} 2>/dev/null; ip netns del {NS} 2>/dev/null; true")
    steps = [
        f"ip netns add {NS}",
        # Its peer made inside at once: the pair dies with the namespace, which
        # dies with the machine's /run, whatever happens to this test.
        f"ip link add {HOST_IF} type veth peer name {NS_IF} netns {NS}",
        f"ip link set {HOST_IF} addrgenmode none",  # no address but the ones below
        f"ip -n {NS} link set {NS_IF} addrgenmode none",
        f"ip addr add 198.18.47.1/32 dev {HOST_IF}",
        f"ip addr add fe80::47:1/64 dev {HOST_IF} nodad",
        f"ip link set {HOST_IF} up",
        f"ip -n {NS} link set lo up",
        f"ip -n {NS} link set {NS_IF} up",
        f"ip -n {NS} addr add fe80::47:2/64 dev {NS_IF} nodad",
        f"ip -n {NS} route add 198.18.47.1/32 dev {NS_IF}",
        f"ip -n {NS} route add default via 198.18.47.1 dev {NS_IF}",
        f"ip -n {NS} -6 route add default via fe80::47:1 dev {NS_IF}",
    ]
    for address in ROUTED.values():
        if not address.startswith("fe80:"):
            plen = 128 if ":" in address else 32
            steps.append(f"ip -n {NS} addr add {address}/{plen} dev {NS_IF} nodad")
            steps.append(f"ip route add {address}/{plen} dev {HOST_IF}")
    a.sh(" && ".join(steps))
    for name, address in ROUTED.items():
        dev = f" dev {HOST_IF}" if address.startswith("fe80:") else ""
        route = a.sh(f"ip route get {address}{dev}").stdout
        assert f"dev {HOST_IF} " in route, (name, route)  # never off the machine
    a.sh(["mkdir", "-p", DIR])
    a.m.write_file(f"{DIR}/serve.py", SERVE, mode=0o644)
    a.m.write_file(f"{DIR}/probe.py", PROBE, mode=0o644)
    a.sh(
        "systemd-run --unit agentd-nettest-ns --collect "
        f"ip netns exec {NS} python3 {DIR}/serve.py [::]:{port}"
    )


@pytest.fixture(scope="module")
def net(agentd: Agentd) -> Iterator[dict[str, Any]]:
    port, abstract = free_port(), f"agentd-nettest-{time.monotonic_ns()}"
    try:
        setup_namespace(agentd, port)
        agentd.sh(
            "systemd-run --unit agentd-nettest-host --collect "
            f"python3 {DIR}/serve.py [::1]:{port} 127.0.0.1:{port} @{abstract}"
        )
        agentd.sh(["mkdir", "-p", "/etc/agentd/templates", "/etc/agentd/profiles"])
        agentd.sh(["mkdir", "-p", "/run/systemd/resolve"])
        agentd.m.write_file("/run/systemd/resolve/resolv.conf", RESOLV_MARK + "\n")
        agentd.m.write_file("/etc/agentd/profiles/lan.toml", LAN_PROFILE)
        agentd.m.write_file("/etc/agentd/profiles/hostns.toml", HOST_PROFILE)
        agentd.m.write_file("/etc/agentd/templates/netprobe.toml", template("online"))
        agentd.m.write_file("/etc/agentd/templates/netprobe-lan.toml", template("lan"))
        agentd.m.write_file("/etc/agentd/templates/netprobe-host.toml", template("hostns"))
        for name, tmpl in AGENTS.items():
            agentd.create(name, template=tmpl, user="alice", start=True)
        for name in AGENTS:
            wait_online(agentd, name)
        ctx: dict[str, Any] = {"port": port, "abstract": abstract}
        ctx["control"] = wait_for(lambda: control(agentd, ctx), 30, "the test's listeners")
        yield ctx
    finally:
        for name in AGENTS:
            agentd.ctl("agent", "rm", name, user="alice", check=False)
        agentd.sh(
            "systemctl stop agentd-nettest-host agentd-nettest-ns; "
            f"ip netns del {NS}; ip link del {HOST_IF}; "
            "rm -f /run/systemd/resolve/resolv.conf /etc/agentd/profiles/lan.toml "
            "/etc/agentd/profiles/hostns.toml /etc/agentd/templates/netprobe*.toml",
            check=False,
        )


def wait_online(a: Agentd, name: str) -> None:
    """Agentd.wait_online, with the unit's journal in the failure."""
    try:
        a.wait_online(name)
    except AssertionError:
        log = a.sh(f"journalctl -b --no-pager -n 40 -u agent-{name}.service", check=False)
        raise AssertionError(f"agent {name} not online:\n{log.stdout}") from None


def probe_argv(ctx: dict[str, Any], extra: dict[str, str] | None = None) -> list[str]:
    """The link-local target carries its scope as a number: naming the interface
    would make the agent look it up, and a failed look-up is no proof of denial."""
    scope = socket.if_nametoindex(HOST_IF)  # this process shares the machine's netns
    targets = {k: f"{v}%{scope}" if v.startswith("fe80:") else v for k, v in TARGETS.items()}
    targets.update(extra or {})
    udp = {k: targets[k] for k in UDP_TARGETS}
    return [
        "python3",
        f"{DIR}/probe.py",
        str(ctx["port"]),
        ctx["abstract"],
        json.dumps(targets),
        json.dumps(udp),
    ]


def control(a: Agentd, ctx: dict[str, Any]) -> dict[str, str] | None:
    """The probe as root outside any unit: every target answers (else None)."""
    got = json.loads(a.sh(probe_argv(ctx)).stdout)
    reached = [*TARGETS, *(f"udp_{k}" for k in UDP_TARGETS), "abstract"]
    return got if all(got[k] == "ok:hello" for k in reached) else None


def version_latency(a: Agentd) -> float:
    started = time.monotonic()
    a.busctl(
        "get-property",
        "org.agentos.agentd1",
        "/org/agentos/agentd1",
        "org.agentos.agentd1.Manager",
        "Version",
        user="bob",
    )
    return time.monotonic() - started


def attack(a: Agentd, agent: str, ctx: dict[str, Any]) -> tuple[dict[str, str], list[float]]:
    """Run the probe as AGENT's exec task; meanwhile time agentd answering bob."""
    command = " ".join(f"'{arg}'" for arg in probe_argv(ctx, GATEWAY))
    out = a.ctl(
        "task", "submit", f"probe {agent}", "--agent", agent, "--exec", command, user="alice"
    )
    tid = out.stdout.strip()
    latencies: list[float] = []

    def done() -> bool:
        latencies.append(version_latency(a))
        return a.ctl_json("task", "show", tid, user="alice")["status"] in ("completed", "failed")

    wait_for(done, 120, f"task {tid} of {agent}")
    task = a.ctl_json("task", "show", tid, user="alice")
    assert task["status"] == "completed", task
    return json.loads(json.loads(task["result"])["stdout"]), latencies


@pytest.fixture(scope="module")
def online(net: dict[str, Any], agentd: Agentd) -> dict[str, Any]:
    got, latencies = attack(agentd, "net-a", net)
    return {"got": got, "latencies": latencies}


@pytest.fixture(scope="module")
def hostns(net: dict[str, Any], agentd: Agentd) -> dict[str, Any]:
    got, latencies = attack(agentd, "net-host", net)
    return {"got": got, "latencies": latencies}


@pytest.fixture(scope="module")
def lan(net: dict[str, Any], agentd: Agentd) -> dict[str, Any]:
    got, latencies = attack(agentd, "net-lan", net)
    return {"got": got, "latencies": latencies}


@pytest.fixture(params=["own", "host"])
def probed(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The probes' outcome in either namespace, with the mode under "mode"."""
    got = request.getfixturevalue("online" if request.param == "own" else "hostns")
    return {**got, "mode": request.param}


def net_units(a: Agentd, agent: str) -> list[str]:
    out = a.sh(f"systemctl list-units --plain --no-legend 'agentd-net-{agent}-*'").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_the_unit_carries_the_deny_list(agentd: Agentd, net: dict[str, Any]) -> None:
    for unit, own in (("agent-net-a.service", True), ("agent-net-host.service", False)):
        p = agentd.show(unit, "IPAddressDeny", "RestrictAddressFamilies", "PrivateNetwork")
        for cidr in ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "10.0.0.0/8"):
            assert cidr in p["IPAddressDeny"].split(), (unit, p)
        assert "AF_INET" in p["RestrictAddressFamilies"], p
        assert p["PrivateNetwork"] == ("yes" if own else "no"), (unit, p)


def test_its_own_namespace_leaves_through_a_unit_with_the_same_deny_list(
    agentd: Agentd, net: dict[str, Any]
) -> None:
    """agentd.usernet: one slirp4netns unit per runtime, bound to the agent's
    unit, joined to its main process's namespace, under the profile's deny list."""
    pid = agentd.show("agent-net-a.service", "MainPID")["MainPID"]
    assert net_units(agentd, "net-a") == [f"agentd-net-net-a-{pid}.service"]
    assert net_units(agentd, "net-host") == []  # the host's namespace: nothing to carry
    p = agentd.show(
        f"agentd-net-net-a-{pid}.service", "IPAddressDeny", "BindsTo", "ActiveState", "MainPID"
    )
    assert p["ActiveState"] == "active" and p["BindsTo"] == "agent-net-a.service", p
    for cidr in ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "10.0.0.0/8", "192.168.0.0/16"):
        assert cidr in p["IPAddressDeny"].split(), p
    log = agentd.sh("journalctl -q -o cat -u agent-net-a.service").stdout
    assert "network up through tap0 after" in log, log  # before it claimed any task
    argv = agentd.sh(f"tr '\\0' ' ' < /proc/{p['MainPID']}/cmdline").stdout.split()
    assert argv[-2:] == [pid, "tap0"] and "--disable-host-loopback" in argv, argv
    status = agentd.proc_status(int(p["MainPID"]))
    assert int(status["CapEff"], 16) == 1 << 10, status  # the sandbox: CAP_NET_BIND_SERVICE
    root = f"/proc/{p['MainPID']}/root"  # what its sandbox left it: no host file, no bus
    etc = agentd.sh(f"ls -A {root}/etc").stdout.split()
    assert etc == ["ld.so.cache"], etc
    sockets = agentd.sh(f"find {root}/run -type s").stdout.split()
    assert sockets == [], sockets  # neither the bus nor systemd's private socket


@pytest.mark.parametrize("target", sorted({**LOOPBACK, **LINK_LOCAL, **PRIVATE}))
def test_online_agent_cannot_reach_host_link_local_or_private(
    probed: dict[str, Any], target: str
) -> None:
    got = probed["got"][target]
    if probed["mode"] == "own" and target in LOOPBACK:
        assert got == OWN_LOOPBACK, (target, probed["got"])
    elif probed["mode"] == "own" and target == "link_local6":
        assert got in NO_HOST_LINK, probed["got"]
    else:
        assert got in DENIED, (target, probed["mode"], probed["got"])


@pytest.mark.parametrize("target", ["public4", "public6", "udp_public4", "udp_public6"])
def test_online_agent_still_reaches_the_internet(probed: dict[str, Any], target: str) -> None:
    """TCP connect and UDP sendto/recvfrom: clients need no bind()."""
    assert probed["got"][target] == "ok:hello", (probed["mode"], probed["got"])


@pytest.mark.parametrize("target", ["udp_loopback4", "udp_loopback6"])
def test_online_agent_cannot_send_udp_to_the_host(probed: dict[str, Any], target: str) -> None:
    expected = (OWN_LOOPBACK, "timeout") if probed["mode"] == "own" else DENIED
    assert probed["got"][target] in expected, (probed["mode"], probed["got"])


@pytest.mark.parametrize("how", ["listen_tcp", "listen_unix"])
def test_online_agent_cannot_listen(probed: dict[str, Any], how: str) -> None:
    """listen_tcp listens unbound (the kernel would autobind an ephemeral port);
    listen_unix binds a path in its home and listens. In its own namespace the
    tool filter (agentd.nobind) refuses; in the host's, the unit's seccomp too."""
    assert probed["got"][how] == "err:EPERM", (probed["mode"], probed["got"])


@pytest.mark.parametrize("how", ["bind_udp", "bind_udp6", "bind_tcp", "bind_unix"])
def test_online_agents_code_cannot_bind(
    net: dict[str, Any], probed: dict[str, Any], how: str
) -> None:
    """UDP on 0.0.0.0 and [::], TCP on 0.0.0.0 (no listen), each on a port the
    kernel picks (a fixed one, in the namespace the machine shares with the host,
    was once taken by another socket: EADDRINUSE in the control), and a path in
    its home: the tool filter (agentd.nobind) refuses the bind itself."""
    assert net["control"][how].startswith("ok:"), net["control"]  # root could, outside
    assert probed["got"][how] == "err:EPERM", (probed["mode"], probed["got"])


def test_online_agents_code_cannot_use_io_uring(
    net: dict[str, Any], probed: dict[str, Any]
) -> None:
    """IORING_OP_BIND and _LISTEN would bind and listen past seccomp."""
    if net["control"]["io_uring"] != "ok:ring":
        pytest.skip(f"no io_uring on this kernel: {net['control']['io_uring']}")
    assert probed["got"]["io_uring"] == "err:EPERM", (probed["mode"], probed["got"])


def test_online_agents_code_cannot_write_the_runtime(probed: dict[str, Any]) -> None:
    """The runtime may bind (sd-bus): its tools, same UID, must not be able to
    write its memory. A child of the tool is writable (the attack is real
    here); the runtime is not (non-dumpable: hidden, or EACCES)."""
    got = probed["got"]
    assert got["runtime_alive"] == "ok:alive" and got["child_mem"] == "ok:opened", got
    assert got["runtime_mem"] in ("err:ENOENT", "err:EACCES", "err:EPERM"), got


def test_online_agent_cannot_reach_host_abstract_sockets(
    net: dict[str, Any], probed: dict[str, Any]
) -> None:
    """Its own namespace has abstract sockets of its own: the host's name is
    not there. In the host's, Landlock scopes them."""
    if probed["mode"] == "own":
        assert probed["got"]["abstract"] == "err:ECONNREFUSED", probed["got"]
        return
    # The kernel's ABI as root sees it, outside the sandbox: a unit that lost
    # its Landlock set-up must fail here, not skip.
    abi = int(net["control"]["landlock_abi"].removeprefix("ok:"))
    if abi < 6:
        pytest.skip(f"kernel Landlock ABI {abi} < 6: abstract sockets not isolated (documented)")
    assert probed["got"]["abstract"] == "err:EPERM", probed["got"]


def test_online_agent_keeps_the_bus_and_gets_resolveds_upstream(probed: dict[str, Any]) -> None:
    assert probed["got"]["bus"] == "ok:pong", probed["got"]
    assert probed["got"]["resolv"] == f"ok:{RESOLV_MARK}"


def test_agentd_answers_another_user_within_1s_meanwhile(probed: dict[str, Any]) -> None:
    assert probed["latencies"] and max(probed["latencies"]) < 1.0, probed["latencies"]


def test_profile_knobs_reach_the_kernel(lan: dict[str, Any]) -> None:
    got = lan["got"]
    for target in PRIVATE:
        assert got[target] == "ok:hello", (target, got)  # deny_private = false
    assert got["public4"] in DENIED, got  # ip_deny
    assert got["public6"] == "ok:hello", got
    for target in LOOPBACK:
        assert got[target] == OWN_LOOPBACK, (target, got)  # its own, empty
    assert got["link_local4"] in DENIED, got  # never reopened
    assert got["link_local6"] in NO_HOST_LINK, got
    assert max(lan["latencies"]) < 1.0, lan["latencies"]


def test_the_gateway_does_not_lead_to_the_hosts_loopback(
    net: dict[str, Any], lan: dict[str, Any]
) -> None:
    """With private ranges allowed, the agent may talk to slirp4netns's gateway
    (10.0.2.2): it must not be the host's 127.0.0.1, where the test listens."""
    assert net["control"]["loopback4"] == "ok:hello", net["control"]
    # slirp4netns answers a connection to its host-loopback-disabled gateway with
    # ICMP "network unreachable"; the unit's IPAddressDeny would drop it anyway
    assert lan["got"]["gateway"] in (*DENIED, "err:ENETUNREACH"), lan["got"]


def run_exec(a: Agentd, agent: str, command: str) -> dict[str, Any]:
    """COMMAND as AGENT's exec task: its result (exit_code, stdout, stderr)."""
    tid = a.ctl("task", "submit", "exec", "--agent", agent, "--exec", command, user="alice")
    tid = tid.stdout.strip()
    ended = ("completed", "failed")
    wait_for(lambda: a.ctl_json("task", "show", tid, user="alice")["status"] in ended, 60, tid)
    return dict(json.loads(a.ctl_json("task", "show", tid, user="alice")["result"]))


def test_an_online_agent_serves_its_endpoint_to_itself_alone(
    agentd: Agentd, net: dict[str, Any]
) -> None:
    """Issue 16: an online agent's runtime serves the OpenAI-compatible endpoint
    on its own loopback; the host's 127.0.0.1:8080 has nothing."""
    curl = (
        'echo "${OPENAI_BASE_URL:-none}"; curl -sS -m 10 -o /dev/null -w %{http_code} '
        '-H "Authorization: Bearer $OPENAI_API_KEY" "$OPENAI_BASE_URL/models"'
    )
    expect = {"net-a": "http://127.0.0.1:8080/v1\n200", "net-host": "none\n000"}
    for agent, expected in expect.items():
        result = run_exec(agentd, agent, curl)
        assert result["stdout"].strip() == expected, (agent, result)
    host = agentd.sh("curl -sS -m 5 http://127.0.0.1:8080/v1/models", check=False)
    assert host.returncode == 7, host  # connection refused: nothing of it on the host


def test_a_new_runtime_gets_a_new_way_out_and_a_stop_takes_it(
    agentd: Agentd, net: dict[str, Any], lan: dict[str, Any]
) -> None:
    """Restart=on-failure makes a new namespace: its runtime registers again and
    gets a slirp4netns of its own, the old one stopped; agentd restarting keeps
    it (same runtime); stopping the agent stops it (BindsTo)."""
    first = net_units(agentd, "net-lan")
    assert len(first) == 1, first
    agentd.sh("systemctl restart agentd")
    agentd.wait_online("net-lan")
    assert net_units(agentd, "net-lan") == first
    old_pid = agentd.show("agent-net-lan.service", "MainPID")["MainPID"]
    agentd.sh("systemctl kill -s KILL agent-net-lan.service")

    def moved() -> list[str] | None:
        pid = agentd.show("agent-net-lan.service", "MainPID")["MainPID"]
        units = net_units(agentd, "net-lan")
        fresh = pid not in ("0", old_pid) and units == [f"agentd-net-net-lan-{pid}.service"]
        return units if fresh else None

    wait_for(moved, 60, "a new slirp4netns for the new runtime, the old one gone")
    agentd.ctl("agent", "stop", "net-lan", user="alice")
    wait_for(lambda: net_units(agentd, "net-lan") == [], 30, "no slirp4netns once stopped")
