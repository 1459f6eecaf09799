import json
from pathlib import Path

from suite import Result, run_untrusted, scratch

PROBE = "import json, fizzbuzz; print(json.dumps(fizzbuzz.fizzbuzz(15)))"
EXPECTED = [
    "1", "2", "Fizz", "4", "Buzz", "Fizz", "7", "8", "Fizz", "Buzz", "11", "Fizz", "13", "14",
    "FizzBuzz",
]  # fmt: skip


def check(r: Result) -> tuple[bool, str]:
    code, tests = r.file("fizzbuzz.py"), r.file("test_fizzbuzz.py")
    if code is None or tests is None:
        return False, "artifacts/fizzbuzz.py or artifacts/test_fizzbuzz.py missing"
    if b"def test" not in tests:
        return False, "test_fizzbuzz.py has no test function"
    with scratch() as tmp:
        (Path(tmp) / "fizzbuzz.py").write_bytes(code)
        p = run_untrusted(["/usr/bin/python3", "-c", PROBE], Path(tmp))
        if p.returncode != 0:
            return False, f"fizzbuzz(15) failed: {p.stderr[-200:]}"
        if json.loads(p.stdout.strip().splitlines()[-1]) != EXPECTED:
            return False, f"fizzbuzz(15) = {p.stdout.strip()[:200]}"
        (Path(tmp) / "test_fizzbuzz.py").write_bytes(tests)
        argv = [
            "/usr/bin/python3",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_fizzbuzz.py",
        ]
        t = run_untrusted(argv, Path(tmp), timeout=60)
        if t.returncode != 0:
            return False, f"its tests do not pass: {t.stdout[-300:]}"
    return True, "fizzbuzz right, its tests pass"
