from pathlib import Path

import pytest

from agentd import sandbox
from agentd.errors import InvalidArgument, InvalidConfig, NoSuchTemplate
from agentd.templates import Catalog, Limits, parse_size

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
    ],
)
def test_bad_templates_are_refused_by_file_name(tmp_path: Path, body: str) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "bad.toml").write_text(body)
    with pytest.raises(InvalidConfig, match=r"bad\.toml"):
        catalog(tmp_path).template("bad")


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


def _props(network: str) -> dict[str, list]:
    from agentd.templates import Profile

    ident = sandbox.AgentIdentity("web-1", 70001, 70001, Path("/home/agents/web-1"))
    props = sandbox.unit_properties(
        ident,
        Limits(256 << 20, 50, 32),
        Profile("p", network=network),
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
    assert p["User"] == [("s", "web-1")]
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
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX"]))]
    assert ("a(iayu)", [(2, bytes(4), 0), (10, bytes(16), 0)]) in p["IPAddressDeny"]
    assert ("(bas)", (True, ["@system-service"])) in p["SystemCallFilter"]


def test_network_profile_opens_only_inet() -> None:
    p = _props("full")
    assert "PrivateNetwork" not in p
    assert p["RestrictAddressFamilies"] == [("(bas)", (True, ["AF_UNIX", "AF_INET", "AF_INET6"]))]
