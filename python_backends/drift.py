"""Population stability index (PSI) of a live window against a training reference.

Reference bins are cut at training quantiles; PSI = sum((a - e) * ln(a / e)) over bins, which is the
symmetric KL divergence KL(a||e) + KL(e||a). Rule of thumb: < 0.1 stable, 0.1-0.25 shifting,
> 0.25 drifted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import rel_entr

FLOOR = 1e-4  # keeps empty bins from making the divergence infinite
# A window's gauge is set again once this share of it is new, or after PUBLISH_AFTER_S of quiet: each set
# is a blocking IPC round trip in Triton's Python backend (a fifth of credit_default_onehop's busy stub time
# when set after every batch of a few rows: perf/results/stub_profile-credit_default_onehop-before.md), and a
# few new rows in a thousand barely move the PSI.
PUBLISH_SHARE = 0.02
PUBLISH_AFTER_S = 1.0


@dataclass
class DriftReference:
    inner_edges: list[float]  # bin boundaries; the outer bins are open-ended
    proportions: list[float]

    @classmethod
    def from_training(cls, values: np.ndarray, bins: int = 10) -> "DriftReference":
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        return cls(edges.tolist(), histogram(values, edges).tolist())


def bin_indices(values: np.ndarray, inner_edges) -> np.ndarray:
    """Each value's bin: 0 below the first edge, len(edges) from the last one up (NaN lands there too)."""
    return np.searchsorted(inner_edges, values, side="right")


def histogram(values: np.ndarray, inner_edges) -> np.ndarray:
    counts = np.bincount(bin_indices(values, inner_edges), minlength=len(inner_edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(actual, FLOOR)
    e = np.maximum(expected, FLOOR)
    return float(rel_entr(a, e).sum() + rel_entr(e, a).sum())


@dataclass
class DriftWindow:
    """The last `size` values of one feature, scored against its reference.

    The window keeps each value's reference bin and a running count per bin, so adding a batch and
    scoring cost the batch and the bins, not the window.

    publish_if_due sets a gauge to the window's PSI once it holds `min_rows`, and after that whenever
    PUBLISH_SHARE of the window is new since the last set or PUBLISH_AFTER_S have passed (a quiet
    server publishes every batch; a busy one every few dozen rows). The gauge is at most that share of
    the window behind it."""

    reference: DriftReference
    size: int = 1000
    min_rows: int = 100
    bins: deque = field(default_factory=deque)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.reference.inner_edges, dtype=np.float64)
        self.expected = np.asarray(self.reference.proportions, dtype=np.float64)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.publish_rows = max(1, round(self.size * PUBLISH_SHARE))
        self.unpublished_rows = 0
        self.published_at = -np.inf

    def __len__(self) -> int:
        return len(self.bins)

    def full_enough(self) -> bool:
        return len(self.bins) >= min(self.min_rows, self.size)

    def add(self, new_values: np.ndarray) -> None:
        values = np.asarray(new_values, dtype=np.float64).reshape(-1)[-self.size:]
        new_bins = bin_indices(values, self.edges)
        self.unpublished_rows += len(new_bins)
        self.counts += np.bincount(new_bins, minlength=len(self.counts))
        self.bins.extend(new_bins.tolist())
        overflow = len(self.bins) - self.size
        if overflow > 0:
            evicted = [self.bins.popleft() for _ in range(overflow)]
            self.counts -= np.bincount(evicted, minlength=len(self.counts))

    def score(self) -> float:
        if not self.bins:
            return 0.0
        return psi(self.counts / len(self.bins), self.expected)

    def publish_if_due(self, gauge) -> bool:
        """Sets `gauge` (anything with .set(value)) to the PSI when due (see the class); True if it did."""
        if not self.full_enough() or not self.unpublished_rows:
            return False
        now = self.clock()
        if self.unpublished_rows < self.publish_rows and now - self.published_at < PUBLISH_AFTER_S:
            return False
        gauge.set(self.score())
        self.unpublished_rows, self.published_at = 0, now
        return True
