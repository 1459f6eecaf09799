"""The one door to llama-cpp-python: its import, its log, model loading and
the KV cache calls that changed names between 0.3.x releases.

Invariants:

- ``llama_cpp`` is imported here first, from ``$AGENTD_LLAMA_VENDOR`` if set
  (the build tree's copy), and llama.cpp's log is routed to the
  ``agentd.inference.llama`` logger before any model is loaded: its debug
  and info chatter (hundreds of lines per load) is dropped unless that logger
  is enabled for it, and the warnings of one call can be captured
  (:func:`capture_log`) to say why a load or a grammar failed.
- A model is loaded CPU-only (``n_gpu_layers = 0``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from agentd.inference.errors import LoadError

_vendor = os.environ.get("AGENTD_LLAMA_VENDOR")
if _vendor and _vendor not in sys.path:
    sys.path.insert(0, _vendor)

# Re-exported ("as"): the modules that call llama.cpp import it from here.
import llama_cpp as llama_cpp  # noqa: E402

_llama_log = logging.getLogger("agentd.inference.llama")
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line
_LLAMA_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_state = threading.local()


def _llama_log_line(level: int, text: bytes, _user_data: Any) -> None:
    """Route llama.cpp's log lines to Python logging (and to a capture, if one
    is open in this thread, so errors such as a grammar's can be reported)."""
    lvl = (
        getattr(_log_state, "last", logging.DEBUG)
        if level == 5
        else (_LLAMA_LEVELS.get(level, logging.DEBUG))
    )
    _log_state.last = lvl
    msg = text.decode("utf-8", "replace").rstrip("\n")
    capture = getattr(_log_state, "capture", None)
    if capture is not None and lvl >= logging.WARNING and msg.strip():
        capture.append(msg.strip())
    if msg and _llama_log.isEnabledFor(lvl):
        _llama_log.log(lvl, "%s", msg)


# A ctypes callback (kept referenced here for as long as llama.cpp may call it).
_llama_log_cb = llama_cpp.llama_log_callback(_llama_log_line)
llama_cpp.llama_log_set(_llama_log_cb, None)


@contextmanager
def capture_log() -> Iterator[list[str]]:
    """The warning and error lines llama.cpp logs in this thread meanwhile."""
    lines: list[str] = []
    _log_state.capture = lines
    try:
        yield lines
    finally:
        _log_state.capture = None


def _progress_callback(progress: Callable[[float], object]) -> Any:
    """A llama.cpp progress callback around ``progress``; an exception in it
    must not abort the load (ctypes would return false)."""

    def call(fraction: float, _user_data: Any) -> bool:
        try:
            return progress(float(fraction)) is not False
        except Exception:
            return True

    return llama_cpp.llama_progress_callback(call)


def load_model(path: str, progress: Callable[[float], object] | None = None) -> Any:
    """A ``llama_model`` pointer for the GGUF at ``path``, or LoadError with
    llama.cpp's last complaint. ``progress(fraction)`` is called while it
    loads, in this thread; returning False aborts the load."""
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    cb = _progress_callback(progress) if progress is not None else None
    if cb is not None:
        mp.progress_callback = cb  # ``cb`` stays referenced until the load returns
    with capture_log() as log:
        model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    if not model:
        why = f": {log[-1]}" if log else ""
        raise LoadError(f"cannot load model {path}{why}")
    return model


class Memory:
    """The KV cache of one context, by sequence (``llama_memory_*`` since
    0.3.10 or so, ``llama_kv_self_*`` before)."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._mem = (
            llama_cpp.llama_get_memory(ctx) if hasattr(llama_cpp, "llama_get_memory") else None
        )

    def seq_rm(self, seq: int, p0: int = -1) -> None:
        """Drop positions p0.. of a sequence (all of it: -1)."""
        if self._mem is not None:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, p0, -1)
        else:
            llama_cpp.llama_kv_self_seq_rm(self._ctx, seq, p0, -1)

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy every position of ``src`` to ``dst`` (at the next decode)."""
        if self._mem is not None:
            llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        else:
            llama_cpp.llama_kv_self_seq_cp(self._ctx, src, dst, -1, -1)
