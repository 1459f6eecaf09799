"""agentd.homes and its helper (agentd.homework) on real directories in tmp.

A home is hostile input: these build what an agent could (2,000 levels deep,
a 16 TiB sparse file, links out of the home, a home that is a link) and
check that archiving and removal are iterative, bounded, never follow a link,
keep agentd's event loop free, and that cancelling or timing out kills the
helper and everything it started.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentd import homework
from agentd.errors import AlreadyExists
from agentd.homes import ASIDE, HomeLimits, Homes, HomeWorkError

DEPTH = 2000
TIB16 = 16 << 40


def homes_in(tmp: Path, **limits: float) -> Homes:
    root = tmp / "homes"
    root.mkdir(exist_ok=True)
    return Homes(root, tmp / "archive", HomeLimits(**limits))  # type: ignore[arg-type]


def deep_chain(home: Path, depth: int = DEPTH) -> None:
    """HOME/d/d/... DEPTH levels, a file at each: made through directory fds,
    since the path is longer than PATH_MAX."""
    home.mkdir()
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)


def sparse(path: Path) -> int:
    """A 16 TiB hole (or as near as the filesystem allows: ext4 stops 4 KiB short)."""
    with open(path, "wb") as f:
        for size in (TIB16, TIB16 - 4096):
            try:
                f.truncate(size)
                return size
            except OSError as e:
                if e.errno != errno.EFBIG:
                    raise
    pytest.skip("this filesystem has no room for a 16 TiB sparse file")


def members(archive: Path) -> list[str]:
    out = subprocess.run(["tar", "-tvzf", str(archive)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def loop_lag(work: asyncio.Future[object]) -> float:
    """The longest the event loop went without running a 5 ms ticker while WORK ran."""
    worst, last = 0.0, time.monotonic()
    while not work.done():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    return worst


# -- removal ---------------------------------------------------------------------------
def test_remove_deletes_a_tree_2000_levels_deep(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    deep_chain(homes.path("deep"))
    fds = open_fds()
    result = asyncio.run(homes.remove("deep"))
    assert not homes.exists("deep")
    assert result["removed"] == 2 * DEPTH + 1
    assert open_fds() == fds


def test_remove_never_follows_links_out_of_the_home(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious").write_text("keep me")
    (outside / "sub" / "also").write_text("keep me too")
    home = homes.path("linky")
    (home / "a" / "b").mkdir(parents=True)
    (home / "to-dir").symlink_to(outside)
    (home / "a" / "to-file").symlink_to(outside / "precious")
    (home / "a" / "b" / "up").symlink_to("../../../../outside/sub")
    asyncio.run(homes.remove("linky"))
    assert not homes.exists("linky")
    assert (outside / "precious").read_text() == "keep me"
    assert (outside / "sub" / "also").read_text() == "keep me too"


def test_a_home_that_is_a_link_is_unlinked_not_followed(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    homes.path("trick").symlink_to(outside)
    info = asyncio.run(homes.archive("trick", tmp_path / "archive" / "t.tar.gz"))
    assert "not a directory" in str(info["note"])
    asyncio.run(homes.remove("trick"))
    assert not homes.exists("trick") and (outside / "precious").exists()


def test_removing_keeps_the_event_loop_free(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    home = homes.path("wide")
    home.mkdir()
    for i in range(200):
        d = home / f"d{i}"
        d.mkdir()
        for j in range(100):
            (d / f"f{j}").touch()

    async def main() -> float:
        work = asyncio.ensure_future(homes.remove("wide"))
        lag = await loop_lag(work)
        await work
        return lag

    lag = asyncio.run(main())
    assert not homes.exists("wide")
    assert lag < 0.2, f"the event loop stalled {lag:.3f} s"


# -- archive ----------------------------------------------------------------------------
def test_archive_of_a_tree_2000_levels_deep(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    deep_chain(homes.path("deep"))
    dest = tmp_path / "archive" / "deep.tar.gz"
    try:
        info = asyncio.run(homes.archive("deep", dest))
        assert info["entries"] == 2 * DEPTH
        lines = members(dest)
        assert len(lines) == 2 * DEPTH + 1
        assert (dest.stat().st_mode & 0o777) == 0o600
        assert homes.exists("deep")  # archiving deletes nothing
    finally:  # pytest's own clean-up of tmp recurses: it cannot delete this tree
        asyncio.run(homes.remove("deep"))


def test_a_16_tib_sparse_file_is_archived_sparse_within_a_bound(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    home = homes.path("holes")
    home.mkdir()
    size = sparse(home / "huge")
    (home / "note").write_text("real data")
    dest = tmp_path / "archive" / "holes.tar.gz"
    started = time.monotonic()
    info = asyncio.run(asyncio.wait_for(homes.archive("holes", dest), 60))
    took = time.monotonic() - started
    assert took < 30, f"archiving a sparse file took {took:.1f} s"
    assert dest.stat().st_size < 1 << 20 and int(str(info["bytes"])) < 1 << 20
    (huge,) = [line for line in members(dest) if line.endswith("holes/huge")]
    assert str(size) in huge.split()
    asyncio.run(homes.remove("holes"))
    assert not homes.exists("holes")


def test_archive_keeps_links_as_links(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("secret outside the home")
    home = homes.path("linky")
    home.mkdir()
    (home / "to-dir").symlink_to(outside)
    (home / "to-file").symlink_to(outside / "precious")
    os.mkfifo(home / "fifo")  # tar must not open it (it would block)
    dest = tmp_path / "archive" / "linky.tar.gz"
    asyncio.run(asyncio.wait_for(homes.archive("linky", dest), 60))
    lines = members(dest)
    kinds = {line.split()[5]: line[0] for line in lines}
    assert kinds == {"linky/": "d", "linky/to-dir": "l", "linky/to-file": "l", "linky/fifo": "p"}


def test_a_home_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    homes = homes_in(tmp_path, archive_max_bytes=64 << 10)
    home = homes.path("big")
    home.mkdir()
    (home / "data").write_bytes(os.urandom(1 << 20))
    dest = tmp_path / "archive" / "big.tar.gz"
    with pytest.raises(HomeWorkError) as e:
        asyncio.run(homes.archive("big", dest))
    assert e.value.kind == "too-big"
    assert list((tmp_path / "archive").iterdir()) == []  # no archive, no .part
    assert (home / "data").exists()


def test_the_compressed_stream_is_cut_at_the_limit(tmp_path: Path) -> None:
    """The second bound, should the data grow between measuring and tar."""
    home = tmp_path / "homes" / "grows"
    home.mkdir(parents=True)
    (home / "data").write_bytes(os.urandom(256 << 10))
    dest = tmp_path / "grows.tar.gz"
    with pytest.raises(homework.Failure) as e:
        homework._write_archive(str(home.parent), "grows", str(dest), 32 << 10)
    assert e.value.kind == "too-big"
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_a_home_deeper_than_tar_can_walk_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "homes"
    root.mkdir()
    deep_chain(root / "deep", 50)
    monkeypatch.setattr(homework, "MAX_ARCHIVE_DEPTH", 20)
    with pytest.raises(homework.Failure) as e:
        homework.archive(str(root), "deep", str(tmp_path / "deep.tar.gz"), 1 << 30)
    assert e.value.kind == "too-deep"


def test_an_empty_orphan_is_not_archived(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    homes.path("empty").mkdir()
    info = asyncio.run(homes.archive("empty", tmp_path / "archive" / "e.tar.gz", skip_empty=True))
    assert "empty" in str(info["note"]) and list((tmp_path / "archive").iterdir()) == []


# -- the helper process: cancelled, timed out, crashed ----------------------------------
def sleeper(tmp: Path) -> list[str]:
    """A stand-in helper that starts a grandchild and never ends; it writes both PIDs."""
    script = f'sleep 300 & echo "$$ $!" > {tmp}/pids.tmp; mv {tmp}/pids.tmp {tmp}/pids; wait'
    return ["/bin/sh", "-c", script, "helper"]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # killed, waiting for its (re)parent to reap it


async def started(tmp: Path) -> list[int]:
    while not (tmp / "pids").exists():
        await asyncio.sleep(0.01)
    return [int(p) for p in (tmp / "pids").read_text().split()]


def test_cancelling_kills_the_helper_and_its_children(tmp_path: Path) -> None:
    homes = Homes(tmp_path, tmp_path / "archive", helper=sleeper(tmp_path))

    async def main() -> list[int]:
        work = asyncio.ensure_future(homes.remove("x"))
        pids = await asyncio.wait_for(started(tmp_path), 10)
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
        return pids

    pids = asyncio.run(main())
    assert len(pids) == 2 and all(gone(pid) for pid in pids), pids


def test_a_helper_over_its_time_is_killed_with_its_children(tmp_path: Path) -> None:
    homes = Homes(
        tmp_path, tmp_path / "archive", HomeLimits(remove_timeout=0.5), helper=sleeper(tmp_path)
    )
    with pytest.raises(HomeWorkError) as e:
        asyncio.run(homes.remove("x"))
    assert e.value.kind == "timeout"
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert all(gone(pid) for pid in pids), pids


def test_a_helper_that_dies_is_a_typed_failure(tmp_path: Path) -> None:
    homes = Homes(tmp_path, tmp_path / "a", helper=[sys.executable, "-c", "import os; os.abort()"])
    with pytest.raises(HomeWorkError) as e:
        asyncio.run(homes.remove("x"))
    assert e.value.kind == "crashed"


# -- making and setting aside -----------------------------------------------------------
def test_make_never_adopts_an_existing_directory(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    planted = homes.path("squat")
    planted.mkdir()
    (planted / "planted").write_text("from someone else")
    with pytest.raises(AlreadyExists):
        homes.make("squat", 70123, 70123)
    assert planted.stat().st_uid == 0 and (planted / "planted").exists()
    home = homes.make("fresh", 70124, 70124)
    st = home.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (70124, 70124, 0o700)
    assert homes.is_home_of("fresh", 70124) and not homes.is_home_of("squat", 70123)


def test_set_aside_moves_a_home_out_of_the_way_root_only(tmp_path: Path) -> None:
    homes = homes_in(tmp_path)
    homes.make("stuck", 70125, 70125)
    (homes.path("stuck") / "data").write_text("kept for the admin")
    first = homes.set_aside("stuck", "stuck-70125")
    homes.make("stuck", 70125, 70125)
    second = homes.set_aside("stuck", "stuck-70125")
    assert first != second and first.parent == second.parent == homes.root / ASIDE
    assert (first / "data").read_text() == "kept for the admin"
    assert (homes.root / ASIDE).stat().st_mode & 0o777 == 0o700
    assert homes.names() == [] and not homes.exists("stuck")
