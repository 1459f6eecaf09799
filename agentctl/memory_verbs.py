"""What `agentctl memory` and `agentctl knowledge` share: each verb's work, given a scope.

The two nouns differ only in how a command names its scope ("agent/NAME";
"knowledge" or "knowledge/UID") and in their help; the calls, the pieces of a
large file, the progress bar and the output are here, once. Every call is an
AgentdClient method (agentctl.client_memory), so errors arrive as ClientError
like everywhere else; this module adds which file or piece failed.

Output follows agentctl.output: tables or blocks for people on a terminal,
tab-separated lines in a pipe, --json for programs; export is JSON lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from .app import env, fail, run
from .client import AgentdClient, ClientError
from .client_memory import PAGE
from .documents import Document, DocumentError, pieces, read_documents
from .output import (
    Field,
    dash,
    fmt_bytes,
    fmt_list_time,
    fmt_time,
    getter,
    plain_line,
    print_fields,
    print_json,
    print_table,
)

ADD_COUNTS = ("added", "skipped", "removed", "tokens")


# -- add --------------------------------------------------------------------------------
class Bar:
    """A rich progress bar on standard error over the bytes of every document, on a
    terminal and without --json; nothing otherwise. Transient: it leaves no trace."""

    def __init__(self, show: bool, total: int) -> None:
        self.progress: Any = None
        if not show:
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def advance(self, size: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, size)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def add_files(
    scope: str, files: Sequence[str], source: str | None, replace: bool, as_json: bool
) -> None:
    """`add`: read FILES (nothing is sent if one is bad), add them to SCOPE, print."""
    try:
        docs = read_documents(files, source, sys.stdin.buffer)
    except DocumentError as e:
        fail(str(e))
    show = env().is_tty() and not as_json
    total = sum(d.size for d in docs)
    print_added(run(lambda c: add(c, scope, docs, replace, Bar(show, total))), as_json)


async def add(
    client: AgentdClient, scope: str, docs: Sequence[Document], replace: bool, bar: Bar
) -> list[dict[str, Any]]:
    """Each document into SCOPE, in pieces if large; one result per document."""
    results: list[dict[str, Any]] = []
    try:
        for n, doc in enumerate(docs):
            try:
                results.append(await _add_one(client, scope, doc, replace, bar))
            except ClientError as e:
                before = f"; the {n} before it were added" if n else ""
                raise ClientError(f"{doc.name}{before}: {e.message}", e.name, e.kind) from None
    finally:
        bar.close()
    return results


async def _add_one(
    client: AgentdClient, scope: str, doc: Document, replace: bool, bar: Bar
) -> dict[str, Any]:
    parts = pieces(doc.text)
    total: dict[str, Any] = {"file": doc.name, "scope": scope, "source": doc.source}
    total.update({key: 0 for key in ADD_COUNTS}, pieces=len(parts), ids=[])
    if replace and len(parts) > 1:
        # REPLACE on a later piece would remove the chunks the earlier pieces just
        # added (its own text does not have them), so a file sent in pieces is
        # replaced by removing its source first, then adding every piece with
        # replace=False. Its unchanged chunks are embedded again (the chunker is
        # agentd's: agentctl cannot tell which ones a replace would keep), and a
        # search meanwhile finds only part of the file.
        total["removed"] = await client.remove_memory_source(scope, doc.source)
    after: dict[str, Any] = {}
    for i, part in enumerate(parts, 1):
        bar.describe(doc.name if len(parts) == 1 else f"{doc.name} ({i}/{len(parts)})")
        try:
            if i == 1:
                r = await client.add_memory(scope, doc.source, part, replace and len(parts) == 1)
            else:  # numbered, located and titled where the piece before it ended
                r = await client.continue_memory(scope, doc.source, part, after)
            if i < len(parts):
                after = _next(r)
        except ClientError as e:
            if i == 1:
                raise
            old = ", its old text removed" if replace else ""
            raise ClientError(
                f"piece {i} of {len(parts)} failed (pieces 1-{i - 1} were added{old}; "
                f"add the file again to finish): {e.message}",
                e.name,
                e.kind,
            ) from None
        for key in ADD_COUNTS:
            total[key] += int(r.get(key, 0))
        total["ids"] += list(r.get("ids", []))
        total["scope"] = r.get("scope", scope)
        bar.advance(len(part.encode()))
    return total


def _next(reply: dict[str, Any]) -> dict[str, Any]:
    at = reply.get("next")
    if not isinstance(at, dict) or not {"position", "byte", "line"} <= at.keys():
        raise ClientError("agentd's reply has no continuation point (next) for the next piece")
    return at


def print_added(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(results)
        return
    print_table(
        ("SOURCE", "PIECES", "ADDED", "SKIPPED", "REMOVED", "TOKENS"),
        [(r["source"], r["pieces"], *(r[key] for key in ADD_COUNTS)) for r in results],
    )


# -- search, list, show -----------------------------------------------------------------
def _lines(r: dict[str, Any]) -> str:
    start, end = r.get("start_line"), r.get("end_line")
    if not start:
        return "-"
    return str(start) if end in (None, start) else f"{start}-{end}"


def _heading(r: dict[str, Any]) -> str:
    heading = r.get("heading") or []
    return " › ".join(str(h) for h in heading) if isinstance(heading, list) else str(heading)


def _first_line(text: str, width: int = 72) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def print_hits(hits: list[dict[str, Any]], as_json: bool) -> None:
    """Best first. A terminal gets each hit as a header line and its text; a pipe one
    line per hit: ID SCORE SCOPE SOURCE LINES TEXT (tabs and newlines escaped)."""
    if as_json:
        print_json(hits)
        return
    if not env().is_tty():
        for h in hits:
            cells = (h["id"], h.get("score"), h["scope"], h["source"], _lines(h), h["text"])
            click.echo(plain_line(cells))
        return
    if not hits:
        click.echo("nothing relevant found", err=True)
    several = len({h["scope"] for h in hits}) > 1
    for n, h in enumerate(hits):
        where = f"{h['source']}:{_lines(h)}" if _lines(h) != "-" else h["source"]
        head = [click.style(f"#{h['id']}", bold=True), where]
        if several:
            head.insert(1, h["scope"])
        if _heading(h):
            head.append(click.style(_heading(h), fg="cyan"))
        head.append(click.style(f"score {float(h.get('score', 0)):.4f}", dim=True))
        click.echo(("\n" if n else "") + "  ".join(head))
        for line in str(h["text"]).splitlines():
            click.echo("    " + line)


def print_records(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(records)
        return
    tty = env().is_tty()
    print_table(
        ("ID", "SOURCE", "LINES", "KIND", "CREATED", "TEXT"),
        [
            (
                r["id"],
                r["source"],
                _lines(r),
                r.get("kind"),
                fmt_list_time(r.get("created")),
                _first_line(str(r["text"])) if tty else r["text"],
            )
            for r in records
        ],
    )


RECORD_FIELDS: tuple[Field, ...] = (
    ("id", "ID", getter("id")),
    ("scope", "Scope", getter("scope")),
    ("source", "Source", getter("source")),
    ("position", "Position", getter("position")),
    ("start_line", "First line", getter("start_line", dash)),
    ("end_line", "Last line", getter("end_line", dash)),
    ("heading", "Heading", lambda r: _heading(r) or "-"),
    ("kind", "Kind", getter("kind")),
    ("task", "Task", getter("task", lambda t: str(t) if t else "-")),
    ("created", "Created", getter("created", fmt_time)),
    ("sha256", "SHA-256", getter("sha256")),
    ("text", "Text", getter("text", str)),
)


def print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(record)
    else:
        print_fields(record, RECORD_FIELDS, styled=())


def _of(used: int, limit: int, fmt: Any = str) -> str:
    if not limit:
        return f"{fmt(used)} (no limit)"
    return f"{fmt(used)} of {fmt(limit)} ({100 * used // limit}%)"


USAGE_FIELDS: tuple[Field, ...] = (
    ("scope", "Scope", getter("scope")),
    ("chunks", "Chunks", lambda u: _of(u["chunks"], u.get("limit_chunks", 0))),
    ("bytes", "Size", lambda u: _of(u["bytes"], u.get("limit_bytes", 0), fmt_bytes)),
    ("sources", "Sources", getter("sources")),
    ("limit_chunks", "Chunk limit", getter("limit_chunks", lambda n: str(n) if n else "none")),
    ("limit_bytes", "Size limit", getter("limit_bytes", lambda n: fmt_bytes(n) if n else "none")),
)


def print_usage(usage: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(usage)
    else:
        print_fields(usage, USAGE_FIELDS, styled=())


# -- export -----------------------------------------------------------------------------
async def export(client: AgentdClient, scope: str, source: str) -> int:
    """Every record of SCOPE (of SOURCE unless empty) as JSON lines on stdout, a page
    of ListMemory at a time until a short page; returns how many."""
    offset = 0
    while True:
        page = await client.list_memory(scope, source, offset, PAGE)
        for record in page:
            click.echo(json.dumps(record, ensure_ascii=False, sort_keys=True))
        offset += len(page)
        if len(page) < PAGE:
            return offset


# -- rm ---------------------------------------------------------------------------------
def remove_source(
    scope: str, source: str | None, everything: bool, yes: bool, as_json: bool
) -> None:
    """`rm --source S` or `rm --all --yes` of SCOPE. agentd reads an empty source as
    the whole scope, so an empty S is refused here."""
    if everything and not yes:
        raise click.UsageError(f"--all removes every chunk of {scope}: add --yes to confirm")
    if not everything and not source:
        raise click.UsageError("--source needs a non-empty source (for everything: --all)")
    label = "" if everything else str(source)
    removed = run(lambda c: c.remove_memory_source(scope, label))
    print_removed(removed, {"scope": scope, "source": label or None}, as_json)


def remove_chunks(ids: list[int], noun: str, as_json: bool) -> None:
    """`rm ID...` of NOUN (memory, knowledge): all or nothing."""
    if len(ids) > PAGE:
        raise click.UsageError(f"at most {PAGE} ids at a time")
    removed = run(lambda c: remove_ids(c, ids, _PREFIXES[noun], noun))
    print_removed(removed, {"ids": ids}, as_json)


_PREFIXES = {"memory": "agent", "knowledge": "knowledge"}


async def remove_ids(client: AgentdClient, ids: Sequence[int], prefix: str, noun: str) -> int:
    """Remove chunks IDS, all or nothing, after checking each is in a scope starting
    with PREFIX ("agent", "knowledge"), so that `knowledge rm` never removes an
    agent's memory by a mistyped id, nor the other way round."""
    for chunk in dict.fromkeys(ids):
        scope = str((await client.get_memory(chunk)).get("scope", ""))
        if not scope.startswith(prefix):
            other = "knowledge" if noun == "memory" else "memory"
            raise ClientError(
                f"chunk {chunk} is in {scope}, not in {_NOUNS[noun]}: nothing was removed "
                f"(see: agentctl {other} show {chunk})",
                "InvalidArgument",
            )
    return await client.remove_memory(list(dict.fromkeys(ids)))


_NOUNS = {"memory": "an agent's memory", "knowledge": "a knowledge base"}


def print_removed(removed: int, what: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json({**what, "removed": removed})
    else:
        click.echo(f"removed {removed} chunk{'' if removed == 1 else 's'}")
