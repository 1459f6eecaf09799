"""Shared pytest setup: the `integration` marker and the `machine` fixture.

Integration tests (``@pytest.mark.integration``) run in one disposable systemd machine
per session (tests/testbed), which needs root; without root they are skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS.parent

if str(TESTS) not in sys.path:  # so `testbed` imports whatever the rootdir/import mode
    sys.path.insert(0, str(TESTS))

from testbed.machine import Machine  # noqa: E402

pytest_plugins = ["leaks"]  # tests/leaks.py: unit and inference tests must not leak

NOT_ROOT = "integration tests boot a systemd machine in new namespaces: run pytest as root"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs in the disposable systemd machine (root only)"
    )
    config.addinivalue_line(
        "markers", "slow: needs the 1.5B model (make model-1.5b); run by tools/test.sh --slow"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", help="also run the tests marked slow (the 1.5B model)"
    )


SLOW = "slow: needs the 1.5B model; run with tools/test.sh --slow (or pytest --slow)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (config.getoption("--slow") or os.environ.get("AGENTD_SLOW_TESTS") == "1"):
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(pytest.mark.skip(reason=SLOW))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NOT_ROOT)
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(skip)


def _provision(machine: Machine) -> None:
    """Install the project into a freshly booted machine (make install, start agentd).

    Runs once per session, right after boot; empty until the install steps exist.
    """


@pytest.fixture(scope="session")
def machine() -> Iterator[Machine]:
    """One booted machine for the session, with the project tree bound at its host path;
    always powered off (and its cgroups removed) at the end, even on failure."""
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    m = Machine.boot(binds=[PROJECT_ROOT])
    try:
        _provision(m)
        yield m
    finally:
        m.poweroff()
