import gzip
from pathlib import Path

from suite import TASKS_DIR, Result

BIG = ("api.log", "auth.log", "worker.log")
SMALL = ("cron.log", "mail.log")
ORIGINALS = TASKS_DIR / "compress-big-logs" / "fixtures" / "app-logs"


def check(r: Result) -> tuple[bool, str]:
    logs = r.home / "app-logs"
    if not logs.is_dir():
        return False, "app-logs/ is gone"
    names = sorted(p.name for p in logs.iterdir())
    want = sorted([f"{b}.gz" for b in BIG] + list(SMALL))
    if names != want:
        return False, f"app-logs/ holds {names}, expected {want}"
    for b in BIG:
        if gzip.decompress((logs / f"{b}.gz").read_bytes()) != (ORIGINALS / b).read_bytes():
            return False, f"{b}.gz is not {b} compressed"
    for s in SMALL:
        if (logs / s).read_bytes() != Path(ORIGINALS / s).read_bytes():
            return False, f"{s} changed"
    return True, "3 big logs gzipped, 2 small kept"
