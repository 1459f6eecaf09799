"""Shared by the inference test modules (which do not import each other):
the questions and schema they ask with, and :class:`Svc`, the real service
in a subprocess (``python3 -m agentd.inference`` on a temporary socket and
config; readiness is its sd_notify READY=1 on a socket of the test's), with
the calls made to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentd.inference.engine import Engine

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What do cats eat?",
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def chat(engine: Engine, q: str) -> list[int]:
    """The tokens of one user message, with the model's chat template."""
    return engine.chat_tokens([{"role": "user", "content": q}])


ROOT = Path(__file__).resolve().parents[2]
ME = os.getuid()


class Svc:
    """One agentd-inference process; ``stop()`` sends SIGTERM and returns its
    exit status."""

    def __init__(
        self, tmp: Path, model: Path | str, allow: list[int], **table: int | str | Path
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp, self.socket = tmp, tmp / "run" / "socket"
        self.config = tmp / "agentd.toml"
        lines = ["[agentd]", 'other = "ignored"', "", "[model]", f'path = "{model}"']
        # no embedding model unless the test gives one (not the machine's installed one)
        table = {"embedding": "", **table}
        lines += [
            f"{k} = {json.dumps(v if isinstance(v, int) else str(v))}" for k, v in table.items()
        ]
        self.config.write_text("\n".join(lines) + "\n")
        notify = tmp / "notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify))
        self.notify.settimeout(60)
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(notify),
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        cmd = [
            sys.executable,
            "-m",
            "agentd.inference",
            "--config",
            str(self.config),
            "--socket",
            str(self.socket),
            "--debug",
        ]
        for uid in allow:
            cmd += ["--allow-uid", str(uid)]
        self.log = open(tmp / "stderr", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stderr=self.log, stdout=self.log)
        self.messages: list[str] = []
        self.wait_for("READY=1")

    def wait_for(self, what: str) -> None:
        while not any(what in m for m in self.messages):
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                raise AssertionError(f"no {what} from the service: {self.stderr()}") from None

    def stderr(self) -> str:
        self.log.flush()
        return (self.tmp / "stderr").read_text()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.notify.close()
            self.log.close()


def call(
    svc: Svc, request: dict[str, Any] | None = None, raw: bytes | None = None
) -> list[dict[str, Any]]:
    """One request; every reply line up to the terminal one (or EOF)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(svc.socket))
        s.sendall(raw if raw is not None else json.dumps(request).encode() + b"\n")
        events = []
        for line in s.makefile("rb"):
            events.append(json.loads(line))
            if events[-1]["event"] in ("done", "error"):
                break
        return events


async def acall(svc: Svc, request: dict[str, Any]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(svc.socket), limit=1 << 20)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        events = []
        while line := await reader.readline():
            events.append(json.loads(line))
        return events
    finally:
        writer.close()


def embed(texts: list[str], **kw: Any) -> dict[str, Any]:
    return {"op": "embed", "texts": texts, **kw}


def gen(agent: str, q: str, max_tokens: int = 12, **kw: Any) -> dict[str, Any]:
    return {
        "op": "generate",
        "agent": agent,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": q}],
        **kw,
    }


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events and events[-1]["event"] == "done", events
    return events[-1]


def streamed(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["event"] == "token")


def show(svc: Svc) -> dict[str, Any]:
    return done(call(svc, {"op": "show"}))


def wait_idle(svc: Svc, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, Any] = show(svc)["stats"]
        if (stats["active"] == 0 and stats["queued"] == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


class Open:
    """A generate request left open: read its lines one by one, or hang up."""

    def __init__(self, svc: Svc, request: dict[str, Any]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(svc.socket))
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        self.lines = self.sock.makefile("rb")

    def next(self) -> dict[str, Any]:
        line = self.lines.readline()
        assert line, "connection closed"
        event: dict[str, Any] = json.loads(line)
        return event

    def until(self, event: str) -> list[dict[str, Any]]:
        out = [self.next()]
        while out[-1]["event"] not in (event, "done", "error"):
            out.append(self.next())
        return out

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


LONG = {"op": "generate", "prompt": "Once upon a time, in a land far away,", "max_tokens": 180}


@contextlib.contextmanager
def running(tmp: Path, model: Path, **table: int | str | Path) -> Iterator[Svc]:
    """A service for a test module (context 256, batch 64, 2 threads unless
    TABLE says otherwise), allowing this test's UID; it must exit 0 when stopped."""
    s = Svc(tmp, model, [ME], **{"context": 256, "batch": 64, "threads": 2, **table})
    yield s
    assert s.stop() == 0, s.stderr()
