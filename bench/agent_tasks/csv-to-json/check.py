import json

from suite import Result

EXPECTED = [
    {"name": "Ana Souza", "age": 34, "city": "Lisbon"},
    {"name": "Bruno Keller", "age": 27, "city": "Zurich"},
    {"name": "Chen Wei", "age": 41, "city": "Shanghai"},
    {"name": "Dina Haddad", "age": 29, "city": "Beirut"},
    {"name": "Erik Lund", "age": 52, "city": "Oslo"},
]


def check(r: Result) -> tuple[bool, str]:
    text = r.text("people.json")
    if text is None:
        return False, "no artifacts/people.json"
    try:
        data = json.loads(text)
    except ValueError as e:
        return False, f"people.json is not JSON: {e}"
    if data != EXPECTED:
        return False, f"people.json differs from the expected rows: {str(data)[:200]}"
    if any(isinstance(row["age"], bool) or not isinstance(row["age"], int) for row in data):
        return False, "ages are not numbers"
    return True, "5 rows, typed"
