"""An added classifier's last step: class scores -> PROBABILITIES (in labels.txt order) and LABEL.

`scores` parameter: "probabilities" (the graph already answers them, e.g. scikit-learn or XGBoost
through their converters) or "logits" (softmax here, e.g. a transformers sequence classifier).
The model's own metrics: predictions by label (modelrepo_model_predictions_total{model,label}),
the top probability (histogram modelrepo_model_confidence{model}) and, when drift.json has a
reference for it, the PSI of the confidence against the sample (served_graph.DriftMonitor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax

from modelrepo.python_backends.batching import Tensors, answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.metrics import COUNTER, HISTOGRAM, InMemoryRegistry
from modelrepo.python_backends.served_graph import DRIFT_FILENAME, DriftMonitor, load_drift

SCORES = "SCORES"
LABELS_FILENAME = "labels.txt"
CONFIDENCE = "CONFIDENCE"  # the drift reference's tensor name for the top probability
CONFIDENCE_BUCKETS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]


def read_labels(path: Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def class_probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    return (softmax(scores.astype(np.float64), axis=1) if kind == "logits" else scores).astype(np.float32)


class ClassifierOutput:
    def __init__(self, model: str, labels: Sequence[str], scores: str = "probabilities", metrics=None,
                 drift: DriftMonitor | None = None):
        if scores not in ("probabilities", "logits"):
            raise ValueError(f"scores must be 'probabilities' or 'logits', got {scores!r}")
        self.model = model
        self.labels = np.array([label.encode("utf-8") for label in labels], dtype=object)
        self.scores = scores
        metrics = metrics or InMemoryRegistry()
        self.drift = drift or DriftMonitor(model, {}, metrics)
        self.predictions = metrics.family("modelrepo_model_predictions_total", "Predictions of an added classifier, by label", COUNTER)
        self.confidence = metrics.family(
            "modelrepo_model_confidence", "Top class probability of an added classifier per row", HISTOGRAM
        ).metric({"model": model}, CONFIDENCE_BUCKETS)

    @classmethod
    def from_context(cls, context: ModelContext) -> "ClassifierOutput":
        model = context.parameter("public_model", context.name)  # the ensemble clients call
        drift = DriftMonitor(model, load_drift(context.version_dir / DRIFT_FILENAME), context.metrics,
                             context.int_parameter("drift_window", 1000))
        return cls(model, read_labels(context.version_dir / LABELS_FILENAME), context.parameter("scores", "probabilities"),
                   context.metrics, drift)

    def check_scores(self, request: Tensors) -> Tensors:
        scores = required(request, SCORES)
        if scores.ndim != 2 or scores.shape[1] != len(self.labels):
            raise InputError(SCORES, f"each batch item must have {len(self.labels)} class scores, got shape {list(scores.shape[1:])}")
        if not np.isfinite(scores).all():
            raise InputError(SCORES, "must contain only finite numbers (no NaN or inf)")
        return {SCORES: scores}

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check_scores, self.classify_requests)

    def classify(self, scores: np.ndarray) -> Tensors:
        probabilities = class_probabilities(scores, self.scores)
        top = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        # each metric call is an IPC round trip in the stub: one count per label predicted, not per row
        for index, count in enumerate(np.bincount(top, minlength=len(self.labels))):
            if count:
                self.predictions.metric({"model": self.model, "label": self.labels[index].decode()}).increment(float(count))
        for value in confidence.tolist():
            self.confidence.observe(value)  # a histogram takes one observation per call
        self.drift.observe({CONFIDENCE: confidence})
        return {"PROBABILITIES": probabilities, "LABEL": self.labels[top].reshape(-1, 1)}

    def classify_requests(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, [SCORES])
        return split_rows(self.classify(joined[SCORES]), sizes)
