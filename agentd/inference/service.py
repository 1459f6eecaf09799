"""agentd-inference: a GGUF chat model, and an embedding model, served on a
Unix socket.

The contract is docs/inference-protocol.md: JSON lines, one request per
connection, ops ``generate`` (streamed), ``embed``, ``show`` and ``reload``. This module
is the program's entry point (/usr/libexec/agentd/agentd-inference, made by
``make install`` from tools/launcher.in, and ``python3 -m agentd.inference``);
the rest of the package is, by concern:

- :mod:`~agentd.inference.config`: the ``[model]`` table of agentd's TOML
  file, nothing else; a bad value exits with EX_CONFIG (78) at start;
- :mod:`~agentd.inference.protocol`: the requests and reply lines;
- :mod:`~agentd.inference.lifecycle`: loading, reloading and retiring the
  models (a missing model does not stop the service);
- :mod:`~agentd.inference.server`: the ops, SIGTERM; :mod:`~agentd.inference.conn`:
  the socket, peer UIDs;
- :mod:`~agentd.inference.unit`: sd_notify and journal log lines;
- :mod:`~agentd.inference.schema`: agents' JSON Schemas made into grammars,
  within limits (compiled in a worker thread, not on the event loop);
- :mod:`~agentd.inference.engine` and its parts: continuous batching, with
  admission fair per owner then per agent (:mod:`~agentd.inference.fairqueue`);
- :mod:`~agentd.inference.embedder`: texts to vectors, several requests' texts
  in one decode, in turn with generation's (:mod:`~agentd.inference.turns`).

The package imports nothing of agentd outside agentd.inference: the model
service depends on nothing of the daemon (not sdbus, not its database, which
its dynamic user could not read anyway), only on the socket protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from agentd.inference.config import DEFAULT_CONFIG, ConfigError, load_config
from agentd.inference.server import Service
from agentd.inference.unit import setup_logging
from agentd.sd import EX_CONFIG

log = logging.getLogger("agentd.inference")

DEFAULT_SOCKET = "/run/agentd-inference/socket"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="agentd-inference",
        description="Serve one GGUF model to agentd on a Unix socket (docs/inference-protocol.md).",
    )
    ap.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"TOML file whose [model] table is read (default {DEFAULT_CONFIG})",
    )
    ap.add_argument(
        "--socket",
        default=DEFAULT_SOCKET,
        help=f"the socket to listen on (default {DEFAULT_SOCKET})",
    )
    ap.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        metavar="UID",
        help="a UID that may connect (repeatable; default: 0 only)",
    )
    ap.add_argument("--debug", action="store_true", help="log one line per request")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of /usr/libexec/agentd/agentd-inference."""
    args = parse_args(argv)
    setup_logging(args.debug)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        log.error("bad configuration: %s", e)
        return EX_CONFIG
    allow = set(args.allow_uid) if args.allow_uid else {0}
    service = Service(args.config, args.socket, allow, config)
    try:
        return asyncio.run(service.run())
    except OSError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
