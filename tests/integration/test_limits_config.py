"""Settings from /etc/agentd/agentd.toml that bound creation: the per-owner limit
and the UID range. agentd is restarted with each and restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentd_helpers import Agentd

from agentd.names import account_name

pytestmark = pytest.mark.integration
CONF = "/etc/agentd/agentd.toml"


@pytest.fixture
def config(agentd: Agentd) -> Iterator[callable]:
    original = agentd.sh(["cat", CONF]).stdout

    def apply(text: str) -> None:
        agentd.m.write_file(CONF, original + "\n" + text, mode=0o644)
        agentd.restart()

    yield apply
    agentd.m.write_file(CONF, original, mode=0o644)
    agentd.restart()


def test_per_owner_limit(agentd: Agentd, config) -> None:
    config("max_agents_per_owner = 1\n")
    agentd.sh("id dave >/dev/null 2>&1 || useradd -m dave")
    agentd.create("lim-one", user="dave")
    r = agentd.ctl("agent", "create", "lim-two", "--template", "sandbox", user="dave", check=False)
    assert r.returncode == 1 and "(LimitExceeded)" in r.stderr
    assert agentd.sh(["getent", "passwd", account_name("lim-two")], check=False).returncode == 2
    agentd.ctl("agent", "rm", "lim-one", user="dave")


def test_exhausted_uid_range(agentd: Agentd, config) -> None:
    used = {a["uid"] for a in agentd.ctl_json("agent", "list")}
    free = next(u for u in range(90000, 99999) if u not in used and u + 1 not in used)
    config(f"uid_min = {free}\nuid_max = {free}\n")
    agentd.create("range-one")
    r = agentd.ctl("agent", "create", "range-two", "--template", "sandbox", check=False)
    assert r.returncode == 1 and "(LimitExceeded)" in r.stderr and "exhausted" in r.stderr
    assert agentd.uid_of(account_name("range-one")) == free
    agentd.ctl("agent", "rm", "range-one")


def test_bad_config_is_refused_clearly(agentd: Agentd) -> None:
    r = agentd.sh(["/usr/libexec/agentd/agentd", "--check-config", "--config", "/dev/null"])
    assert r.returncode == 0
    agentd.m.write_file("/tmp/bad.toml", "uid_min = 500\nuid_max = 600\n", mode=0o644)
    r = agentd.sh(
        ["/usr/libexec/agentd/agentd", "--check-config", "--config", "/tmp/bad.toml"], check=False
    )
    assert r.returncode == 78 and "overlaps" in r.stderr


def test_a_start_job_that_fails_is_reported_and_audited(agentd: Agentd, config) -> None:
    """systemd accepts the unit but cannot exec the runtime: the job fails."""
    config('runtime_command = "/usr/libexec/agentd/no-such-runtime"\n')
    agentd.create("job-fails", user="alice")
    r = agentd.ctl("agent", "start", "job-fails", user="alice", check=False)
    assert r.returncode == 1 and "(JobFailed)" in r.stderr
    assert "ended with job result 'failed'" in r.stderr
    row = agentd.audit("agent.start", "job-fails")[-1]
    assert row["result"] == "failed" and row["detail"]["job_result"] == "failed"
    agentd.ctl("agent", "rm", "job-fails", user="alice")
