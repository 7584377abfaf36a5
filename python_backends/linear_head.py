"""A linear classifier head over embeddings: probabilities (softmax of logits) and the top label.

Weights come from the model version folder (`head.npz`, written by `modelrepo build`):
`weights` [classes, dim], `bias` [classes], `labels` [classes]. A binary scikit-learn logistic
regression is stored as two logits (0 and w.x+b), which gives the same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import softmax

from modelrepo.python_backends.batching import Tensors, answer_each, concat_requests, required, split_rows
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError

HEAD_FILENAME = "head.npz"


class LinearClassifierHead:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, labels: Sequence[str], input_name: str = "EMBEDDING"):
        if weights.shape[0] != len(labels) or bias.shape != (len(labels),):
            raise ValueError(f"head shapes disagree: weights {weights.shape}, bias {bias.shape}, {len(labels)} labels")
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.labels = np.array([label.encode("utf-8") for label in labels], dtype=object)
        self.input_name = input_name

    @classmethod
    def load(cls, path: Path, input_name: str = "EMBEDDING") -> "LinearClassifierHead":
        with np.load(path) as data:
            return cls(data["weights"], data["bias"], [str(label) for label in data["labels"]], input_name)

    @classmethod
    def from_context(cls, context: ModelContext) -> "LinearClassifierHead":
        return cls.load(context.version_dir / HEAD_FILENAME, context.parameter("input_name", "EMBEDDING"))

    def save(self, path: Path) -> None:
        labels = np.array([label.decode("utf-8") for label in self.labels])
        np.savez(path, weights=self.weights, bias=self.bias, labels=labels)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return softmax(features @ self.weights.T + self.bias, axis=1).astype(np.float32)

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.check_features, self.classify_requests)

    def check_features(self, request: Tensors) -> Tensors:
        features = required(request, self.input_name)
        if not np.isfinite(features).all():
            raise InputError(self.input_name, "must contain only finite numbers (no NaN or inf)")
        return {self.input_name: features}

    def classify_requests(self, requests: list[Tensors]) -> list[Tensors]:
        joined, sizes = concat_requests(requests, [self.input_name])
        probabilities = self.predict_proba(joined[self.input_name])
        labels = self.labels[probabilities.argmax(axis=1)].reshape(-1, 1)
        return split_rows({"PROBABILITIES": probabilities, "LABEL": labels}, sizes)
