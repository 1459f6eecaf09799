import json
from pathlib import Path

from suite import Result, run_untrusted, scratch

CASES = [-7, -1, 0, 1, 2, 3, 4, 9, 17, 25, 29, 49, 97, 561, 7919, 7921, 1000003, 9999991, 9999993]
PRIMES = {2, 3, 17, 29, 97, 7919, 1000003, 9999991}
PROBE = "import json, primes; print(json.dumps([bool(primes.is_prime(n)) for n in CASES]))"


def check(r: Result) -> tuple[bool, str]:
    code = r.file("primes.py")
    if code is None:
        return False, "no artifacts/primes.py"
    with scratch() as tmp:
        (Path(tmp) / "primes.py").write_bytes(code)
        probe = f"CASES = {CASES!r}\n{PROBE}"
        p = run_untrusted(["/usr/bin/python3", "-c", probe], Path(tmp), timeout=20)
    if p.returncode != 0:
        return False, f"importing or calling it failed: {p.stderr[-300:]}"
    got = json.loads(p.stdout.strip().splitlines()[-1])
    wrong = [n for n, v in zip(CASES, got, strict=True) if v != (n in PRIMES)]
    if wrong:
        return False, f"wrong for {wrong}"
    return True, f"right for {len(CASES)} cases"
