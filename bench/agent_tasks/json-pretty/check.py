import json
from typing import Any

from suite import Result

FIXTURE = "settings.min.json"


def check(r: Result) -> tuple[bool, str]:
    text = r.text("settings.json")
    if text is None:
        return False, "no artifacts/settings.json"
    unsorted: list[list[str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if keys != sorted(keys):
            unsorted.append(keys)
        return dict(items)

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except ValueError as e:
        return False, f"not JSON: {e}"
    if data != json.loads((r.home / FIXTURE).read_text()):
        return False, "the data changed"
    if unsorted:
        return False, f"keys not sorted: {unsorted[0]}"
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines()}
    if (
        len(text.splitlines()) < 10
        or "\t" in text
        or any(i % 2 for i in indents)
        or 2 not in indents
    ):
        return False, "not indented with 2 spaces"
    if 4 not in indents:
        return False, "nested objects not indented"
    return True, "same data, sorted keys, 2-space indentation"
