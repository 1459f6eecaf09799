from pathlib import Path

import pytest

from agentd import config, names
from agentd.errors import InvalidConfig, InvalidName


@pytest.mark.parametrize("name", ["a", "research-1", "x" * 26, "a1-b2-c3", "docker", "postgres"])
def test_valid_names(name: str) -> None:
    assert names.check_syntax(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Upper",
        "has space",
        "a/b",
        "a.b",
        "x" * 27,
        "1abc",
        "-a",
        "a-",
        "a--b",
        "a_b",
        "root",
        "daemon",
        "nobody",
        "agentd-admin",
        "ünï",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        names.check_syntax(name)


def test_existing_account_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    taken = pwd.getpwnam("root")
    monkeypatch.setattr(
        names.pwd, "getpwnam", lambda n: taken if n == "agent-x" else pwd.getpwnam(n)
    )
    with pytest.raises(InvalidName, match="'agent-x' is an existing system user"):
        names.check_free_account("x")


def test_a_system_accounts_name_is_not_its_agents_account() -> None:
    """root, daemon... exist; agent 'daemon' would be agent-daemon (reserved anyway)."""
    names.check_free_account("bin-tools")  # agent-bin-tools: no such account here
    assert names.account_name("docker") == "agent-docker"


def test_unit_name() -> None:
    assert names.unit_name("web-1") == "agent-web-1.service"


def test_account_names_fit_useradd_and_invert() -> None:
    longest = "x" * names.MAX_LEN
    assert len(names.account_name(longest)) == names.ACCOUNT_MAX_LEN == 32
    for name in ("a", "web-1", "agent-x", longest):
        assert names.agent_of_account(names.account_name(name)) == name
        assert names.unit_name(name) == names.account_name(name) + ".service"
    assert names.agent_of_account("docker") is None
    assert names.agent_of_account("agent-") is None
    assert names.agent_of_account("agentd-agents") is None


def test_default_range_is_clear_of_documented_ranges() -> None:
    cfg = config.Config()
    config.check_uid_range(cfg.uid_min, cfg.uid_max)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(500, 600), (1000, 2000), (61184, 61200), (65534, 65534), (100000, 100010), (90000, 80000)],
)
def test_uid_ranges_overlapping_reserved_ones_are_refused(lo: int, hi: int) -> None:
    with pytest.raises(InvalidConfig):
        config.check_uid_range(lo, hi)


def test_config_load_validates(tmp_path: Path) -> None:
    f = tmp_path / "agentd.toml"
    f.write_text("uid_min = 70000\nuid_max = 70009\nmax_agents_per_owner = 3\n")
    cfg = config.load(f)
    assert (cfg.uid_min, cfg.uid_max, cfg.max_agents_per_owner) == (70000, 70009, 3)
    f.write_text("uid_mni = 70000\n")
    with pytest.raises(InvalidConfig, match="unknown setting 'uid_mni'"):
        config.load(f)
    f.write_text('max_agents_per_owner = "many"\n')
    with pytest.raises(InvalidConfig, match="expected an integer"):
        config.load(f)
    f.write_text('home_root = "relative/path"\n')
    with pytest.raises(InvalidConfig, match="absolute"):
        config.load(f)
    f.write_text("this is [not toml")
    with pytest.raises(InvalidConfig):
        config.load(f)


def test_missing_config_file_means_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "absent.toml").uid_min == 70000


def test_model_table_is_left_to_the_service_and_quota_keys_checked(tmp_path: Path) -> None:
    f = tmp_path / "agentd.toml"
    for ok in ('model = "/srv/x.gguf"\n', "[model]\ncontext = 512\n"):
        f.write_text(ok)
        config.load(f)
    for bad in (
        "model = 3\n",
        'model = "relative.gguf"\n',
        'token_quota_period = "yearly"\n',
        "agent_token_quota = -1\n",
    ):
        f.write_text(bad)
        with pytest.raises(InvalidConfig):
            config.load(f)
    f.write_text('agent_token_quota = 5000\ntoken_quota_period = "weekly"\n')
    cfg = config.load(f)
    assert (cfg.agent_token_quota, cfg.token_quota_period) == (5000, "weekly")
