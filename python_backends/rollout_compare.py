"""How two versions' answers are compared during a rollout (plain numpy, no server).

- disagreement of one shadowed request: "label" (classification: the top class, or a string output,
  changes) or "distance" (regression / embedding: the L2 distance of the first numeric output's rows
  exceeds `tolerance`);
- prediction-distribution shift: PSI of the candidate's predictions against the primary's, one number
  per row (label: the top class index; distance: the row's mean), bins cut at both windows' pooled quantiles.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from modelrepo.python_backends.drift import DriftReference, histogram, psi

COMPARISONS = ("label", "distance")


def first_numeric(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    for value in outputs.values():
        if value.dtype != object:
            return value.reshape(len(value), -1).astype(np.float64)
    return None


def row_summary(outputs: dict[str, np.ndarray], comparison: str) -> np.ndarray:
    """One number per row: what the PSI compares."""
    values = first_numeric(outputs)
    if values is None:  # string outputs only: each row's first value, as a category index
        labels = next(iter(outputs.values())).reshape(-1)
        return np.array([hash(v) % 997 for v in labels], dtype=np.float64)
    if comparison == "label":
        return values.argmax(axis=1).astype(np.float64) if values.shape[1] > 1 else (values[:, 0] >= 0.5).astype(np.float64)
    return values.mean(axis=1)


def disagreements(primary: dict[str, np.ndarray], candidate: dict[str, np.ndarray], comparison: str,
                  tolerance: float) -> tuple[int, float]:
    """(rows that disagree, sum of the rows' distances: 0 for labels)."""
    if comparison == "label":
        strings = [name for name, value in primary.items() if value.dtype == object]
        if strings:
            name = strings[0]
            return int((primary[name].reshape(-1) != candidate[name].reshape(-1)).sum()), 0.0
        ours, theirs = row_summary(primary, "label"), row_summary(candidate, "label")
        return int((ours != theirs).sum()), 0.0
    ours, theirs = first_numeric(primary), first_numeric(candidate)
    distance = np.linalg.norm(ours - theirs, axis=1)
    return int((distance > tolerance).sum()), float(distance.sum())


@dataclass
class PredictionShift:
    """The last `size` row summaries of each version; `score()` is the candidate's PSI against the primary's."""

    size: int = 1000
    min_rows: int = 30
    primary: deque = field(default_factory=deque)
    candidate: deque = field(default_factory=deque)

    def add(self, side: str, values: np.ndarray) -> None:
        window = self.primary if side == "primary" else self.candidate
        window.extend(np.asarray(values, dtype=np.float64).reshape(-1).tolist())
        while len(window) > self.size:
            window.popleft()

    def score(self) -> float | None:
        """None until both sides hold `min_rows` rows."""
        if min(len(self.primary), len(self.candidate)) < self.min_rows:
            return None
        primary = np.fromiter(self.primary, dtype=np.float64)
        candidate = np.fromiter(self.candidate, dtype=np.float64)
        # bins at the pooled quantiles: a constant primary still leaves a bin for a candidate that moved away
        edges = DriftReference.from_training(np.concatenate([primary, candidate])).inner_edges
        return psi(histogram(candidate, edges), histogram(primary, edges))
