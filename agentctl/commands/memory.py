"""`agentctl memory`: what an agent remembers, added, searched, listed and removed.

An agent's memory (scope "agent/NAME") holds documents its owner adds here
and the facts and lessons the agent itself remembers while it works; the
agent recalls from it, and from its owner's knowledge base (`agentctl
knowledge`), through agentd. These commands are a thin client of agentd's
org.agentos.agentd1.Memory interface: agentd authorizes (the agent's owner or
an administrator), chunks, embeds, meters and audits. The work shared with
`agentctl knowledge` (pieces, progress, output) is agentctl.memory_verbs.
"""

from __future__ import annotations

from typing import Any

import click

from .. import memory_verbs as verbs
from ..app import AliasGroup, json_option, run
from ..client import AgentdClient
from ..params import CHUNK_ID


def scope_of(agent: str) -> str:
    return f"agent/{agent}"


@click.group(
    cls=AliasGroup,
    aliases={"ls": "list", "remove": "rm", "find": "search"},
    epilog="""\b
Examples:
  agentctl memory add scout docs/*.md
  git log --since=1.week | agentctl memory add scout - --source git-log
  agentctl memory search scout "how do we deploy?" --knowledge
  agentctl memory list scout --source /srv/docs/deploy.md
  agentctl memory rm --source git-log scout
  agentctl memory export scout > scout-memory.jsonl""",
)
def memory() -> None:
    """Add to, search and prune what an agent remembers.

    An agent's memory holds what its owner adds (documents, notes) and what
    the agent remembers itself while working (facts and lessons, kinds fact
    and lesson). When the agent works on a task, it recalls the chunks most
    relevant to it from its memory and from its owner's knowledge base
    (agentctl knowledge).

    agentd splits text into chunks of about 800 characters along paragraphs
    and Markdown headings, embeds them with the embedding model (agentctl
    model install minilm) and finds them by meaning and by keyword. Embedding
    costs tokens, metered against the agent's quota. You manage the memories
    of the agents you own; administrators, all of them. Every addition and
    removal is in the audit trail (memory.added, memory.removed).
    """


@memory.command(
    "add",
    short_help="Add text files (or stdin) to it.",
    epilog="""\b
Examples:
  agentctl memory add scout README.md docs/*.md
  agentctl memory add scout notes.md --replace        # after editing notes.md
  curl -s https://example.org/runbook.txt | agentctl memory add scout - --source runbook
  agentctl memory add scout big.log --json | jq '.[].tokens'""",
)
@click.argument("agent")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--source",
    metavar="LABEL",
    help="Store under LABEL (one FILE, or - for stdin) instead of the file's absolute path.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Also remove the source's chunks the new text no longer has.",
)
@json_option
def memory_add(
    agent: str, files: tuple[str, ...], source: str | None, replace: bool, as_json: bool
) -> None:
    """Add FILES (UTF-8 text; - reads standard input) to AGENT's memory.

    Each file is stored under a source label: its absolute path, or --source
    (standard input's default: "stdin"). A chunk the source already holds
    is skipped, so adding a file again costs only its new parts; with
    --replace, the chunks the file no longer has are removed too. Files are
    all read first: a file that is not UTF-8 text is refused by name and
    nothing is sent. A file over 256 KiB is sent in pieces cut at headings
    or between paragraphs (agentd takes at most 1 MiB at a time), each going
    on where the last ended: positions, line numbers and headings are the
    whole file's. With --replace its source is then removed first and every
    piece added afresh.

    Prints one line per file: SOURCE, PIECES, ADDED, SKIPPED, REMOVED
    (chunks) and TOKENS (embedding tokens metered); a progress bar on a
    terminal. A failure names the file (and piece) it stopped at; the files
    before it were added. Over the memory's limit, nothing of that file is
    stored (MemoryLimitExceeded: see agentctl memory usage).
    """
    verbs.add_files(scope_of(agent), files, source, replace, as_json)


@memory.command(
    "search",
    short_help="Find what AGENT remembers about QUERY (alias: find).",
    epilog="""\b
Examples:
  agentctl memory search scout "database credentials rotation"
  agentctl memory search scout "deploy steps" --knowledge -k 10
  agentctl memory search scout "backup" --json | jq -r '.[].source' | sort -u""",
)
@click.argument("agent")
@click.argument("query")
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, 50),
    default=5,
    show_default=True,
    help="How many chunks, at most.",
)
@click.option(
    "--knowledge",
    "with_knowledge",
    is_flag=True,
    help="Also search the agent's owner's knowledge base, as the agent recalls.",
)
@json_option
def memory_search(agent: str, query: str, k: int, with_knowledge: bool, as_json: bool) -> None:
    """Find the chunks of AGENT's memory most relevant to QUERY, best first.

    agentd searches by meaning (the embedded QUERY against the chunks') and
    by keyword, fuses both rankings and leaves out chunks under its
    relevance floor, so fewer than -k may come back, or none. With
    --knowledge, the knowledge base of the agent's owner is searched too:
    what the agent itself would recall. Embedding QUERY costs a few tokens,
    metered against the agent's quota.

    On a terminal, each hit is a line (#ID, SOURCE:LINES, the headings above
    it, SCORE) and its text; in a pipe, one line per hit: ID, SCORE, SCOPE,
    SOURCE, LINES, TEXT (tab-separated, tabs and newlines escaped).
    """

    async def body(c: AgentdClient) -> list[dict[str, Any]]:
        scopes = [scope_of(agent)]
        if with_knowledge:
            owner = (await c.describe_agent(agent))["owner_uid"]
            scopes.append(f"knowledge/{owner}")
        return await c.search_memory(scopes, query, k)

    verbs.print_hits(run(body), as_json)


