import errno
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentd import confine, sandbox
from agentd.errors import InvalidArgument, InvalidConfig, NoSuchTemplate
from agentd.templates import Catalog, Limits, Profile, parse_profile, parse_size

REPO = Path(__file__).resolve().parents[2]


def catalog(tmp_path: Path) -> Catalog:
    return Catalog(REPO / "policies", tmp_path)


def test_vendor_templates_parse_and_one_is_offline(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    templates = {t.name: t for t in cat.templates()}
    assert {"research", "writing", "ops", "sandbox"} <= set(templates)
    networks = {t.name: cat.profile(t.profile).network for t in templates.values()}
    assert "none" in networks.values()


def test_admin_override_replaces_vendor_template(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "writing.toml").write_text(
        'description = "site writer"\nprofile = "offline"\n[limits]\nmemory_max = "64M"\n'
    )
    t = catalog(tmp_path).template("writing")
    assert t.description == "site writer"
    assert t.limits.memory_max == 64 << 20


@pytest.mark.parametrize(
    "body",
    [
        "profile = 3\n",
        'capabilities = ["Bad Cap"]\n',
        'colour = "red"\n',
        '[limits]\nmemory_max = "1K"\n',
        "[limits]\ntasks_max = 1\n",
        "[limits]\nswap = 1\n",
        'program = "bot.py"\n',
        'program = ["python3", ""]\n',
        'program = ["../other/bot"]\n',
        "program = [" + ", ".join(['"a"'] * 65) + "]\n",
    ],
)
def test_bad_templates_are_refused_by_file_name(tmp_path: Path, body: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bad.toml").write_text(body)
    with pytest.raises(InvalidConfig, match=r"bad\.toml"):
        catalog(tmp_path).template("bad")


def test_a_template_program_reaches_the_runtime_settings(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bot.toml").write_text('program = ["python3", "bot.py", "-v"]\n')
    t = catalog(tmp_path).template("bot")
    assert t.program == ("python3", "bot.py", "-v")
    assert t.as_dict()["program"] == ["python3", "bot.py", "-v"]


def test_unknown_template_and_profile(tmp_path: Path) -> None:
    with pytest.raises(NoSuchTemplate):
        catalog(tmp_path).template("nope")
    with pytest.raises(NoSuchTemplate):
        catalog(tmp_path).template("../etc/passwd")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "orphan.toml").write_text('profile = "missing"\n')
    with pytest.raises(InvalidConfig, match="no sandbox profile"):
        catalog(tmp_path).template("orphan")


def test_limits_overrides_are_bounded() -> None:
    base = Limits()
    assert base.with_overrides({"memory_max": "1G"}).memory_max == 1 << 30
    assert base.with_overrides({"tasks_max": 64}).tasks_max == 64
    for bad in (
        {"memory_max": 1},
        {"cpu_quota": 0},
        {"cpu_quota": 10**6},
        {"tasks_max": 10**9},
        {"swap": 1},
        {"tasks_max": "many"},
    ):
        with pytest.raises(InvalidArgument):
            base.with_overrides(bad)
    assert parse_size("512M") == 512 << 20
    with pytest.raises(InvalidArgument):
        parse_size("lots")


def _props(network: str, namespace: str = "own") -> dict[str, list]:
    from agentd.templates import Profile

    ident = sandbox.AgentIdentity("web-1", 70001, 70001, Path("/home/agents/web-1"))
    props = sandbox.unit_properties(
        ident,
        Limits(256 << 20, 50, 32),
        Profile("p", network=network, namespace=namespace),
        runtime_command=Path("/usr/libexec/agentd/agentd-runtime"),
        slice_="agents.slice",
        heartbeat_interval=10,
    )
    out: dict[str, list] = {}
    for name, value in props:
        out.setdefault(name, []).append(value)
    return out


def test_unit_properties_carry_limits_identity_and_hardening() -> None:
    p = _props("none")
    assert p["User"] == [("s", "agent-web-1")]
    assert p["Slice"] == [("s", "agents.slice")]
    assert p["MemoryMax"] == [("t", 256 << 20)]
    assert p["CPUQuotaPerSecUSec"] == [("t", 500_000)]
    assert p["TasksMax"] == [("t", 32)]
    assert p["CollectMode"] == [("s", "inactive-or-failed")]
    assert p["NoNewPrivileges"] == [("b", True)]
    assert p["ProtectSystem"] == [("s", "strict")]
    assert p["ProtectHome"] == [("s", "tmpfs")]
    assert p["BindPaths"][0][1][0][:2] == ("/home/agents/web-1", "/home/agents/web-1")
    assert p["CapabilityBoundingSet"] == [("t", 0)]
    assert p["PrivateNetwork"] == [("b", True)]
    # inet for the OpenAI-compatible endpoint, on the namespace's own loopback only
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))]
    assert ("a(iayu)", [(2, bytes(4), 0), (10, bytes(16), 0)]) in p["IPAddressDeny"]
    assert p["IPAddressAllow"] == [
        ("a(iayu)", [(2, bytes([127, 0, 0, 0]), 8), (10, bytes(15) + b"\x01", 128)])
    ]
    assert ("(bas)", (True, ["@system-service"])) in p["SystemCallFilter"]


