"""The agent runtime: the process inside agent-NAME.service, as the agent's UID.

It speaks to agentd only through the Runtime interface, which identifies it by
its UID; it imports the interface definitions and nothing of the engine or the
store. For now it registers, heartbeats and idles; the task loop and the
model-driven executor build on this loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from sdbus import DbusFailedError, sd_bus_open_system, set_default_bus

from .api import errors as _errors  # noqa: F401  (maps agentd's error names)
from .api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface


def log(message: str) -> None:
    print(message, flush=True)


async def run() -> int:
    bus = sd_bus_open_system()
    set_default_bus(bus)
    runtime = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    interval = max(1, int(os.environ.get("AGENTD_HEARTBEAT_INTERVAL", "10")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    delay = 0.5
    while not stop.is_set():
        try:
            name, path = await runtime.register()
            break
        except DbusFailedError as e:  # agentd restarting: retry with backoff
            log(f"register failed ({e}); retrying in {delay:.1f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)
    else:
        return 0
    log(f"agent {name} online as uid {os.getuid()} ({path}), heartbeat every {interval}s")

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            try:
                await runtime.heartbeat()
            except DbusFailedError as e:
                log(f"heartbeat failed: {e}")
    log(f"agent {name} stopping")
    return 0


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
