import re
import subprocess

from suite import Result


def check(r: Result) -> tuple[bool, str]:
    path = {"PATH": "/usr/local/bin:/usr/bin:/bin"}  # an agent's PATH (agentd.executor)
    out = subprocess.run(["python3", "--version"], capture_output=True, text=True, env=path).stdout
    version = out.split()[-1]
    if not re.search(rf"(?<![\d.]){re.escape(version)}(?![\d])", r.answer):
        return False, f"answer does not give {version}"
    return True, f"Python {version}"