def test_network_profile_opens_only_inet() -> None:
    p = _props("full", namespace="host")
    assert "PrivateNetwork" not in p
    assert "IPAddressAllow" not in p  # loopback stays denied: the host's, not its own
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))]


# -- the online profile: what an online agent may reach ----------------------
RUNTIME = "/usr/libexec/agentd/agentd-runtime"
HOST = {"127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10"}
MULTI = {"224.0.0.0/4", "ff00::/8", "255.255.255.255/32"}
TAP = {"fe80::/10", "ff02::/16", "fd00::/64"}  # its own namespace: slirp4netns's link
PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"}


def _decoded(entries: list[Any]) -> set[str]:
    """IPAddressDeny/IPAddressAllow a(iayu) back into CIDR strings."""
    ((sig, value),) = entries
    assert sig == "a(iayu)"
    assert all(fam == (2 if len(addr) == 4 else 10) for fam, addr, _ in value)
    return {str(ipaddress.ip_network((bytes(addr), prefix))) for _fam, addr, prefix in value}


def _profile_props(profile: Profile) -> dict[str, list[Any]]:
    ident = sandbox.AgentIdentity("web-1", 70001, 70001, Path("/home/agents/web-1"))
    props = sandbox.unit_properties(
        ident,
        Limits(),
        profile,
        runtime_command=Path(RUNTIME),
        slice_="agents.slice",
        heartbeat_interval=10,
    )
    out: dict[str, list[Any]] = {}
    for name, value in props:
        out.setdefault(name, []).append(value)
    return out


def _online(tmp_path: Path, body: str) -> dict[str, list[Any]]:
    path = tmp_path / "net.toml"
    path.write_text('network = "full"\n' + body)
    return _profile_props(parse_profile(path))


def test_vendor_online_profile_denies_host_link_local_and_private(tmp_path: Path) -> None:
    online = catalog(tmp_path).profile("online")
    assert online.network == "full" and online.deny_private and not online.require_landlock
    assert online.ip_deny == () and online.ip_allow == ()
    assert online.namespace == "own" and online.usernet
    p = _profile_props(online)
    assert _decoded(p["IPAddressDeny"]) == HOST | MULTI | PRIVATE
    # its own namespace: the loopback it may reach is its own (the endpoint's)
    assert _decoded(p["IPAddressAllow"]) == {"127.0.0.0/8", "::1/128", *TAP}
    assert p["PrivateNetwork"] == [("b", True)]


