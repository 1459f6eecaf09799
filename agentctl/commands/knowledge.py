"""`agentctl knowledge`: an owner's knowledge base, which all the owner's agents recall.

The knowledge base of a user (scope "knowledge", or "knowledge/UID" for an
administrator naming another owner with --owner) holds documents that every
agent the user owns searches when it recalls, beside its own memory (`agentctl
memory`). A thin client of agentd's org.agentos.agentd1.Memory interface, like
`agentctl memory`; the work both share is agentctl.memory_verbs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .. import memory_verbs as verbs
from ..app import AliasGroup, json_option, run
from ..params import CHUNK_ID, UserType

OWNER_HELP = "Administrators: the knowledge base of user UID (a UID or a user name)."


def owner_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--owner", type=UserType(), help=OWNER_HELP)(fn)


def scope_of(owner: int | None) -> str:
    """Without --owner the caller's own: agentd knows who calls."""
    return "knowledge" if owner is None else f"knowledge/{owner}"


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list", "remove": "rm", "find": "search"},
    epilog="""\b
Examples:
  agentctl knowledge add ~/handbook/*.md
  agentctl knowledge search "on-call escalation"
  agentctl knowledge list
  agentctl knowledge rm --source /home/alice/handbook/old.md
  agentctl knowledge usage --owner alice        # administrators""",
)
def knowledge() -> None:
    """Add to, search and prune your knowledge base, which all your agents recall.

    Your knowledge base holds documents every agent you own may find: when
    one works on a task, it recalls the chunks most relevant to it from its
    own memory (agentctl memory) and from your knowledge base. Agents only
    read it; you (and administrators, with --owner) change it.

    agentd splits text into chunks of about 800 characters along paragraphs
    and Markdown headings, embeds them (agentctl model install minilm) and
    finds them by meaning and by keyword. Embedding costs tokens, metered
    against your quota. Every addition and removal is in the audit trail
    (memory.added, memory.removed).
    """


@knowledge.command(
    "add",
    short_help="Add text files (or stdin) to it.",
    epilog="""\b
Examples:
  agentctl knowledge add ~/handbook/*.md
  agentctl knowledge add handbook.md --replace          # after editing it
  pandoc -t plain policy.docx | agentctl knowledge add - --source policy""",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--source",
    metavar="LABEL",
    help="Store under LABEL (one FILE, or - for stdin) instead of the file's absolute path.",
)
@click.option(
    "--replace", is_flag=True, help="Also remove the source's chunks the new text no longer has."
)
@owner_option
@json_option
def knowledge_add(
    files: tuple[str, ...], source: str | None, replace: bool, owner: int | None, as_json: bool
) -> None:
    """Add FILES (UTF-8 text; - reads standard input) to your knowledge base.

    As agentctl memory add: each file is stored under its absolute path or
    --source ("stdin" for standard input), chunks already there are skipped,
    --replace also removes the chunks the file no longer has, a file that is
    not UTF-8 text is refused by name before anything is sent, and a file
    over 256 KiB is sent in pieces cut between paragraphs. Prints SOURCE,
    PIECES, ADDED, SKIPPED, REMOVED and TOKENS per file.
    """
    verbs.add_files(scope_of(owner), files, source, replace, as_json)


@knowledge.command(
    "search",
    short_help="Find what your knowledge base says about QUERY (alias: find).",
    epilog="""\b
Examples:
  agentctl knowledge search "vpn setup"
  agentctl knowledge search "expense policy" -k 10 --json | jq -r '.[].text'""",
)
@click.argument("query")
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, 50),
    default=5,
    show_default=True,
    help="How many chunks, at most.",
)
@owner_option
@json_option
def knowledge_search(query: str, k: int, owner: int | None, as_json: bool) -> None:
    """Find the chunks of your knowledge base most relevant to QUERY, best first.

    By meaning and by keyword, as agentctl memory search; chunks under
    agentd's relevance floor are left out, so fewer than -k may come back.
    """
    verbs.print_hits(run(lambda c: c.search_memory([scope_of(owner)], query, k)), as_json)


