"""The agent loop's tools and prompt pieces: the shell's timeout, output cap and
process-group kill; fetch against an HTTP server on 127.0.0.1 only (size,
time and content-type limits, http(s) only, HTML made text); the step schema
within what the inference service accepts; trimming that never fails."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from agentd.agentloop import fetch, prompt
from agentd.agentloop.tools import OUTPUT_LIMIT, Toolbox
from agentd.inference.schema import check_schema


# ------------------------------------------------------------------ shell
def test_shell_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    box = Toolbox(tmp_path, shell_timeout=1.0)
    started = time.monotonic()
    out = asyncio.run(box.run(1, "shell", {"command": "sleep 30 & echo $! > pid; sleep 30"}))
    assert time.monotonic() - started < 10
    assert out.startswith("exit -9 (killed: still running after 1 s)")
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by init once killed: wait for the event, bounded
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_shell_output_is_capped_and_keeps_its_end(tmp_path: Path) -> None:
    box = Toolbox(tmp_path)
    out = asyncio.run(box.run(1, "shell", {"command": "seq 1 200000; echo END"}))
    assert out.startswith("exit 0\nstdout:\n[...]\n") and out.rstrip().endswith("END")
    assert len(out) < OUTPUT_LIMIT + 100


def test_shell_runs_under_the_nobind_filter(tmp_path: Path) -> None:
    box = Toolbox(tmp_path)
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print('bound')"
    out = asyncio.run(box.run(1, "shell", {"command": f'python3 -c "{code}"'}))
    assert "bound" not in out and not out.startswith("exit 0")


# ------------------------------------------------------------------ fetch
class Handler(http.server.BaseHTTPRequestHandler):
    PAGES: ClassVar[dict[str, tuple[int, str, bytes, float]]] = {
        "/page": (
            200,
            "text/html; charset=utf-8",
            b"<html><head><title>T</title>"
            b"<script>alert(1)</script></head><body><h1>Hi</h1><p>caf\xc3\xa9 &amp; "
            b"tea</p></body></html>",
            0,
        ),
        "/data": (200, "application/json", b'{"a": 1}', 0),
        "/img": (200, "image/png", b"\x89PNG" + b"\0" * 100, 0),
        "/big": (200, "text/plain", b"x" * 300_000, 0),
        "/slow": (200, "text/plain", b"s" * 50, 0.5),
    }

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            target = "file:///etc/passwd" if self.path == "/redirect-file" else "/data"
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        status, ctype, body, drip = self.PAGES[self.path]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        if drip:
            for i in range(0, len(body), 5):  # a server dripping bytes
                self.wfile.write(body[i : i + 5])
                self.wfile.flush()
                time.sleep(drip)
        else:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_fetch_makes_html_text(server: str) -> None:
    out = fetch.get(f"{server}/page")
    assert out.splitlines()[0] == "HTTP 200 text/html"
    assert "T\n\nHi\n" in out and "café & tea" in out and "alert" not in out


def test_fetch_follows_redirects_only_to_http(server: str) -> None:
    assert fetch.get(f"{server}/redirect").startswith("HTTP 200 application/json\n{")
    assert "only http and https" in fetch.get(f"{server}/redirect-file")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://x", "/x"])
def test_fetch_refuses_other_schemes(url: str) -> None:
    assert fetch.get(url).startswith("error: only http and https")


def test_fetch_refuses_what_is_not_text(server: str) -> None:
    out = fetch.get(f"{server}/img")
    assert out.startswith("error: ") and "image/png, not text" in out


def test_fetch_reads_at_most_max_bytes(server: str) -> None:
    out = fetch.get(f"{server}/big", max_bytes=100_000)
    assert out.split("\n")[1] == "x" * 100_000 and "cut: only the first 100000 bytes" in out


def test_fetch_gives_up_at_its_deadline(server: str) -> None:
    started = time.monotonic()
    out = fetch.get(f"{server}/slow", timeout=1.0)
    assert time.monotonic() - started < 3
    assert out.startswith("error: ")


def test_fetch_through_the_toolbox_runs_in_a_thread(server: str, tmp_path: Path) -> None:
    out = asyncio.run(Toolbox(tmp_path).run(1, "fetch", {"url": f"{server}/data"}))
    assert out == 'HTTP 200 application/json\n{"a": 1}'


# ------------------------------------------------------------------ prompt
def test_the_step_schema_is_one_the_service_accepts() -> None:
    check_schema(prompt.step_schema(list(prompt.TOOLS)))  # raises SchemaTooComplex if not


def test_trimming_never_fails_even_with_a_tiny_context() -> None:
    conv = prompt.Conversation("You are an agent.\n" + "intro " * 2000 + "\nTask: do it")
    for i in range(8):
        conv.add('{"tool": "shell", "command": "cat f"}', f"output {i} " * 1000)
    conv.fit(300)
    assert conv.estimate() <= 300 or all(len(t.shown) <= 200 for t in conv.turns)
    assert "Task: do it" in conv.turns[0].shown
    assert conv.messages()[-1]["content"].startswith("output 7")


def test_trimming_starts_with_the_oldest_output_and_sticks() -> None:
    conv = prompt.Conversation("intro")
    for i in range(5):
        conv.add(f'{{"step": {i}}}', f"result {i} " * 300)
    room = conv.estimate() - 500
    assert conv.fit(room)
    shown = [t.shown for t in conv.turns]
    assert "[output trimmed]" in shown[2] or "cut" in shown[2]  # the oldest result
    assert shown[-1] == conv.turns[-1].full  # the last one whole
    before = conv.messages()
    conv.add('{"step": 5}', "short")
    assert not conv.fit(room)  # trimmed below the room at once: no trim at the next step
    assert conv.messages()[: len(before)] == before  # same prefix: the KV cache is reused


def test_clip_keeps_head_and_tail() -> None:
    text = "".join(f"{i:05d}" for i in range(1000))
    out = prompt.clip(text, 300)
    assert len(out) <= 300 and out.startswith("00000") and out.endswith("00999")
