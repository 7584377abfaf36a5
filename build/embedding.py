"""Embed texts through the serving code itself (tokenizer + ONNX runner), without a server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.text_tokenizer import TextTokenizer


class ServingEmbedder:
    def __init__(self, tokenizer_dir: Path, onnx_path: Path | None, threads: int = 2, progress: bool = False):
        """`onnx_path=None`: tokenisation only (e.g. to feed a calibrator)."""
        self.tokenizer = TextTokenizer(Path(tokenizer_dir) / "tokenizer.json")
        self.runner = None
        if onnx_path is not None:
            self.runner = OnnxRunner(onnx_path, intra_op_threads=threads, ragged_inputs=("input_ids", "attention_mask"))
        self.progress = progress

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """One padded batch of input_ids / attention_mask, exactly as the tokenizer model serves it."""
        batch = np.array([text.encode("utf-8") for text in texts], dtype=object).reshape(-1, 1)
        (tensors,) = self.tokenizer.execute_batch([{"TEXT": batch}])
        if isinstance(tensors, Exception):
            raise tensors
        return tensors

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings in input order; texts are length-sorted into batches to limit padding."""
        order = np.argsort([len(text) for text in texts], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        chunks = []
        starts = range(0, len(texts), batch_size)
        if self.progress:
            from rich.progress import track

            starts = track(starts, description=f"embedding {len(texts)} texts")
        for start in starts:
            tensors = self.tokenize([texts[i] for i in order[start : start + batch_size]])
            chunks.append(self.runner.run(tensors)["embedding"])
        if chunks:
            out = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
            out[order] = np.concatenate(chunks)
        return out
