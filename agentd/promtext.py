"""Prometheus' text exposition format (version 0.0.4), and a histogram to fill it.

Pure and dependency-free (agentd.metrics renders through it; agentctl prints
what it made). The format's rules are kept here once: a family is its
``# HELP`` line, its ``# TYPE`` line, then its samples, each family once and
together; help text escapes backslash and newline, label values also the
double quote; a histogram's ``_bucket`` samples are cumulative, end with
``le="+Inf"`` (equal to ``_count``) and come with ``_sum`` and ``_count``.
Counters are named ``..._total`` by their callers (tests/unit/test_metrics.py
checks every family agentd exports).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge", "histogram")
NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    suffix: str  # "" or _bucket, _sum, _count
    labels: Labels
    value: float


@dataclass
class Family:
    """One metric family: NAME, KIND (counter, gauge, histogram), HELP, samples."""

    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name) or self.kind not in KINDS:
            raise ValueError(f"bad metric family {self.name!r} ({self.kind})")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")

    def add(self, value: float, **labels: str | int) -> Family:
        self.samples.append(Sample("", _labels(labels), float(value)))
        return self

    def add_histogram(self, histogram: Histogram, **labels: str | int) -> Family:
        self.samples.extend(histogram.samples(_labels(labels)))
        return self


def _labels(labels: dict[str, str | int]) -> Labels:
    for key in labels:
        if not LABEL_RE.match(key) or key.startswith("__"):
            raise ValueError(f"bad label name {key!r}")
    return tuple((k, str(v)) for k, v in labels.items())


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a fraction; +Inf, -Inf and NaN as Prometheus spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> str:
    """The exposition text of FAMILIES (each name once), ending in a newline."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric family {family.name!r} twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for s in family.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in s.labels)
            name = family.name + s.suffix
            lines.append(
                f"{name}{{{labels}}} {format_value(s.value)}"
                if labels
                else f"{name} {format_value(s.value)}"
            )
    return "\n".join(lines) + "\n"


class Histogram:
    """Observations counted into buckets with upper bounds BOUNDS (ascending)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be distinct and ascending")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value
        self.count += 1

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both (same bounds)."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bounds")
        both = Histogram(self.bounds)
        both.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        both.sum, both.count = self.sum + other.sum, self.count + other.count
        return both

    def samples(self, labels: Labels = ()) -> list[Sample]:
        out: list[Sample] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            le = "+Inf" if math.isinf(bound) else format_value(bound)
            out.append(Sample("_bucket", (*labels, ("le", le)), float(running)))
        out.append(Sample("_sum", labels, self.sum))
        out.append(Sample("_count", labels, float(self.count)))
        return out
