"""credit_aggregate: deep-ensemble statistics over the member probabilities.

- DEFAULT_PROBABILITY: the mean of the members (level 1: the score).
- UNCERTAINTY: their sample standard deviation (ddof=1).
- INTERVAL: [mean - z*std, mean + z*std] clipped to [0, 1], z the normal quantile for
  `interval_level` (config parameter, default 0.90): a normal approximation of the members' spread,
  i.e. where the probability lies if the members are a sample of plausible models (level 3).
- CLASS_PROBABILITIES: [1 - p, p] in labels.txt order (no_default, default): answers Triton's
  classification extension (level 2).
- DECISION: "decline" if p >= decline_at; "approve" if p < approve_below and the uncertainty is at
  most review_above_uncertainty; otherwise "review". Thresholds are config parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import norm

from modelrepo.python_backends.batching import Tensors, answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import COUNTER, HISTOGRAM, InMemoryRegistry

# The public outputs of every credit pipeline, in config order.
OUTPUT_NAMES = ("DEFAULT_PROBABILITY", "UNCERTAINTY", "INTERVAL", "DECISION", "CLASS_PROBABILITIES")
PROBABILITY_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
UNCERTAINTY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]


@dataclass(frozen=True)
class DecisionPolicy:
    approve_below: float = 0.1
    decline_at: float = 0.5
    review_above_uncertainty: float = 0.05

    def decide(self, probability: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
        decision = np.full(probability.shape, "review", dtype=object)
        decision[(probability < self.approve_below) & (uncertainty <= self.review_above_uncertainty)] = "approve"
        decision[probability >= self.decline_at] = "decline"
        return decision


@lru_cache(maxsize=8)
def interval_z(interval_level: float) -> float:
    """The two-sided normal quantile of `interval_level`: once per level (scipy's ppf costs more than
    the rest of a small batch's statistics)."""
    return float(norm.ppf(0.5 + interval_level / 2))


def summarise(members: np.ndarray, interval_level: float) -> dict[str, np.ndarray]:
    """members: [n, k] probabilities -> mean [n], std [n], interval [n, 2]."""
    mean = members.mean(axis=1)
    std = members.std(axis=1, ddof=1)
    z = interval_z(interval_level)
    interval = np.clip(np.stack([mean - z * std, mean + z * std], axis=1), 0.0, 1.0)
    return {"mean": mean, "std": std, "interval": interval}


def in_unit_interval(values: np.ndarray) -> bool:
    return bool(((values >= 0) & (values <= 1)).all())


class EnsembleAggregate:
    def __init__(self, member_inputs: Sequence[str], policy: DecisionPolicy, interval_level: float = 0.9, metrics=None):
        self.member_inputs = list(member_inputs)
        self.policy = policy
        self.interval_level = interval_level
        metrics = metrics or InMemoryRegistry()
        self.probability_hist = metrics.family(
            "credit_default_probability", "Ensemble-mean default probability per scored row", HISTOGRAM
        ).metric({}, PROBABILITY_BUCKETS)
        self.uncertainty_hist = metrics.family(
            "credit_uncertainty", "Ensemble standard deviation per scored row", HISTOGRAM
        ).metric({}, UNCERTAINTY_BUCKETS)
        self.decisions = metrics.family("credit_decisions_total", "Decisions made, by decision", COUNTER)

    @classmethod
    def from_context(cls, context: ModelContext, member_inputs: Sequence[str] | None = None) -> "EnsembleAggregate":
        """`member_inputs`: the member tensors' names; by default the config's inputs named MEMBER_*."""
        if member_inputs is None:
            member_inputs = [spec["name"] for spec in context.config.get("input", []) if spec["name"].startswith("MEMBER_")]
        policy = DecisionPolicy(
            approve_below=context.float_parameter("approve_below", DecisionPolicy.approve_below),
            decline_at=context.float_parameter("decline_at", DecisionPolicy.decline_at),
            review_above_uncertainty=context.float_parameter(
                "review_above_uncertainty", DecisionPolicy.review_above_uncertainty
            ),
        )
        return cls(member_inputs, policy, context.float_parameter("interval_level", 0.9), context.metrics)

    def check(self, request: Tensors) -> Tensors:
        tensors = {name: required(request, name) for name in self.member_inputs}
        if not in_unit_interval(np.concatenate([values.reshape(-1) for values in tensors.values()])):
            # one test for all members; the first offending one is named (NaN fails both comparisons)
            name = next(name for name, values in tensors.items() if not in_unit_interval(values))
            raise InputError(name, "must be probabilities in [0, 1]")
        return tensors

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check, self.aggregate)

    def aggregate(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, self.member_inputs)
        members = np.concatenate([joined[name].reshape(-1, 1) for name in self.member_inputs], axis=1)
        stats = summarise(members.astype(np.float64), self.interval_level)
        decision = self.policy.decide(stats["mean"], stats["std"])
        for probability, uncertainty in zip(stats["mean"].tolist(), stats["std"].tolist()):
            self.probability_hist.observe(probability)  # a histogram takes one observation per call
            self.uncertainty_hist.observe(uncertainty)
        for label, count in zip(*np.unique(decision.astype(str), return_counts=True)):
            self.decisions.metric({"decision": str(label)}).increment(float(count))  # one call per decision made
        outputs = {
            "DEFAULT_PROBABILITY": stats["mean"].reshape(-1, 1).astype(np.float32),
            "UNCERTAINTY": stats["std"].reshape(-1, 1).astype(np.float32),
            "INTERVAL": stats["interval"].astype(np.float32),
            "CLASS_PROBABILITIES": np.stack([1 - stats["mean"], stats["mean"]], axis=1).astype(np.float32),
            "DECISION": np.array([d.encode() for d in decision], dtype=object).reshape(-1, 1),
        }
        return split_rows(outputs, sizes)
