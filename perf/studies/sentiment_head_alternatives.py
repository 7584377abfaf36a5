"""Which head on MiniLM embeddings classifies the reviews best? (The build uses logistic regression.)

    .venv/bin/python -m modelrepo.perf.studies.sentiment_head_alternatives

Uses the review embeddings cached by `modelrepo build` (.cache/build/review_embeddings); trains on
modeldata/training_data and scores accuracy and ROC-AUC on testing_data.
Writes perf/results/sentiment_head_alternatives.{json,md}.
"""

from __future__ import annotations

import warnings

import numpy as np

from modelrepo.build.review_data import reviews
from modelrepo.build.sentiment import EMBEDDINGS_FILENAME, POSITIVE
from modelrepo.paths import cache_dir
from modelrepo.perf.results import record


def candidates():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    for c in (0.3, 1.0, 3.0, 10.0):
        yield f"logistic regression C={c}", LogisticRegression(C=c, max_iter=5000)
    for c in (1.0, 3.0):
        yield f"RBF SVM C={c}", SVC(C=c, probability=True, random_state=0)
    for alpha in (1e-3, 1e-1):
        yield f"MLP 128 alpha={alpha}", MLPClassifier((128,), alpha=alpha, max_iter=500, early_stopping=True, random_state=0)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from sklearn.metrics import accuracy_score, roc_auc_score

    # No options; parsing first makes --help print the usage instead of running the study.
    argparse.ArgumentParser(prog="python -m modelrepo.perf.studies.sentiment_head_alternatives", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    warnings.filterwarnings("ignore")
    with np.load(cache_dir() / "build" / "review_embeddings" / EMBEDDINGS_FILENAME) as data:
        x_train, x_test = data["training_data"], data["testing_data"]
    y_train, y_test = reviews("training_data").score.to_numpy(), reviews("testing_data").score.to_numpy()
    rows = []
    for name, model in candidates():
        model.fit(x_train, y_train)
        positive = list(model.classes_).index(POSITIVE)
        rows.append({
            "head": name,
            "accuracy": float(accuracy_score(y_test, model.predict(x_test))),
            "roc_auc": float(roc_auc_score(y_test == POSITIVE, model.predict_proba(x_test)[:, positive])),
        })
    body = ["| head | test accuracy | test ROC-AUC |", "| --- | --- | --- |"]
    body += [f"| {r['head']} | {r['accuracy']:.3f} | {r['roc_auc']:.3f} |" for r in rows]
    body += ["", f"Majority class: {float((y_test == 'great').mean()):.3f}."]
    command = ".venv/bin/python -m modelrepo.perf.studies.sentiment_head_alternatives"
    print(record("sentiment_head_alternatives", "Sentiment heads on MiniLM embeddings", command, {"rows": rows}, body,
                 "One run, fixed seeds."))


if __name__ == "__main__":
    main()