def test_online_unit_in_its_own_namespace_waits_for_usernet_and_may_listen(
    tmp_path: Path,
) -> None:
    """Its loopback and abstract sockets are its own: the runtime listens there
    (its endpoint), is exec'd directly, and waits for agentd.usernet's tap."""
    p = _online(tmp_path, 'ip_allow = ["198.51.100.0/24"]\n')
    assert ("(bas)", (False, ["listen"])) not in p["SystemCallFilter"]
    assert ("(bas)", (False, sandbox.IO_URING_SYSCALLS)) in p["SystemCallFilter"]
    assert p["ExecStart"] == [("a(sasb)", [(RUNTIME, [RUNTIME], False)])]
    assert ("as", ["AGENTD_USERNET=tap0"]) in p["Environment"]
    assert _decoded(p["IPAddressAllow"]) == {"127.0.0.0/8", "::1/128", "198.51.100.0/24", *TAP}
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))]
    ro = p["BindReadOnlyPaths"][0][1]
    assert ro == [("/run/systemd/resolve/resolv.conf", "/etc/resolv.conf", True, 0)]


def test_online_unit_in_the_hosts_namespace_may_not_listen_but_may_use_landlock(
    tmp_path: Path,
) -> None:
    p = _online(tmp_path, 'namespace = "host"\n')
    assert "PrivateNetwork" not in p and "IPAddressAllow" not in p
    filters = p["SystemCallFilter"]
    assert filters[0] == ("(bas)", (True, ["@system-service"]))
    assert ("(bas)", (False, ["listen"])) in filters  # not bind: sd-bus binds
    assert ("(bas)", (True, sandbox.LANDLOCK_SYSCALLS)) in filters
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))]
    assert p["RestartPreventExitStatus"] == [("(aiai)", ([78], []))]
    ro = p["BindReadOnlyPaths"][0][1]
    assert ro == [("/run/systemd/resolve/resolv.conf", "/etc/resolv.conf", True, 0)]


def test_offline_unit_keeps_its_private_network_and_direct_exec() -> None:
    p = _props("none")
    assert p["ExecStart"] == [("a(sasb)", [(RUNTIME, [RUNTIME], False)])]
    assert ("(bas)", (False, ["listen"])) not in p["SystemCallFilter"]
    assert "BindReadOnlyPaths" not in p
    assert p["IPAddressAllow"] == [("a(iayu)", sandbox.addresses(sandbox.LOOPBACK))]


def test_online_unit_starts_the_runtime_through_confine_exec(tmp_path: Path) -> None:
    host = 'namespace = "host"\n'
    ((sig, [(path, argv, ignore)]),) = _online(tmp_path, host)["ExecStart"]
    assert sig == "a(sasb)" and path == argv[0] == sandbox.PYTHON and ignore is False
    assert argv[1:] == ["-I", "-S", sandbox.CONFINE, "best-effort", RUNTIME]
    assert Path(sandbox.CONFINE).is_file()
    assert not set("$%") & set(" ".join(argv))  # systemd would expand them
    ((_sig, [(_p, argv, _i)]),) = _online(tmp_path, host + "require_landlock = true\n")["ExecStart"]
    assert argv[4:] == ["required", RUNTIME]


def test_private_ranges_and_extra_cidrs_are_configurable(tmp_path: Path) -> None:
    p = _online(
        tmp_path,
        'deny_private = false\nip_deny = ["203.0.113.7/32", "2001:db8::/32"]\n'
        'ip_allow = ["198.51.100.0/24"]\n',
    )
    assert _decoded(p["IPAddressDeny"]) == HOST | MULTI | {"203.0.113.7/32", "2001:db8::/32"}
    assert _decoded(p["IPAddressAllow"]) == {"198.51.100.0/24", "127.0.0.0/8", "::1/128", *TAP}
    p = _online(tmp_path, 'namespace = "host"\nip_allow = ["10.255.255.53/32"]\n')
    assert _decoded(p["IPAddressDeny"]) >= PRIVATE
    assert _decoded(p["IPAddressAllow"]) == {"10.255.255.53/32"}


