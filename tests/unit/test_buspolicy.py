"""agentd refuses an agents_group its D-Bus policy does not confine."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd import buspolicy
from agentd.errors import InvalidConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "policies" / buspolicy.POLICY_FILE).read_text()


def test_the_shipped_policy_confines_the_default_group(tmp_path: Path) -> None:
    (tmp_path / buspolicy.POLICY_FILE).write_text(SHIPPED)
    assert "agentd-agents" in buspolicy.confined_groups([tmp_path])
    buspolicy.check("agentd-agents", [tmp_path])


def test_another_group_without_a_policy_block_is_refused(tmp_path: Path) -> None:
    (tmp_path / buspolicy.POLICY_FILE).write_text(SHIPPED)
    with pytest.raises(InvalidConfig, match="confines no such group"):
        buspolicy.check("robots", [tmp_path])


def test_an_admins_override_in_etc_counts(tmp_path: Path) -> None:
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    usr.mkdir()
    etc.mkdir()
    (usr / buspolicy.POLICY_FILE).write_text(SHIPPED)
    (etc / buspolicy.POLICY_FILE).write_text(SHIPPED.replace("agentd-agents", "robots"))
    buspolicy.check("robots", [usr, etc])


def test_no_policy_file_is_left_to_dbus(tmp_path: Path) -> None:
    buspolicy.check("robots", [tmp_path])


def test_a_broken_policy_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / buspolicy.POLICY_FILE).write_text("<busconfig>")
    with pytest.raises(InvalidConfig, match="not a D-Bus policy"):
        buspolicy.check("agentd-agents", [tmp_path])
