"""credit_preprocess: validate STUDENT / BALANCE / INCOME and standardise them with the training
statistics shipped in the model version (features.json), so training and serving cannot skew.

Rules (each refusal names the field, the batch item and the rule, and is counted in
credit_rejected_inputs_total{field,reason}): STUDENT is "Yes" or "No" (exact, UTF-8);
BALANCE and INCOME are finite and >= 0. Every accepted row also feeds a sliding-window PSI per
feature against the training distribution (gauge credit_feature_psi{feature}).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelrepo.python_backends.batching import Tensors, answer_each, required, split_rows
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.drift import DriftReference, DriftWindow
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import COUNTER, GAUGE, InMemoryRegistry

FEATURES_FILENAME = "features.json"
FEATURE_ORDER = ("student", "balance", "income")
STUDENT_VALUES = {"Yes": 1.0, "No": 0.0}
NUMERIC_INPUTS = {"BALANCE": "balance", "INCOME": "income"}
INPUT_NAMES = ("STUDENT", *NUMERIC_INPUTS)  # the public inputs of every credit pipeline


@dataclass
class FeatureSpec:
    mean: list[float]
    std: list[float]
    drift: dict[str, DriftReference]

    @classmethod
    def load(cls, path: Path) -> "FeatureSpec":
        data = json.loads(Path(path).read_text())
        return cls(data["mean"], data["std"], {k: DriftReference(**v) for k, v in data["drift"].items()})

    def save(self, path: Path) -> None:
        payload = {
            "features": list(FEATURE_ORDER),
            "mean": self.mean,
            "std": self.std,
            "student_values": STUDENT_VALUES,
            "drift": {k: {"inner_edges": v.inner_edges, "proportions": v.proportions} for k, v in self.drift.items()},
        }
        Path(path).write_text(json.dumps(payload, indent=2))

    @classmethod
    def fit(cls, raw: np.ndarray) -> "FeatureSpec":
        """raw: [n, 3] in FEATURE_ORDER (student as 0/1)."""
        drift = {name: DriftReference.from_training(raw[:, i]) for i, name in enumerate(FEATURE_ORDER)}
        return cls(raw.mean(axis=0).tolist(), raw.std(axis=0).tolist(), drift)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)


class CreditInputError(InputError):
    def __init__(self, field: str, reason: str, rule: str, item: int):
        super().__init__(field, rule, item)
        self.reason = reason


def rejection_counter(metrics):
    return metrics.family("credit_rejected_inputs_total", "Credit requests refused by input validation", COUNTER)


def count_rejection(counter, err: CreditInputError) -> None:
    counter.metric({"field": err.input_name, "reason": err.reason}).increment(1.0)


def validate_credit_inputs(request: Tensors) -> np.ndarray:
    """One request -> [n, 3] raw features in FEATURE_ORDER, or a CreditInputError for the first rule broken."""
    for name in INPUT_NAMES:
        if request.get(name) is None:
            raise CreditInputError(name, "missing", "is required but was not sent", 0)
    student = required(request, "STUDENT").reshape(-1)
    rows = len(student)
    columns = [np.zeros(rows)]
    for item, value in enumerate(student):
        raw = bytes(value) if not isinstance(value, str) else value.encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CreditInputError("STUDENT", "not_utf8", "must be valid UTF-8", item) from None
        if text not in STUDENT_VALUES:
            allowed = " or ".join(f"'{v}'" for v in STUDENT_VALUES)
            raise CreditInputError("STUDENT", "unknown_category", f"must be {allowed}, got {text[:40]!r}", item)
        columns[0][item] = STUDENT_VALUES[text]
    for name in NUMERIC_INPUTS:
        values = required(request, name).reshape(-1).astype(np.float64)
        if len(values) != rows:
            raise CreditInputError(name, "shape", f"has {len(values)} rows but STUDENT has {rows}", 0)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise CreditInputError(name, "not_finite", "must be a finite number (no NaN or inf)", int(bad[0]))
        negative = np.flatnonzero(values < 0)
        if negative.size:
            raise CreditInputError(name, "negative", f"must be >= 0, got {values[negative[0]]:g}", int(negative[0]))
        columns.append(values)
    return np.stack(columns, axis=1)


class CreditFeatures:
    def __init__(self, spec: FeatureSpec, metrics=None, drift_window: int = 1000):
        self.spec = spec
        metrics = metrics or InMemoryRegistry()
        self.rejections = rejection_counter(metrics)
        self.psi_gauge = metrics.family(
            "credit_feature_psi", "PSI of each feature over a sliding window vs the training data", GAUGE
        )
        self.windows = {name: DriftWindow(spec.drift[name], drift_window) for name in FEATURE_ORDER}

    @classmethod
    def from_context(cls, context: ModelContext) -> "CreditFeatures":
        return cls(
            FeatureSpec.load(context.version_dir / FEATURES_FILENAME),
            context.metrics,
            context.int_parameter("drift_window", 1000),
        )

    def raw_features(self, request: Tensors) -> np.ndarray:
        try:
            return validate_credit_inputs(request)
        except CreditInputError as err:
            count_rejection(self.rejections, err)
            raise

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.raw_features, self.standardise_requests)

    def standardise_requests(self, raws: list[np.ndarray]) -> list[Tensors]:
        joined = np.concatenate(raws)
        for index, name in enumerate(FEATURE_ORDER):
            window = self.windows[name]
            window.add(joined[:, index])
            window.publish_if_due(self.psi_gauge.metric({"feature": name}))
        return split_rows({"FEATURES": self.spec.standardise(joined)}, [len(raw) for raw in raws])
