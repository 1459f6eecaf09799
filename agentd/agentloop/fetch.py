"""The fetch tool: one HTTP(S) GET for an agent of an online template.

Invariants: only http and https URLs (also after a redirect: at most
MAX_REDIRECTS, each checked again); only text comes back (text/*, JSON, XML:
anything else is refused by its Content-Type before its body is read); at
most MAX_BYTES of body are read (the rest is cut, and said so); the whole
fetch, redirects included, ends within TIMEOUT_S (each socket operation is
bounded by what is left, and a server dripping bytes is stopped between
reads); HTML is made into text with the stdlib's parser (no scripts, styles
or markup). Blocking: the loop runs it in a worker thread. Nothing else is
sent than the GET and a few fixed headers (no cookies, no credentials).

It is imported on first use only (urllib.parse, http.client, html.parser:
~6 ms of an agent's start otherwise; tests/unit/test_runtime_imports.py).
What the agent may reach is the unit's business (its network profile);
this module only bounds what one fetch may cost.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from html.parser import HTMLParser

MAX_BYTES = 512 * 1024
TIMEOUT_S = 20.0
MAX_REDIRECTS = 3
CHUNK = 16 * 1024
TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/javascript",
)
HEADERS = {
    "User-Agent": "agentd-agent/1 (fetch tool)",
    "Accept": "text/html, text/plain;q=0.9, application/json;q=0.9, text/*;q=0.8",
    "Accept-Encoding": "identity",
}


class FetchError(Exception):
    """The URL was refused or could not be fetched within the limits."""


def get(url: str, max_bytes: int = MAX_BYTES, timeout: float = TIMEOUT_S) -> str:
    """The text at URL: 'HTTP <status> <type>' then the body as text."""
    deadline = time.monotonic() + timeout
    try:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, mime, text = _get_once(url, max_bytes, deadline)
            if location is None:
                return f"HTTP {status} {mime}\n{text}"
            url = urllib.parse.urljoin(url, location)
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")
    except FetchError as e:
        return f"error: {e}"
    except (OSError, http.client.HTTPException, ValueError) as e:
        if time.monotonic() >= deadline:
            return f"error: no answer within {timeout:g} s"
        return f"error: {type(e).__name__}: {e}"


def _get_once(url: str, max_bytes: int, deadline: float) -> tuple[int, str | None, str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs may be fetched, not {url[:200]!r}")
    if not parts.hostname:
        raise FetchError(f"no host in {url[:200]!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=_left(deadline))
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers=HEADERS)
        resp = conn.getresponse()
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            return resp.status, location, "", ""
        ctype = resp.getheader("Content-Type") or ""
        mime = ctype.split(";")[0].strip().lower()
        if not (mime.startswith("text/") or mime in TEXT_TYPES):
            raise FetchError(
                f"HTTP {resp.status}: the content type is {mime or 'not given'}, not text:"
                " only text, HTML, JSON and XML are fetched"
            )
        body, cut = _read(conn, resp, max_bytes, deadline)
        charset = re.search(r"charset=([\w.-]+)", ctype, re.I)
        try:
            text = body.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        if mime in ("text/html", "application/xhtml+xml"):
            text = html_text(text)
        if cut:
            text += f"\n[... cut: only the first {max_bytes} bytes were read]"
        return resp.status, None, mime, text
    finally:
        conn.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("time is up")
    return left


def _read(
    conn: http.client.HTTPConnection,
    resp: http.client.HTTPResponse,
    max_bytes: int,
    deadline: float,
) -> tuple[bytes, bool]:
    """At most MAX_BYTES of the body, within the deadline; and whether it was cut."""
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes * 4:
        # not worth reading a quarter of: say so rather than cut a huge file
        raise FetchError(f"the body is {int(length)} bytes, over {max_bytes * 4}")
    body = bytearray()
    # the socket: the connection's, or (HTTP/1.0, "Connection: close") the response's
    sock = conn.sock or getattr(getattr(resp.fp, "raw", None), "_sock", None)
    while len(body) <= max_bytes:
        left = _left(deadline)  # checked between reads: a dripping server is stopped
        if sock is not None:
            sock.settimeout(left)
        chunk = resp.read1(CHUNK)
        if not chunk:
            return bytes(body), False
        body += chunk
    return bytes(body[:max_bytes]), True


class _Text(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section"}
        | {"article", "header", "footer", "table", "ul", "ol", "dd", "dt", "blockquote", "hr"}
        | {"title", "main", "nav", "aside", "form", "td", "th"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self.SKIP:
            self.skipping += 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        elif not self.skipping:
            self.out.append(data)


def html_text(html: str) -> str:
    """The readable text of HTML: the title, then the body's text, blank runs squeezed."""
    p = _Text()
    p.feed(html)
    p.close()
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(p.out).split("\n")]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join(p.title.split())
    return f"{title}\n\n{body}" if title else body
