from pathlib import Path

from suite import Result, run_untrusted, scratch

EXPECTED = "Sales report\nnorth    358\nsouth    287\nwest     459\nbest region: west\n"


def check(r: Result) -> tuple[bool, str]:
    path = r.home / "tools" / "report.py"
    if not path.is_file():
        return False, "tools/report.py is gone"
    with scratch() as tmp:
        (Path(tmp) / "report.py").write_bytes(path.read_bytes())
        p = run_untrusted(["/usr/bin/python3", "report.py"], Path(tmp))
    if p.returncode != 0:
        return False, f"report.py still fails: {p.stderr[-200:]}"
    if p.stdout != EXPECTED:
        return False, f"report.py prints {p.stdout!r}"
    return True, "runs and prints the report"
