"""Artifacts as root sees them: resolved beneath the agent's home with no link
followed anywhere (openat2 and the descriptor walk, each), only the agent's own
regular files, bounded by size before a byte is read, read back only as
registered. Files are real, in tmp_path; sparse ones are made by os.truncate."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agentd.agent import Agent
from agentd.errors import Busy, Conflict, InvalidArgument, PermissionDenied
from agentd.tasks import artifacts as A
from agentd.tasks.model import (
    MAX_ARTIFACT_READ,
    MAX_ARTIFACT_SIZE,
    MAX_TASK_ARTIFACTS_SIZE,
    Artifact,
)

ROOT = os.geteuid() == 0


def _openat2_works() -> bool:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(A._openat2(fd, "etc", os.O_RDONLY | os.O_DIRECTORY, A._RESOLVE))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2" and not _openat2_works():
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(A, "use_openat2", request.param == "openat2")
    if request.param == "walk":  # and never reached: a call would fail the test
        monkeypatch.setattr(A, "_openat2", _never)
    return str(request.param)


def _never(*args: object) -> int:
    raise AssertionError("openat2 used while testing the walk")


class Home:
    """An agent (name, uid, home) whose home is a real directory in tmp_path."""

    def __init__(self, tmp_path: Path, uid: int = os.getuid()) -> None:
        self.path = tmp_path / "home"
        (self.path / "artifacts").mkdir(parents=True)
        (self.path / "artifacts" / "report.txt").write_text("hello")
        self.agent = cast(Agent, SimpleNamespace(name="a1", uid=uid, home=self.path))

    def inspect(self, *pairs: tuple[str, str]) -> list[Artifact]:
        return A.inspect(self.agent, list(pairs))


@pytest.fixture
def h(tmp_path: Path) -> Home:
    return Home(tmp_path)


HELLO = hashlib.sha256(b"hello").hexdigest()


# -- the resolver --------------------------------------------------------------------------
def test_a_regular_file_of_the_agent_is_hashed(h: Home, resolver: str) -> None:
    (art,) = h.inspect(("report.txt", "artifacts/./report.txt"))
    assert (art.size, art.sha256, art.type) == (5, HELLO, "text/plain")
    assert art.path == os.path.join(os.path.realpath(h.path), "artifacts", "report.txt")


def test_a_link_in_an_intermediate_component_is_refused(h: Home, resolver: str) -> None:
    (h.path / "real").mkdir()
    (h.path / "real" / "r.txt").write_text("inside")
    (h.path / "via").symlink_to("real")  # even to a directory inside the home
    (h.path / "out").symlink_to("/etc")
    for path in ("via/r.txt", "out/passwd", "out/../artifacts/report.txt"):
        with pytest.raises(PermissionDenied):
            h.inspect(("x", path))
    with pytest.raises(PermissionDenied, match="symbolic link"):
        h.inspect(("x", "via/r.txt"))


def test_a_link_as_the_last_component_is_refused(h: Home, resolver: str) -> None:
    (h.path / "artifacts" / "in").symlink_to("report.txt")
    (h.path / "artifacts" / "out").symlink_to("/etc/passwd")
    for path in ("artifacts/in", "artifacts/out"):
        with pytest.raises(PermissionDenied, match="symbolic link"):
            h.inspect(("x", path))


def test_dot_dot_and_absolute_paths_are_refused(h: Home, resolver: str) -> None:
    (h.path.parent / "outside.txt").write_text("x")
    inside = str(h.path / "artifacts" / "report.txt")
    for path in ("../outside.txt", "artifacts/../artifacts/report.txt", "/etc/passwd", inside):
        with pytest.raises(PermissionDenied, match="outside the agent's home"):
            h.inspect(("x", path))


def _unblocked(fn: Callable[[], object], fifo: Path) -> BaseException:
    """What FN raised; a failed test, not a hung one, if opening FIFO blocks it."""
    caught: list[BaseException] = []

    def attempt() -> None:
        try:
            fn()
        except BaseException as e:
            caught.append(e)

    t = threading.Thread(target=attempt)
    t.start()
    t.join(10)
    if t.is_alive():  # open(2) blocked: give it a writer so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join()
        pytest.fail("opening a FIFO blocked")
    assert caught, "no error"
    return caught[0]


def test_a_fifo_is_refused_without_hanging(h: Home, resolver: str) -> None:
    fifo = h.path / "artifacts" / "pipe"
    os.mkfifo(fifo)
    e = _unblocked(lambda: h.inspect(("p", "artifacts/pipe")), fifo)
    assert isinstance(e, InvalidArgument) and "not a regular file" in str(e)


def test_directories_sockets_and_devices_are_refused(h: Home, resolver: str) -> None:
    (h.path / "artifacts" / "dir").mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(h.path / "artifacts" / "sock"))
        for path in ("artifacts/dir", "artifacts/sock", "artifacts/report.txt/x"):
            with pytest.raises(InvalidArgument, match="artifact 'x'"):
                h.inspect(("x", path))


@pytest.mark.skipif(not ROOT, reason="mknod of a device needs root")
def test_a_device_node_is_refused(h: Home, resolver: str) -> None:
    dev = h.path / "artifacts" / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(InvalidArgument, match="artifact 'n'"):
        h.inspect(("n", "artifacts/null"))


def test_a_file_of_another_uid_is_refused(h: Home, resolver: str) -> None:
    other = Home(h.path.parent / "o", uid=os.getuid() + 1)
    with pytest.raises(InvalidArgument, match="not owned by the agent"):
        other.inspect(("r", "artifacts/report.txt"))


@pytest.mark.skipif(not ROOT, reason="chown to another owner needs root")
def test_a_file_chowned_to_another_owner_is_refused(h: Home, resolver: str) -> None:
    os.chown(h.path / "artifacts" / "report.txt", 12345, 12345)
    with pytest.raises(InvalidArgument, match="not owned by the agent"):
        h.inspect(("r", "artifacts/report.txt"))


def test_bad_requests_are_refused_before_touching_a_file(h: Home) -> None:
    good = "artifacts/report.txt"
    bad = [
        [("../bad", good)],
        [("x", "")],
        [("x", "a" * 5000)],
        [("x", "artifacts/report.txt\0")],
        [("x", good), ("x", good)],
        [(f"n{i}", good) for i in range(257)],
    ]
    for pairs in bad:
        with pytest.raises(InvalidArgument):
            A.inspect(h.agent, pairs)
    assert A.inspect(h.agent, []) == []


def test_without_openat2_the_walk_takes_over(h: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    def enosys(*args: object) -> int:
        raise OSError(errno.ENOSYS, "no openat2")

    monkeypatch.setattr(A, "use_openat2", True)
    monkeypatch.setattr(A, "_openat2", enosys)
    assert h.inspect(("r", "artifacts/report.txt"))[0].sha256 == HELLO
    assert A.use_openat2 is False
    (h.path / "l").symlink_to("artifacts")
    with pytest.raises(PermissionDenied):
        h.inspect(("r", "l/report.txt"))


# -- the size limits -----------------------------------------------------------------------
def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> tuple[str, int]:
        raise AssertionError("a byte was read")

    monkeypatch.setattr(A, "hash_fd", refuse)


def test_an_artifact_over_the_limit_is_refused_before_a_read(
    h: Home, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sparse(h.path / "artifacts" / "big", MAX_ARTIFACT_SIZE + 1)
    _no_reading(monkeypatch)
    with pytest.raises(InvalidArgument, match=f"limit of {MAX_ARTIFACT_SIZE} bytes .1 GiB."):
        h.inspect(("r", "artifacts/report.txt"), ("big", "artifacts/big"))


def test_a_huge_sparse_file_is_refused_at_once(
    h: Home, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = h.path / "artifacts" / "huge"
    for size in (16 << 40, 1 << 40):  # 16 TiB where the filesystem allows (tmpfs), else 1 TiB
        try:
            _sparse(big, size)
            break
        except OSError as e:
            assert e.errno == errno.EFBIG
    _no_reading(monkeypatch)
    with pytest.raises(InvalidArgument, match="sparse, counted at its size"):
        h.inspect(*[(f"h{i}", "artifacts/huge") for i in range(256)])


def test_a_report_over_the_task_limit_is_refused_before_a_read(
    h: Home, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sparse(h.path / "artifacts" / "gib", MAX_ARTIFACT_SIZE)
    _no_reading(monkeypatch)
    n = MAX_TASK_ARTIFACTS_SIZE // MAX_ARTIFACT_SIZE + 1
    with pytest.raises(InvalidArgument, match=f"limit of {MAX_TASK_ARTIFACTS_SIZE} bytes .4 GiB."):
        h.inspect(*[(f"g{i}", "artifacts/gib") for i in range(n)])


def test_the_task_limit_counts_every_listing(h: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "MAX_TASK_ARTIFACTS_SIZE", 20)
    assert len(h.inspect(*[(f"r{i}", "artifacts/report.txt") for i in range(4)])) == 4
    with pytest.raises(InvalidArgument, match="25 bytes together, over the limit of 20"):
        h.inspect(*[(f"r{i}", "artifacts/report.txt") for i in range(5)])


def test_a_file_grown_between_counting_and_hashing_is_refused(
    h: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(A, "MAX_TASK_ARTIFACTS_SIZE", 12)
    (h.path / "artifacts" / "b").write_text("world")
    real, calls = A._open_checked, []

    def growing(homefd: int, name: str, path: str, uid: int) -> tuple[int, int]:
        calls.append(name)
        if len(calls) == 3:  # the hashing pass begins: b grows
            (h.path / "artifacts" / "b").write_text("world, and more")
        return real(homefd, name, path, uid)

    monkeypatch.setattr(A, "_open_checked", growing)
    with pytest.raises(InvalidArgument, match="20 bytes together, over the limit of 12"):
        h.inspect(("a", "artifacts/report.txt"), ("b", "artifacts/b"))


def test_hashing_reads_no_more_than_fstat_said(h: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    path = h.path / "artifacts" / "report.txt"
    real, calls = A._open_checked, []

    def then_grows(homefd: int, name: str, path_: str, uid: int) -> tuple[int, int]:
        fd, size = real(homefd, name, path_, uid)
        calls.append(name)
        if len(calls) == 2:  # opened for hashing, fstat done: now it grows
            with open(path, "ab") as f:
                f.write(b"x" * (1 << 20))
        return fd, size

    monkeypatch.setattr(A, "_open_checked", then_grows)
    (art,) = h.inspect(("r", "artifacts/report.txt"))
    assert (art.size, art.sha256) == (5, HELLO)


def test_one_report_per_agent_at_a_time(h: Home) -> None:
    with A._one_report_at_a_time(h.agent):
        with pytest.raises(Busy, match="already reporting"):
            h.inspect(("r", "artifacts/report.txt"))
        other = cast(Agent, SimpleNamespace(name="a2", uid=os.getuid() + 7, home=h.path))
        with pytest.raises(InvalidArgument, match="not owned"):  # not Busy: another agent
            A.inspect(other, [("r", "artifacts/report.txt")])
    assert h.inspect(("r", "artifacts/report.txt"))[0].sha256 == HELLO


# -- reading back --------------------------------------------------------------------------
@pytest.fixture
def registered(h: Home) -> Artifact:
    return h.inspect(("report.txt", "artifacts/report.txt"))[0]


def test_read_returns_what_was_registered(registered: Artifact, resolver: str) -> None:
    assert A.read(registered) == b"hello"


def test_rows_stored_with_realpath_still_read(h: Home, resolver: str) -> None:
    old = Artifact(
        1, "r", "text/plain", os.path.realpath(h.path / "artifacts" / "report.txt"), 5, HELLO
    )
    assert A.read(old) == b"hello"


def test_a_link_put_in_the_path_since_is_refused(
    h: Home, registered: Artifact, resolver: str
) -> None:
    (h.path / "artifacts").rename(h.path / "moved")
    (h.path / "artifacts").symlink_to("moved")  # same bytes behind it: still refused
    with pytest.raises(Conflict, match="link"):
        A.read(registered)


def test_changed_swapped_or_gone_files_are_refused(
    h: Home, registered: Artifact, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = h.path / "artifacts" / "report.txt"
    path.write_text("HELLO")  # same size, other bytes
    with pytest.raises(Conflict, match="changed"):
        A.read(registered)
    monkeypatch.setattr(A, "_read_at_most", _never)  # not read at all from here on
    _sparse(path, 1 << 40)  # grown: refused by its size
    with pytest.raises(Conflict, match="changed"):
        A.read(registered)
    path.unlink()
    os.mkfifo(path)  # a FIFO now: refused, no hang
    e = _unblocked(lambda: A.read(registered), path)
    assert isinstance(e, Conflict) and "changed" in str(e)
    path.unlink()
    with pytest.raises(InvalidArgument, match="cannot be read"):
        A.read(registered)


def test_read_refuses_more_than_a_message_carries(registered: Artifact) -> None:
    big = Artifact(1, "big", "x", registered.path, MAX_ARTIFACT_READ + 1, registered.sha256)
    with pytest.raises(InvalidArgument, match="more than"):
        A.read(big)
