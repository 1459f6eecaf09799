"""agentd-metrics: one HTTP scrape of agentd's metrics, on a socket systemd accepted.

agentd-metrics.socket listens on 127.0.0.1:9479 (Accept=yes) and starts one
agentd-metrics@.service per connection, as the unprivileged user
agentd-metrics, with the connection as standard input and output. This reads
one request (bounded: 8 KiB of head, 5 seconds), asks agentd for
Observe.Metrics over the system bus (agentd lets agentd-metrics read the
fleet's metrics and nothing else), answers, and exits: nothing stays
running between scrapes, and agentd itself listens on no port.

Answers: GET or HEAD /metrics: 200 and the text (Prometheus format 0.0.4);
another path 404; another method 405; agentd unreachable or refusing 503
(with its one-line reason), so Prometheus marks the target down instead of
reading stale numbers.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from .client import AgentdClient, ClientError

MAX_HEAD = 8192
TIMEOUT_S = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def read_head(conn: socket.socket) -> bytes:
    """The request's line and headers (up to the blank line), at most MAX_HEAD bytes."""
    conn.settimeout(TIMEOUT_S)
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_HEAD:
        chunk = conn.recv(MAX_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head


def route(head: bytes) -> tuple[int, str]:
    """(status, why) for the request HEAD: 200 means serve the metrics."""
    parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return 400, "Bad Request"
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return 405, "Method Not Allowed"
    if target not in (b"/metrics", b"/"):
        return 404, "Not Found"
    return 200, "OK"


def response(status: int, reason: str, body: str, head_only: bool = False) -> bytes:
    data = body.encode()
    kind = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head_only else data)


async def _metrics() -> str:
    return await AgentdClient.connect().metrics()


def serve(conn: socket.socket) -> int:
    head = read_head(conn)
    status, reason = route(head)
    body = f"{reason}\n"
    if status == 200:
        try:
            body = asyncio.run(asyncio.wait_for(_metrics(), TIMEOUT_S))
        except (ClientError, TimeoutError) as e:
            status, reason = 503, "Service Unavailable"
            body = f"agentd: {getattr(e, 'message', None) or 'no answer in time'}\n"
    conn.sendall(response(status, reason, body, head.startswith(b"HEAD ")))
    return 0 if status < 500 else 1


def main() -> int:
    """Serve the connection on standard input (systemd's Accept=yes)."""
    conn = socket.socket(fileno=sys.stdin.fileno())
    try:
        return serve(conn)
    except OSError as e:  # the scraper went away, or never spoke in time
        print(f"agentd-metrics: {e}", file=sys.stderr)
        return 1
    finally:
        conn.detach()
