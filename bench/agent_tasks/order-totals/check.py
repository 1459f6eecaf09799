import json

from suite import Result

EXPECTED = {"Hana": 58.29, "Igor": 21.0, "Jade": 33.5}


def check(r: Result) -> tuple[bool, str]:
    text = r.text("totals.json")
    if text is None:
        return False, "no artifacts/totals.json"
    try:
        data = json.loads(text)
    except ValueError as e:
        return False, f"not JSON: {e}"
    if not isinstance(data, dict) or sorted(data) != sorted(EXPECTED):
        return (
            False,
            f"customers are {list(data) if isinstance(data, dict) else type(data).__name__}",
        )
    for name, total in EXPECTED.items():
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, f"{name}: {value!r} is not a number"
        if abs(value - total) > 0.005:
            return False, f"{name}: {value}, expected {total}"
    return True, "3 customers, right totals"
