"""`agentctl agent logs` through agentd: an agent's journal as agentd reads it
for its owner (Observe.ReadAgentJournal), printed like journalctl's short-iso
lines, or one JSON object per line; --follow asks again from the cursor it was
given, each call a long poll that returns as soon as there is more."""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

FOLLOW_WAIT_MS = 15_000  # one long poll; under sd-bus's 25 s call timeout
BATCH = 500  # agentd gives at most this many entries a call


class JournalClient(Protocol):
    async def read_agent_journal(
        self, name: str, cursor: str, lines: int, wait_ms: int
    ) -> tuple[list[dict[str, Any]], str]: ...


def line(entry: dict[str, Any]) -> str:
    """`TIME IDENTIFIER[PID]: MESSAGE`, the time in ISO 8601, local."""
    at = entry.get("at")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at)) if at else "-"
    return (
        f"{stamp} {entry.get('identifier', '')}[{entry.get('pid', 0)}]: {entry.get('message', '')}"
    )


async def show(client: JournalClient, name: str, lines: int, follow: bool, as_json: bool) -> None:
    entries, cursor = await client.read_agent_journal(name, "", lines, 0)
    while True:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False) if as_json else line(entry), flush=True)
        if not follow:
            return
        entries, cursor = await client.read_agent_journal(name, cursor, BATCH, FOLLOW_WAIT_MS)
