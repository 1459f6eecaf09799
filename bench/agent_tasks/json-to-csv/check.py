import csv
import io

from suite import Result

EXPECTED = [
    ["sku", "name", "stock"],
    ["A-100", "Desk lamp", "14"],
    ["A-101", "Office chair", "3"],
    ["B-200", "Notebook, A5", "250"],
    ["B-201", "Fountain pen", "0"],
]


def check(r: Result) -> tuple[bool, str]:
    text = r.text("inventory.csv")
    if text is None:
        return False, "no artifacts/inventory.csv"
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if row]
    if rows != EXPECTED:
        return False, f"inventory.csv rows are {rows}"
    return True, "header and 4 rows (the comma quoted)"