@pytest.mark.parametrize(
    ("network", "body", "match"),
    [
        ("full", 'ip_allow = ["127.0.0.53/32"]\n', "may not reopen.*127.0.0.53/32"),
        ("full", 'ip_allow = ["169.254.169.254/32"]\n', "may not reopen"),
        ("full", 'ip_allow = ["0.0.0.0/0"]\n', "may not reopen"),
        ("full", 'ip_allow = ["::/0"]\n', "may not reopen"),
        ("full", 'ip_allow = ["fe80::1/128"]\n', "may not reopen"),
        ("full", 'ip_deny = ["10.0.0.1/8"]\n', "ip_deny.*host bits"),
        ("full", 'ip_deny = "10.0.0.0/8"\n', "list of CIDR"),
        ("full", "ip_deny = [10]\n", "list of CIDR"),
        ("full", 'ip_deny = ["example.com"]\n', "ip_deny"),
        ("full", 'deny_private = "yes"\n', "deny_private must be of type bool"),
        ("full", "require_landlock = 1\n", "require_landlock must be of type bool"),
        ("none", 'ip_deny = ["10.0.0.0/8"]\n', 'apply to network = "full" only'),
        ("none", "deny_private = false\n", 'apply to network = "full" only'),
        ("full", "listen = true\n", "unknown key"),
        ("full", 'namespace = "shared"\n', "namespace must be one of own, host"),
        ("full", "namespace = 1\n", "namespace must be of type str"),
        ("none", 'namespace = "host"\n', 'apply to network = "full" only'),
    ],
)
def test_bad_network_settings_are_refused_by_file_name(
    tmp_path: Path, network: str, body: str, match: str
) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "badnet.toml").write_text(f'network = "{network}"\n{body}')
    with pytest.raises(InvalidConfig, match=r"badnet\.toml.*" + match):
        catalog(tmp_path).profile("badnet")


# -- confine_exec: the online unit's ExecStart ------------------------------
def test_confine_exec_execs_or_refuses_by_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    execs: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: execs.append((path, argv)))
    monkeypatch.setattr(confine, "scope_abstract_unix_sockets", lambda: None)
    confine.confine_exec(["required", RUNTIME, "x"])
    assert execs == [(RUNTIME, [RUNTIME, "x"])]
    monkeypatch.setattr(confine, "scope_abstract_unix_sockets", lambda: "kernel ABI 3 < 6")
    confine.confine_exec(["best-effort", RUNTIME])
    assert execs[-1] == (RUNTIME, [RUNTIME])
    with pytest.raises(SystemExit) as e:
        confine.confine_exec(["required", RUNTIME])
    assert e.value.code == 78 and len(execs) == 2


def test_confine_exec_really_hides_abstract_sockets_made_outside() -> None:
    """The ExecStart argv, run for real: the child cannot reach an abstract
    socket this test listens on, and says so (EPERM) where Landlock can."""
    name = f"agentd-unit-confine-{os.getpid()}"
    child = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect('\\0{name}'); print('connected')\n"
        "except OSError as e: print('errno', e.errno)\n"
    )
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind("\0" + name)
        srv.listen()
        argv = [sys.executable, "-I", "-S", sandbox.CONFINE, "best-effort"]
        r = subprocess.run(
            [*argv, sys.executable, "-c", child], capture_output=True, text=True, timeout=60
        )
    if "NOT isolated" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"errno {errno.EPERM}"


def test_a_catalog_that_trusts_its_reads_for_a_while_still_sees_new_files(
    tmp_path: Path,
) -> None:
    """agentd's catalog skips the stats for RECHECK seconds (the claim path looks a
    template up per claim), but a name it has not seen is looked for at once."""
    vendor = Path(__file__).resolve().parents[2] / "policies"
    admin = tmp_path / "etc"
    cat = Catalog(vendor, admin, recheck=3600)
    assert cat.template("sandbox").name == "sandbox"
    with pytest.raises(NoSuchTemplate):
        cat.template("fresh")
    (admin / "templates").mkdir(parents=True)
    (admin / "templates" / "fresh.toml").write_text(
        (vendor / "templates" / "sandbox.toml").read_text()
    )
    assert cat.template("fresh").name == "fresh"
