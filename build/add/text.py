"""Recipe for a Hugging Face transformers folder (save_pretrained output with a fast tokenizer; local
files only, never the hub): the ensemble NAME, TEXT -> tokenizer -> exported encoder [-> labels].

- `*ForSequenceClassification` -> the graph answers logits as SCORES; LABEL (config.id2label) and
  PROBABILITIES (softmax) come from the labels step. Reference: transformers on its own tokenizer.
- a sentence-transformers folder (modules.json) -> EMBEDDING with the folder's pooling (mean, CLS or
  max) and L2 normalisation inside the graph, as minilm_encoder does. Reference: sentence-transformers.
- a base encoder -> EMBEDDING, mean pooling + L2 normalisation. Reference: the same in PyTorch.
- `*ForTokenClassification` -> the graph answers per-token logits as SCORES [tokens, classes]; the
  token-labels step answers TOKENS, TOKEN_LABELS and TOKEN_PROBABILITIES per text (special tokens
  dropped). Reference: transformers on its own tokenizer, token by token.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from modelrepo.build.add.graphs import ONNX_OPSET
from modelrepo.build.add.recipes import TOKEN_CLASSIFICATION, AddError, AddRequest, Export, Recipe, TextFrontEnd, register
from modelrepo.build.add.samples import read_texts
from modelrepo.python_backends.classifier_output import SCORES
from modelrepo.python_backends.token_labels import TOKEN_PROBABILITIES

TOKEN_INPUTS = ("input_ids", "attention_mask")
TOKEN_CLASS = "TOKEN_CLASS"  # the reference's top class index per token (compared as labels, not numbers)
EMBEDDING = "EMBEDDING"
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
DEFAULT_TEXTS = [
    "The delivery was quick and the product works well.",
    "Terrible support; I want my money back.",
    "Café au lait, crème brûlée — 日本語のテキスト 🙂",
    "ok",
]


def is_transformers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def folder_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def sentence_transformers_pooling(folder: Path) -> tuple[str, bool] | None:
    """(pooling mode, normalised) of a sentence-transformers folder; None for a plain transformers one."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return None
    modules = json.loads(modules_file.read_text())
    pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
    mode = "mean"
    if pooling:
        settings = json.loads((folder / pooling["path"] / "config.json").read_text())
        # sentence-transformers 6 writes "pooling_mode"; earlier releases one boolean per mode
        modes = [settings["pooling_mode"]] if "pooling_mode" in settings else [
            name for key, name in POOLING_MODES.items() if settings.get(key)]
        if len(modes) != 1 or modes[0] not in POOLING_MODES.values():
            raise AddError(f"{folder.name}: pooling {settings} is not one of mean, CLS or max")
        mode = modes[0]
    return mode, any(m["type"].endswith("Normalize") for m in modules)


def max_tokens(folder: Path, config: dict) -> int:
    limits = [config.get("max_position_embeddings", 512)]
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = folder / name
        if path.exists():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and value < 1_000_000:
                limits.append(value)
    return min(limits)


def pool(hidden, attention_mask, mode: str):
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return (hidden + (mask - 1) * 1e9).max(dim=1).values
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def token_type_wrapper(model, head):
    """(input_ids, attention_mask) -> head(model outputs), with zero token types where the model takes them."""
    import torch

    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_types else {}
            return head(self.model(input_ids=input_ids, attention_mask=attention_mask, **extra), attention_mask)

    return Wrapped().eval()


