"""Decode turns: one ``llama_decode`` at a time in the service, first come
first served.

The generation engine and the embedder each decode in a thread of their own,
each with as many compute threads as the machine has cores. Run at once they
would share the cores with both teams of threads spinning at ggml's barriers,
each slowing the other by more than it gains; in turn, each decode has every
core. Turns are served in the order they were asked for (a ticket lock): a
thread that ends a decode and asks again queues behind the other one, so when
both are busy they alternate, and neither starves the other. Taking an
uncontended turn costs a few microseconds, nothing beside a decode.
"""

from __future__ import annotations

import threading


class Turns:
    """A fair (ticket) lock around decodes."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0  # the next ticket to give
        self._serving = 0  # the ticket whose turn it is

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                self._cond.wait()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()