@knowledge.command(
    "list",
    short_help="List the chunks of your knowledge base (alias: ls).",
    epilog="""\b
Examples:
  agentctl knowledge list
  agentctl knowledge list --source /home/alice/handbook/vpn.md
  agentctl knowledge list --json | jq -r '.[].source' | sort -u""",
)
@click.option("--source", default="", metavar="S", help="Only the chunks of source S.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most N."
)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip the first N.")
@owner_option
@json_option
def knowledge_list(source: str, limit: int, offset: int, owner: int | None, as_json: bool) -> None:
    """List the chunks of your knowledge base, by source and position in it.

    Columns: ID, SOURCE, LINES, KIND, CREATED and TEXT (its first line on a
    terminal, all of it in a pipe). Page with --offset and --limit; agentctl
    knowledge export gives everything.
    """
    scope = scope_of(owner)
    verbs.print_records(run(lambda c: c.list_memory(scope, source, offset, limit)), as_json)


@knowledge.command(
    "show",
    short_help="Show one chunk and its text.",
    epilog="""\b
Examples:
  agentctl knowledge show 42 --json | jq -r .text""",
)
@click.argument("chunk", metavar="ID", type=CHUNK_ID)
@json_option
def knowledge_show(chunk: int, as_json: bool) -> None:
    """Show chunk ID: its scope, source, lines, headings and text."""
    verbs.print_record(run(lambda c: c.get_memory(chunk)), as_json)


@knowledge.command(
    "rm",
    short_help="Remove chunks, a source or all of your knowledge base (alias: remove).",
    epilog="""\b
Examples:
  agentctl knowledge rm 42 43
  agentctl knowledge rm --source /home/alice/handbook/old.md
  agentctl knowledge rm --all --yes""",
)
@click.argument("ids", nargs=-1, metavar="[ID]...", type=CHUNK_ID)
@click.option("--source", metavar="S", help="Remove every chunk of source S.")
@click.option("--all", "everything", is_flag=True, help="Remove the whole knowledge base.")
@click.option("-y", "--yes", is_flag=True, help="Confirm --all.")
@owner_option
@json_option
def knowledge_rm(
    ids: tuple[int, ...],
    source: str | None,
    everything: bool,
    yes: bool,
    owner: int | None,
    as_json: bool,
) -> None:
    """Remove chunks ID... (all or nothing), or a --source, or --all of it.

    An id of an agent's memory is refused (agentctl memory rm). --all
    empties the knowledge base and needs --yes. Prints how many chunks were
    removed.
    """
    if source is not None or everything:
        if ids or (source is not None and everything):
            raise click.UsageError("give IDs, --source S or --all: one of them")
        verbs.remove_source(scope_of(owner), source, everything, yes, as_json)
        return
    if not ids:
        raise click.UsageError("give chunk IDs, --source S or --all --yes")
    if owner is not None:
        raise click.UsageError("--owner goes with --source or --all; an ID names its chunk")
    verbs.remove_chunks(list(ids), "knowledge", as_json)


@knowledge.command(
    "export",
    short_help="Print every chunk as JSON lines.",
    epilog="""\b
Examples:
  agentctl knowledge export > knowledge.jsonl""",
)
@click.option("--source", default="", metavar="S", help="Only the chunks of source S.")
@owner_option
@click.option("--json", "as_json", is_flag=True, hidden=True)  # always JSON lines
def knowledge_export(source: str, owner: int | None, as_json: bool) -> None:
    """Print every chunk of your knowledge base as JSON lines, one record per line.

    Each line is what `knowledge show --json` prints; agentd is asked 1000
    chunks at a time, and chunks added or removed meanwhile may be missed or
    appear twice.
    """
    run(lambda c: verbs.export(c, scope_of(owner), source))


@knowledge.command(
    "usage",
    short_help="Show chunks, size and sources against the limits.",
    epilog="""\b
Examples:
  agentctl knowledge usage
  agentctl knowledge usage --owner 1001 --json""",
)
@owner_option
@json_option
def knowledge_usage(owner: int | None, as_json: bool) -> None:
    """Show how much your knowledge base holds: chunks, size and sources, against
    its limits (agentd.toml memory_owner_chunks and memory_owner_bytes)."""
    verbs.print_usage(run(lambda c: c.memory_usage(scope_of(owner))), as_json)
