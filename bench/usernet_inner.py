"""Runs inside the disposable machine, as root, with agentd installed and a
user alice. What an online agent's own network namespace costs (agentd.usernet:
slirp4netns carries its traffic) beside the baseline measured in this same run,
an online agent in the host's namespace (profile namespace = "host"), the two
interleaved round by round:

  register   `agentctl agent start` of a stopped agent -> its runtime's "online
             as uid" line (Register answered: for the own namespace that
             includes starting its slirp4netns unit), ROUNDS starts per mode.
  connect    curl's time_connect to an HTTP server in a test network namespace
             behind a veth (198.18.50.2, the benchmarking range: the online
             profile lets it through), REQUESTS per round, each a new
             connection, run as an --exec task of the agent (its tools' path).
  request    curl's time_total of the same small GETs.
  download   curl's speed_download of one 64 MiB GET per round.

    /usr/bin/python3 bench/usernet_inner.py ROUNDS REQUESTS
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WWW = Path("/opt/agentd-bench/www")  # not /tmp: units have PrivateTmp
NS, HOST_IF, NS_IF = "bnet", "bnet-h", "bnet-n"
SERVER = "198.18.50.2"
PORT = 8000
MODES = {"own": "bench-own", "host": "bench-host"}
TEMPLATE = """description = "usernet bench"
profile = "{profile}"
capabilities = ["netbench"]
tools = ["shell"]
[limits]
memory_max = "256M"
cpu_quota = 100
tasks_max = 64
"""
HOST_PROFILE = (
    'description = "bench: online, host namespace"\nnetwork = "full"\nnamespace = "host"\n'
)


def sh(cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True).stdout


def ctl(*args: str) -> str:
    argv = ["runuser", "-u", "alice", "--", "agentctl", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def setup() -> None:
    WWW.mkdir(parents=True, exist_ok=True)
    (WWW / "small").write_bytes(b"x")
    with open(WWW / "big", "wb") as f:
        f.truncate(64 << 20)
    sh(
        f"ip netns add {NS} && ip link add {HOST_IF} type veth peer name {NS_IF} netns {NS}"
        f" && ip addr add 198.18.50.1/32 dev {HOST_IF} && ip link set {HOST_IF} up"
        f" && ip -n {NS} link set lo up && ip -n {NS} link set {NS_IF} up"
        f" && ip -n {NS} addr add {SERVER}/32 dev {NS_IF}"
        f" && ip -n {NS} route add 198.18.50.1/32 dev {NS_IF}"
        f" && ip -n {NS} route add default via 198.18.50.1 dev {NS_IF}"
        f" && ip route add {SERVER}/32 dev {HOST_IF}"
    )
    sh(
        f"systemd-run --unit agentd-bench-www --collect ip netns exec {NS} "
        f"python3 -m http.server --bind {SERVER} --directory {WWW} {PORT}"
    )
    Path("/etc/agentd/profiles").mkdir(parents=True, exist_ok=True)
    Path("/etc/agentd/templates").mkdir(parents=True, exist_ok=True)
    Path("/etc/agentd/profiles/bench-hostns.toml").write_text(HOST_PROFILE)
    Path("/etc/agentd/templates/bench-own.toml").write_text(TEMPLATE.format(profile="online"))
    Path("/etc/agentd/templates/bench-host.toml").write_text(
        TEMPLATE.format(profile="bench-hostns")
    )
    for name, template in MODES.items():
        ctl("agent", "create", f"net-{name}", "--template", template)
    deadline = time.monotonic() + 30
    while "200" not in sh(
        f"curl -s -o /dev/null -w %{{http_code}} http://{SERVER}:{PORT}/small", False
    ):
        if time.monotonic() > deadline:
            raise SystemExit("the bench's HTTP server did not come up")
        time.sleep(0.1)


def online_line_us(name: str, after_us: int) -> int | None:
    """The wall time (us) of the runtime's "online as uid" line after AFTER_US."""
    out = sh(f"journalctl -q -o json -u agent-{name}.service --since @{after_us / 1e6:.6f}")
    for line in out.splitlines():
        entry = json.loads(line)
        if f"agent {name} online as uid" in str(entry.get("MESSAGE", "")):
            return int(entry["__REALTIME_TIMESTAMP"])
    return None


def register_ms(mode: str) -> float:
    name = f"net-{mode}"
    ctl("agent", "stop", name)
    sh(f"while systemctl -q is-active agent-{name}.service; do sleep 0.05; done", False)
    started = time.time_ns() // 1000
    ctl("agent", "start", name)
    deadline = time.monotonic() + 60
    while (online := online_line_us(name, started)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not come online")
        time.sleep(0.05)
    return (online - started) / 1000


def transfers(mode: str, requests: int) -> dict[str, list[float]]:
    url = f"http://{SERVER}:{PORT}"
    command = (
        f"for i in $(seq {requests}); do curl -s -o /dev/null "
        f"-w '%{{time_connect}} %{{time_total}}\\n' {url}/small; done; "
        f"curl -s -o /dev/null -w 'big %{{speed_download}}\\n' {url}/big"
    )
    task = ctl("task", "submit", f"bench {mode}", "--agent", f"net-{mode}", "--exec", command)
    task = task.strip()
    ctl("task", "wait", task, "--timeout", "600")
    shown = json.loads(ctl("task", "show", task, "--json"))
    if shown["status"] != "completed":
        raise SystemExit(f"task {task}: {shown}")
    out: dict[str, list[float]] = {"connect_ms": [], "request_ms": [], "download_mib_s": []}
    for line in json.loads(shown["result"])["stdout"].splitlines():
        parts = line.split()
        if parts[0] == "big":
            out["download_mib_s"].append(float(parts[1]) / (1 << 20))
        else:
            out["connect_ms"].append(float(parts[0]) * 1000)
            out["request_ms"].append(float(parts[1]) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95),
            "mean": round(statistics.fmean(values), 3)}  # fmt: skip


def main(rounds: int, requests: int) -> dict[str, object]:
    setup()
    data: dict[str, dict[str, list[float]]] = {
        m: {"register_ms": [], "connect_ms": [], "request_ms": [], "download_mib_s": []}
        for m in MODES
    }
    for _ in range(rounds):
        for mode in MODES:  # interleaved: both see the same machine and load
            data[mode]["register_ms"].append(register_ms(mode))
            for key, values in transfers(mode, requests).items():
                data[mode][key].extend(values)
    report: dict[str, object] = {
        "rounds": rounds,
        "requests_per_round": requests,
        "slirp4netns": sh("slirp4netns --version").splitlines()[0],
    }
    for mode, figures in data.items():
        report[mode] = {key: summary(values) for key, values in figures.items()}
    own, host = report["own"], report["host"]  # type: ignore[index]
    report["own_vs_host"] = {
        key: round(own[key]["p50"] / host[key]["p50"], 2)  # type: ignore[index]
        for key in ("register_ms", "connect_ms", "request_ms", "download_mib_s")
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
