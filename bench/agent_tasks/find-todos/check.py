import re

from suite import Result

EXPECTED = {("models.py", 5), ("views.py", 5), ("views.py", 10)}


def check(r: Result) -> tuple[bool, str]:
    text = r.text("todos.txt")
    if text is None:
        return False, "no artifacts/todos.txt"
    found = set()
    for line in text.splitlines():
        m = re.match(r"\s*(?:\S*/)?([\w.-]+\.\w+):(\d+):", line)
        if m:
            found.add((m.group(1), int(m.group(2))))
            if "TODO" not in line:
                return False, f"line lacks the TODO text: {line!r}"
    if found != EXPECTED:
        return False, f"found {sorted(found)}, expected {sorted(EXPECTED)}"
    return True, "3 TODOs with file and line"
