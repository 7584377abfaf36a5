"""Recipes for tabular models: scikit-learn estimators / pipelines, XGBoost and LightGBM native files.

All become ONNX through their converters (skl2onnx, onnxmltools) with one input INPUT, FP32
[n_features]; a classifier's graph answers SCORES (class probabilities, the model's class order),
a regressor's PREDICTION. The reference is the framework's own predict / predict_proba.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelrepo.build.add.graphs import rename_outputs
from modelrepo.build.add.recipes import AddError, AddRequest, Export, Recipe, register
from modelrepo.build.add.samples import read_feature_rows, require_sample
from modelrepo.python_backends.classifier_output import SCORES

INPUT = "INPUT"
PREDICTION = "PREDICTION"
OPSET = {"": 17, "ai.onnx.ml": 3}
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


@dataclass
class Tabular:
    """A loaded tabular model: how it converts and how it predicts (the reference)."""

    model: Any
    n_features: int
    classifier: bool
    labels: list[str]
    convert: Any  # () -> onnx.ModelProto with input INPUT, FP32 [batch, n_features]
    predict: Any  # rows float32 [n, f] -> probabilities [n, k] or predictions [n]


def export_tabular(request: AddRequest, work: Path, loaded: Tabular) -> Export:
    import onnx

    task = request.task or ("classification" if loaded.classifier else "regression")
    if task != ("classification" if loaded.classifier else "regression"):
        raise AddError(f"--task {task} does not fit {request.source.name}: it is a "
                       f"{'classifier' if loaded.classifier else 'regressor'}")
    rows = read_feature_rows(require_sample(request.sample, "a tabular model"), loaded.n_features)
    try:
        graph = loaded.convert()
    except Exception as err:  # the converters raise several types for a model they cannot convert
        raise AddError(f"{request.source.name} cannot be converted to ONNX ({type(err).__name__}: {err})") from None
    rename_outputs(graph, {"probabilities": SCORES} if loaded.classifier else {"variable": PREDICTION})
    path = work / "model.onnx"
    onnx.save(graph, str(path))
    answer = np.asarray(loaded.predict(rows), dtype=np.float64)
    labels = list(request.labels) if request.labels else loaded.labels
    if loaded.classifier:
        reference = {"PROBABILITIES": answer}
    else:
        reference = {PREDICTION: answer.reshape(len(rows), -1)}
    return Export(path, task, {INPUT: rows}, reference, labels=labels if loaded.classifier else [],
                  notes={"n_features": loaded.n_features})


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """Boosters answer a binary model with P(class 1) only: [n] -> [n, 2]."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.stack([1 - raw, raw], axis=1) if raw.ndim == 1 else raw


# scikit-learn ----------------------------------------------------------------------------------------

def is_pickle(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES


def load_sklearn(path: Path) -> Tabular:
    """joblib.load runs the pickle's code: only ever on the one file the user named."""
    import joblib
    from sklearn.base import is_classifier, is_regressor
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    try:
        model = joblib.load(path)
    except Exception as err:  # a pickle can fail in any way; the user needs the reason, in one sentence
        raise AddError(f"{path} cannot be loaded as a scikit-learn model ({type(err).__name__}: {err})") from None
    if not (is_classifier(model) or is_regressor(model)) or not hasattr(model, "n_features_in_"):
        raise AddError(f"{path} is not a fitted scikit-learn classifier or regressor ({type(model).__name__})")
    classifier = is_classifier(model)
    if classifier and not hasattr(model, "predict_proba"):
        raise AddError(f"{path.name}: {type(model).__name__} gives no class probabilities (no predict_proba); "
                       f"train it with probabilities, or calibrate it (CalibratedClassifierCV)")
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(final): {"zipmap": False}} if classifier else None

    return Tabular(
        model, int(model.n_features_in_), classifier, [str(c) for c in getattr(model, "classes_", [])],
        lambda: to_onnx(model, initial_types=[(INPUT, FloatTensorType([None, int(model.n_features_in_)]))],
                        options=options, target_opset=OPSET),
        (lambda rows: model.predict_proba(rows)) if classifier else (lambda rows: model.predict(rows)),
    )


register(Recipe(
    "sklearn", "a scikit-learn estimator or pipeline (.joblib / .pkl; loading a pickle runs its code)",
    is_pickle, lambda request, work: export_tabular(request, work, load_sklearn(Path(request.source))),
))


# XGBoost ---------------------------------------------------------------------------------------------

def is_xgboost(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix.lower() == ".ubj":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        return head.startswith(b"{") and "learner" in json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return False


def load_xgboost(path: Path) -> Tabular:
    try:
        import xgboost
    except ImportError:
        raise AddError(f"{path} is an XGBoost model: install xgboost (pip install modelrepo[boosting])") from None
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        booster = xgboost.Booster(model_file=str(path))
    except xgboost.core.XGBoostError as err:
        raise AddError(f"{path} cannot be loaded by XGBoost ({str(err).splitlines()[0]})") from None
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    classifier = objective.startswith(("binary:", "multi:"))
    if objective.startswith("multi:") and objective != "multi:softprob":
        raise AddError(f"{path.name}: objective {objective} gives no probabilities; train with multi:softprob")
    classes = int(json.loads(booster.save_config())["learner"]["learner_model_param"]["num_class"]) or 2
    n_features = booster.num_features()

    def predict(rows):
        answer = booster.predict(xgboost.DMatrix(rows))
        return class_probabilities(answer) if classifier else answer

    return Tabular(booster, n_features, classifier, [str(i) for i in range(classes)] if classifier else [],
                   lambda: convert_xgboost(booster, initial_types=[(INPUT, FloatTensorType([None, n_features]))]), predict)


register(Recipe(
    "xgboost", "an XGBoost model file (Booster.save_model: .json / .ubj)",
    is_xgboost, lambda request, work: export_tabular(request, work, load_xgboost(Path(request.source))),
))


# LightGBM --------------------------------------------------------------------------------------------

def is_lightgbm(path: Path) -> bool:
    if not path.is_file() or zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(256)
    return head.startswith(b"tree\n") and b"version=" in head


def load_lightgbm(path: Path) -> Tabular:
    try:
        import lightgbm
    except ImportError:
        raise AddError(f"{path} is a LightGBM model: install lightgbm (pip install modelrepo[boosting])") from None
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = lightgbm.Booster(model_file=str(path))
    objective = booster.dump_model()["objective"].split()[0]
    classifier = objective in ("binary", "multiclass", "multiclassova")
    classes = max(booster.dump_model()["num_class"], 2) if classifier else 0

    def predict(rows):
        answer = booster.predict(rows)
        return class_probabilities(answer) if classifier else answer

    n_features = booster.num_feature()
    return Tabular(booster, n_features, classifier, [str(i) for i in range(classes)],
                   lambda: convert_lightgbm(booster, initial_types=[(INPUT, FloatTensorType([None, n_features]))], zipmap=False),
                   predict)


register(Recipe(
    "lightgbm", "a LightGBM model file (Booster.save_model, text)",
    is_lightgbm, lambda request, work: export_tabular(request, work, load_lightgbm(Path(request.source))),
))