def export_text(request: AddRequest, work: Path) -> Export:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    folder = Path(request.source)
    config = folder_config(folder)
    if not (folder / "tokenizer.json").is_file():
        raise AddError(f"{folder} has no tokenizer.json: save the folder with its fast tokenizer (save_pretrained)")
    architectures = config.get("architectures") or []
    st_pooling = sentence_transformers_pooling(folder)
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures) and st_pooling is None
    token_classifier = any(a.endswith("ForTokenClassification") for a in architectures) and st_pooling is None
    task = request.task or ("classification" if classifier else TOKEN_CLASSIFICATION if token_classifier else "embedding")
    if (task not in ("classification", TOKEN_CLASSIFICATION, "embedding") or (task == "classification" and not classifier)
            or (task == TOKEN_CLASSIFICATION and not token_classifier)):
        raise AddError(f"--task {task} does not fit {folder.name} ({', '.join(architectures) or 'a base encoder'})")
    texts = read_texts(Path(request.sample)) if request.sample else DEFAULT_TEXTS
    limit = max_tokens(folder, config)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    loader = {"classification": AutoModelForSequenceClassification, TOKEN_CLASSIFICATION: AutoModelForTokenClassification}
    model = loader.get(task, AutoModel).from_pretrained(str(folder), local_files_only=True).eval()
    if task in ("classification", TOKEN_CLASSIFICATION):
        wrapped = token_type_wrapper(model, lambda outputs, mask: outputs.logits)
        output, mode, normalised = SCORES, None, False
    else:
        mode, normalised = st_pooling or ("mean", True)

        def head(outputs, mask):
            pooled = pool(outputs.last_hidden_state, mask, mode)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1) if normalised else pooled

        wrapped = token_type_wrapper(model, head)
        output = EMBEDDING
    path = work / "model.onnx"
    example = tuple(encoded[name][:2] for name in TOKEN_INPUTS)
    with torch.no_grad():
        torch.onnx.export(
            wrapped, example, str(path), input_names=list(TOKEN_INPUTS), output_names=[output],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in TOKEN_INPUTS},
                          output: {0: "batch", 1: "sequence"} if task == TOKEN_CLASSIFICATION else {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    reference = text_reference(folder, task, st_pooling, wrapped, encoded, texts)
    if task == TOKEN_CLASSIFICATION:
        reference = token_reference(reference.pop(SCORES), tokenizer(texts, truncation=True, max_length=limit,
                                                                    padding=True, return_special_tokens_mask=True))
    labels = []
    if task in ("classification", TOKEN_CLASSIFICATION):
        labels = list(request.labels or (model.config.id2label[i] for i in range(model.config.num_labels)))
    front_end = TextFrontEnd(folder, texts, limit)
    notes = {"architectures": architectures, "max_tokens": limit, "pooling": mode, "l2_normalised": normalised}
    return Export(path, task, {}, reference, labels=labels, scores="logits", ragged_inputs=TOKEN_INPUTS,
                  text=front_end, notes=notes)


def text_reference(folder: Path, task: str, st_pooling, wrapped, encoded, texts: list[str]) -> dict[str, np.ndarray]:
    """The source framework's answers: sentence-transformers for its folders, else transformers itself."""
    import torch

    if st_pooling is not None:
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        return {EMBEDDING: encoder.encode(texts, normalize_embeddings=st_pooling[1], convert_to_numpy=True)}
    with torch.no_grad():
        answer = wrapped(encoded["input_ids"], encoded["attention_mask"]).numpy()
    if task == "classification":
        return {"PROBABILITIES": torch.softmax(torch.from_numpy(answer).double(), dim=1).numpy()}
    if task == TOKEN_CLASSIFICATION:
        return {SCORES: answer}
    return {EMBEDDING: answer}


def token_reference(logits: np.ndarray, encoded) -> dict[str, np.ndarray]:
    """transformers' answer per text token (padding and special tokens dropped), laid out as TokenLabels
    answers: the top class (TOKEN_CLASS) and its probability (TOKEN_PROBABILITIES), rows right-padded."""
    from scipy.special import softmax

    keep = (np.asarray(encoded["attention_mask"]) == 1) & (np.asarray(encoded["special_tokens_mask"]) == 0)
    probabilities = softmax(logits.astype(np.float64), axis=2)
    longest = int(keep.sum(axis=1).max())
    top = np.zeros((len(logits), longest))
    classes = np.full((len(logits), longest), -1)
    for row, kept in enumerate(keep):
        count = int(kept.sum())
        top[row, :count] = probabilities[row][kept].max(axis=1)
        classes[row, :count] = probabilities[row][kept].argmax(axis=1)
    return {TOKEN_PROBABILITIES: top, TOKEN_CLASS: classes}


register(Recipe(
    "transformers", "a Hugging Face transformers folder (save_pretrained with its fast tokenizer; local files only)",
    is_transformers_folder, export_text,
))
