import re

from suite import Result

HEADER = ["Planet", "Diameter (km)", "Moons"]
ROWS = [
    ["Mercury", "4879", "0"],
    ["Venus", "12104", "0"],
    ["Earth", "12742", "1"],
    ["Mars", "6779", "2"],
    ["Jupiter", "139820", "95"],
    ["Saturn", "116460", "146"],
]


def cells(line: str) -> list[str]:
    return [c.strip().strip("*`").replace(",", "") for c in line.strip().strip("|").split("|")]


def check(r: Result) -> tuple[bool, str]:
    text = r.text("planets.md")
    if text is None:
        return False, "no artifacts/planets.md"
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2 + len(ROWS):
        return False, f"{len(lines)} table lines, expected {2 + len(ROWS)}"
    if cells(lines[0]) != HEADER:
        return False, f"header is {cells(lines[0])}"
    if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells(lines[1])) or len(cells(lines[1])) != 3:
        return False, f"no separator row under the header: {lines[1]!r}"
    body = [cells(line) for line in lines[2:]]
    if body != ROWS:
        return False, f"rows are {body}"
    return True, "header, separator, 6 rows in order"
