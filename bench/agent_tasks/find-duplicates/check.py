import re

from suite import Result

GROUPS = [{"chapter1.txt", "chapter1-copy.txt", "backup-ch1.txt"}, {"outline.txt", "plan.txt"}]
UNIQUE = {"chapter2.txt", "chapter2-v2.txt", "chapter3.txt"}


def check(r: Result) -> tuple[bool, str]:
    named = set(re.findall(r"[\w.-]+\.txt", r.answer))
    missing = set().union(*GROUPS) - named
    if missing:
        return False, f"answer does not name {sorted(missing)}"
    # no unique file may be offered as a duplicate: each line/sentence naming
    # one must not also name a file of a group
    for part in re.split(r"[\n;]|\.\s", r.answer):
        names = set(re.findall(r"[\w.-]+\.txt", part))
        if names & UNIQUE and names & set().union(*GROUPS):
            return False, f"a unique file is listed with duplicates: {part.strip()[:120]!r}"
        if any(names & g for g in GROUPS) and sum(bool(names & g) for g in GROUPS) > 1:
            return False, f"two groups mixed in {part.strip()[:120]!r}"
    return True, "both groups, no unique file"
