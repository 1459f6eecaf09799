from pathlib import Path

from suite import Result, run_untrusted, scratch


def check(r: Result) -> tuple[bool, str]:
    script = r.file("countdown.sh")
    if script is None:
        return False, "no artifacts/countdown.sh"
    with scratch() as tmp:
        (Path(tmp) / "countdown.sh").write_bytes(script)
        for n in (3, 1, 10):
            p = run_untrusted(["bash", "countdown.sh", str(n)], Path(tmp), timeout=10)
            want = [str(i) for i in range(n, 0, -1)] + ["liftoff"]
            got = [line.strip() for line in p.stdout.strip().splitlines()]
            if p.returncode != 0 or got != want:
                return False, f"countdown.sh {n}: exit {p.returncode}, printed {got[:12]}"
    return True, "right for 3, 1 and 10"
