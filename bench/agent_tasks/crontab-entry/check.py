import re

from suite import Result

DAYS = {"1-5", "mon-fri"}


def check(r: Result) -> tuple[bool, str]:
    text = r.text("crontab.txt")
    if text is None:
        return False, "no artifacts/crontab.txt"
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]
    if len(lines) != 1:
        return False, f"{len(lines)} crontab lines, expected 1"
    fields = lines[0].split(None, 5)
    if len(fields) < 6:
        return False, f"not a crontab line: {lines[0]!r}"
    minute, hour, dom, month, dow, command = fields
    if minute != "30" or hour not in ("2", "02"):
        return False, f"schedule {' '.join(fields[:5])} is not 02:30 daily"
    if (dom, month) != ("*", "*") or dow.lower() not in DAYS:
        return False, f"schedule {' '.join(fields[:5])} is not Monday to Friday"
    if not re.fullmatch(
        r"/usr/local/bin/nightly-backup\.sh\s*>>\s*/var/log/backup\.log(\s+2>&1)?", command
    ):
        return False, f"command is {command!r}"
    return True, "30 2 * * 1-5, appending to the log"
