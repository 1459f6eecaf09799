"""The Memory interface: agents' memories and their owners' knowledge bases.

A scope names one memory: ``agent/NAME`` (that agent's own memory),
``knowledge`` (the caller's knowledge base, shared by all the caller's
agents) or ``knowledge/UID`` (that owner's; its owner or an administrator).
People only: an agent reaches its own memory and its owner's knowledge
through Runtime.Remember and Runtime.Recall.
"""

from __future__ import annotations

from sdbus import DbusInterfaceCommonAsync, dbus_method_async

from .common import U

MEMORY_INTERFACE = "org.agentos.agentd1.Memory"


class MemoryInterface(DbusInterfaceCommonAsync, interface_name=MEMORY_INTERFACE):
    """Owners manage their agents' memories and their own knowledge base;
    administrators everyone's. Replies are JSON."""

    @dbus_method_async(
        "sssb",
        "s",
        flags=U,
        method_name="AddMemory",
        input_args_names=("scope", "source", "text", "replace"),
        result_args_names=("result_json",),
    )
    async def add_memory(self, scope: str, source: str, text: str, replace: bool) -> str:
        """Split TEXT (a document, at most 1 MiB) into chunks that respect its
        paragraphs and headings, embed them and store them in SCOPE under SOURCE
        (a file name or label). A chunk already there is skipped; with REPLACE,
        the chunks of SOURCE the new text no longer has are removed. Embedding
        tokens are metered against the agent's (knowledge: the owner's) quota.
        JSON {scope, source, added, skipped, removed, tokens, ids, next}, next
        being {position, byte, line, headings}: where ContinueMemory carries on."""
        raise NotImplementedError

    @dbus_method_async(
        "sssutua(ys)",
        "s",
        flags=U,
        method_name="ContinueMemory",
        input_args_names=("scope", "source", "text", "position", "byte", "line", "headings"),
        result_args_names=("result_json",),
    )
    async def continue_memory(
        self,
        scope: str,
        source: str,
        text: str,
        position: int,
        byte: int,
        line: int,
        headings: list[tuple[int, str]],
    ) -> str:
        """Add TEXT as the continuation of a document sent in pieces (one
        AddMemory, then ContinueMemory for each later piece): its chunks are
        numbered from POSITION, located from BYTE and LINE, and titled under
        HEADINGS (level, title) until its own first heading, as the previous
        piece's reply says in its "next" member. Otherwise AddMemory's, without
        replace. JSON as AddMemory's."""
        raise NotImplementedError

    @dbus_method_async(
        "assu",
        "s",
        flags=U,
        method_name="SearchMemory",
        input_args_names=("scopes", "query", "k"),
        result_args_names=("hits_json",),
    )
    async def search_memory(self, scopes: list[str], query: str, k: int) -> str:
        """The K (1..50) chunks of SCOPES most relevant to QUERY (vector and
        keyword search fused; nothing under the relevance floor). JSON list of
        {id, scope, source, position, heading, text, kind, task, created,
        score, cosine, keyword}."""
        raise NotImplementedError

    @dbus_method_async(
        "ssuu",
        "s",
        flags=U,
        method_name="ListMemory",
        input_args_names=("scope", "source", "offset", "limit"),
        result_args_names=("records_json",),
    )
    async def list_memory(self, scope: str, source: str, offset: int, limit: int) -> str:
        """The chunks of SCOPE (of SOURCE, unless empty), oldest first, LIMIT
        (1..1000) from OFFSET. JSON list of records: {id, scope, source, position,
        heading, text, kind, task, created, sha256, start_line, end_line}."""
        raise NotImplementedError

    @dbus_method_async(
        "t",
        "s",
        flags=U,
        method_name="GetMemory",
        input_args_names=("id",),
        result_args_names=("record_json",),
    )
    async def get_memory(self, id: int) -> str:
        """One chunk, as ListMemory's records; NoSuchMemory if it is not there or
        not the caller's to read."""
        raise NotImplementedError

    @dbus_method_async(
        "at",
        "u",
        flags=U,
        method_name="RemoveMemory",
        input_args_names=("ids",),
        result_args_names=("removed",),
    )
    async def remove_memory(self, ids: list[int]) -> int:
        """Remove chunks by id, all or nothing (NoSuchMemory names one that is
        not there or not the caller's). Audited memory.removed."""
        raise NotImplementedError

    @dbus_method_async(
        "ss",
        "u",
        flags=U,
        method_name="RemoveMemorySource",
        input_args_names=("scope", "source"),
        result_args_names=("removed",),
    )
    async def remove_memory_source(self, scope: str, source: str) -> int:
        """Remove every chunk of SOURCE in SCOPE (an empty SOURCE: the whole
        scope). Audited memory.removed."""
        raise NotImplementedError

    @dbus_method_async(
        "s",
        "s",
        flags=U,
        method_name="MemoryUsage",
        input_args_names=("scope",),
        result_args_names=("usage_json",),
    )
    async def memory_usage(self, scope: str) -> str:
        """JSON {scope, chunks, bytes, sources, limit_chunks, limit_bytes}
        (a limit of 0: none)."""
        raise NotImplementedError