@memory.command(
    "list",
    short_help="List the chunks of AGENT's memory (alias: ls).",
    epilog="""\b
Examples:
  agentctl memory list scout
  agentctl memory list scout --source stdin --limit 20
  agentctl memory list scout --offset 100 --limit 100 | cut -f1""",
)
@click.argument("agent")
@click.option("--source", default="", metavar="S", help="Only the chunks of source S.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most N."
)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip the first N.")
@json_option
def memory_list(agent: str, source: str, limit: int, offset: int, as_json: bool) -> None:
    """List the chunks of AGENT's memory, by source and position in it.

    Columns: ID, SOURCE, LINES (in the file it came from), KIND (document,
    fact, lesson), CREATED and TEXT (its first line on a terminal, all of it
    in a pipe). Use --offset and --limit to page; agentctl memory export
    gives everything.
    """
    verbs.print_records(
        run(lambda c: c.list_memory(scope_of(agent), source, offset, limit)), as_json
    )


@memory.command(
    "show",
    short_help="Show one chunk and its text.",
    epilog="""\b
Examples:
  agentctl memory show 42
  agentctl memory show 42 --json | jq -r .text""",
)
@click.argument("chunk", metavar="ID", type=CHUNK_ID)
@json_option
def memory_show(chunk: int, as_json: bool) -> None:
    """Show chunk ID: its scope, source, lines, headings, kind, task and text.

    Task is the task during which the agent remembered it (a fact or a
    lesson). Without a terminal, one `key<TAB>value` line per field.
    """
    verbs.print_record(run(lambda c: c.get_memory(chunk)), as_json)


@memory.command(
    "rm",
    short_help="Remove chunks, a source or all of AGENT's memory (alias: remove).",
    epilog="""\b
Examples:
  agentctl memory rm 42 43
  agentctl memory rm --source /srv/docs/old.md scout
  agentctl memory rm --all scout --yes
  agentctl memory list scout --source stdin | cut -f1 | xargs agentctl memory rm""",
)
@click.argument("targets", nargs=-1, required=True, metavar="ID...|AGENT")
@click.option("--source", metavar="S", help="Remove every chunk of source S of AGENT.")
@click.option("--all", "everything", is_flag=True, help="Remove all of AGENT's memory.")
@click.option("-y", "--yes", is_flag=True, help="Confirm --all.")
@json_option
def memory_rm(
    targets: tuple[str, ...], source: str | None, everything: bool, yes: bool, as_json: bool
) -> None:
    """Remove chunks ID... (all or nothing), or with --source S or --all, from AGENT.

    Chunk ids are those `memory list` and `memory search` print; an id of
    a knowledge base is refused (agentctl knowledge rm). --all empties the
    agent's memory, its own facts and lessons included, and needs --yes.
    Prints how many chunks were removed.
    """
    if source is not None or everything:
        if len(targets) != 1 or (source is not None and everything):
            raise click.UsageError("give one AGENT with --source S or with --all (not both)")
        verbs.remove_source(scope_of(targets[0]), source, everything, yes, as_json)
        return
    ids = [CHUNK_ID.convert(t, None, click.get_current_context()) for t in targets]
    verbs.remove_chunks(ids, "memory", as_json)


@memory.command(
    "export",
    short_help="Print every chunk as JSON lines.",
    epilog="""\b
Examples:
  agentctl memory export scout > scout.jsonl
  agentctl memory export scout | jq -r 'select(.kind == "lesson") | .text'""",
)
@click.argument("agent")
@click.option("--source", default="", metavar="S", help="Only the chunks of source S.")
@click.option("--json", "as_json", is_flag=True, hidden=True)  # always JSON lines
def memory_export(agent: str, source: str, as_json: bool) -> None:
    """Print every chunk of AGENT's memory as JSON lines, one record per line.

    Each line is what `memory show --json` prints for one chunk, in the
    order of `memory list`. agentd is asked 1000 chunks at a time; chunks
    added or removed meanwhile may be missed or appear twice.
    """
    run(lambda c: verbs.export(c, scope_of(agent), source))


@memory.command(
    "usage",
    short_help="Show chunks, size and sources against the limits.",
    epilog="""\b
Examples:
  agentctl memory usage scout
  agentctl memory usage scout --json | jq .bytes""",
)
@click.argument("agent")
@json_option
def memory_usage(agent: str, as_json: bool) -> None:
    """Show how much AGENT's memory holds: chunks, size and sources, against its
    limits (agentd.toml memory_agent_chunks and memory_agent_bytes; an addition
    over a limit is refused whole)."""
    verbs.print_usage(run(lambda c: c.memory_usage(scope_of(agent))), as_json)
