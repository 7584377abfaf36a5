"""Custom metrics, declared once per handler: Triton's pb_utils.MetricFamily inside the stub,
an in-memory stand-in elsewhere (unit tests, the build), with the same calls.

Handlers get a registry from their ModelContext and never import pb_utils themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


class InMemoryMetric:
    def __init__(self, buckets: Sequence[float] | None = None):
        self.value = 0.0
        self.observations: list[float] = []
        self.buckets = list(buckets or [])

    def increment(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        self.observations.append(value)


class LabelledFamily:
    """One metric object per label set, created on first use and reused after."""

    def __init__(self):
        self.metrics: dict[tuple, Any] = {}

    def metric(self, labels: dict[str, str], buckets: Sequence[float] | None = None) -> Any:
        key = tuple(sorted(labels.items()))
        if key not in self.metrics:
            self.metrics[key] = self.create(dict(labels), buckets)
        return self.metrics[key]

    def create(self, labels: dict[str, str], buckets: Sequence[float] | None) -> Any:
        raise NotImplementedError


class InMemoryFamily(LabelledFamily):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def create(self, labels: dict[str, str], buckets: Sequence[float] | None) -> InMemoryMetric:
        return InMemoryMetric(buckets)


class InMemoryRegistry:
    def __init__(self):
        self.families: dict[str, InMemoryFamily] = {}

    def family(self, name: str, description: str, kind: str) -> InMemoryFamily:
        return self.families.setdefault(name, InMemoryFamily(kind))

    def value(self, name: str, **labels: str) -> float:
        return self.families[name].metric(labels).value


class TritonFamily(LabelledFamily):
    def __init__(self, family: Any):
        super().__init__()
        self._family = family

    def create(self, labels: dict[str, str], buckets: Sequence[float] | None) -> Any:
        if buckets is None:
            return self._family.Metric(labels=labels)
        return self._family.Metric(labels=labels, buckets=list(buckets))


# Triton 2.51 shares one server-side family (and one metric per label set) between every
# MetricFamily / Metric object of the same name, and deleting either removes the shared one. When a
# config reload replaces a model instance, the old instance's objects would be deleted while the new
# instance still uses them: the server then segfaults (seen here). So families and metrics created
# in a stub are kept for the life of the process and never deleted.
_KEEP_ALIVE: list[Any] = []


class TritonRegistry:
    """pb_utils.MetricFamily behind the same interface (created only inside the stub)."""

    def __init__(self, pb_utils: Any):
        _KEEP_ALIVE.append(self)
        self._pb = pb_utils
        self._families: dict[str, TritonFamily] = {}
        self._kinds = {COUNTER: pb_utils.MetricFamily.COUNTER, GAUGE: pb_utils.MetricFamily.GAUGE,
                       HISTOGRAM: pb_utils.MetricFamily.HISTOGRAM}

    def family(self, name: str, description: str, kind: str) -> TritonFamily:
        if name not in self._families:
            self._families[name] = TritonFamily(
                self._pb.MetricFamily(name=name, description=description, kind=self._kinds[kind])
            )
        return self._families[name]


