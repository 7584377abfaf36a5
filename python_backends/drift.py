"""Population stability index (PSI) of a live window against a training reference.

Reference bins are cut at training quantiles; PSI = sum((a - e) * ln(a / e)) over bins, which is the
symmetric KL divergence KL(a||e) + KL(e||a). Rule of thumb: < 0.1 stable, 0.1-0.25 shifting,
> 0.25 drifted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.special import rel_entr

FLOOR = 1e-4  # keeps empty bins from making the divergence infinite


@dataclass
class DriftReference:
    inner_edges: list[float]  # bin boundaries; the outer bins are open-ended
    proportions: list[float]

    @classmethod
    def from_training(cls, values: np.ndarray, bins: int = 10) -> "DriftReference":
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        return cls(edges.tolist(), histogram(values, edges).tolist())


def histogram(values: np.ndarray, inner_edges) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(actual, FLOOR)
    e = np.maximum(expected, FLOOR)
    return float(rel_entr(a, e).sum() + rel_entr(e, a).sum())


@dataclass
class DriftWindow:
    """The last `size` values of one feature, scored against its reference."""

    reference: DriftReference
    size: int = 1000
    min_rows: int = 100
    values: deque = field(default_factory=deque)

    def full_enough(self) -> bool:
        return len(self.values) >= min(self.min_rows, self.size)

    def add(self, new_values: np.ndarray) -> None:
        self.values.extend(np.asarray(new_values, dtype=np.float64).reshape(-1).tolist())
        while len(self.values) > self.size:
            self.values.popleft()

    def score(self) -> float:
        if not self.values:
            return 0.0
        actual = histogram(np.fromiter(self.values, dtype=np.float64), self.reference.inner_edges)
        return psi(actual, np.asarray(self.reference.proportions))
