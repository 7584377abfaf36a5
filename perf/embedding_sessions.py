"""The served encoder's parallelism, for baselines that must use the same resources as Triton.

text_embedding's encoder runs `instance_group.count` instances, each an onnxruntime session with
`intra_op_threads` threads: that many requests run at once on count x threads threads. A fair
in-process or FastAPI baseline runs the same number of sessions with the same threads each
(`EmbedderPool`), not one session with every thread.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelrepo.build.embedding import ServingEmbedder
from modelrepo.paths import MODEL_REPOSITORY

ENCODER = "minilm_encoder"


@dataclass(frozen=True)
class Parallelism:
    sessions: int  # requests computed at once (the encoder's instances)
    threads_per_session: int  # onnxruntime intra-op threads of each

    @property
    def total_threads(self) -> int:
        return self.sessions * self.threads_per_session

    @classmethod
    def of_config(cls, config) -> "Parallelism":
        """From a Python-backend encoder's ModelConfig: its CPU instances and `intra_op_threads` (default 1,
        as python_backends/onnx_runner.py reads it)."""
        sessions = sum(group.count for group in config.instance_group)
        if sessions < 1:
            raise ValueError(f"instance_group: {config.name}'s config states no instance count to match")
        threads = config.parameters["intra_op_threads"].string_value if "intra_op_threads" in config.parameters else ""
        if threads and (not threads.isdigit() or int(threads) < 1):
            raise ValueError(f"intra_op_threads: must be a positive integer, got {threads!r}")
        return cls(sessions, int(threads or 1))

    def describe(self) -> str:
        return f"{self.sessions} session(s) x {self.threads_per_session} thread(s)"


def served_parallelism(repository: Path = MODEL_REPOSITORY) -> Parallelism:
    from modelrepo.triton.model_config import read_config

    return Parallelism.of_config(read_config(repository / ENCODER))


def embedder(threads: int, repository: Path = MODEL_REPOSITORY) -> ServingEmbedder:
    """Our tokenizer and the served ONNX graph in this process, one session with `threads` threads."""
    return ServingEmbedder(repository / "minilm_tokenizer" / "1" / "tokenizer", repository / ENCODER / "1" / "model.onnx",
                           threads=threads)


class EmbedderPool:
    """`parallelism.sessions` embedders; a caller borrows a free one (waits while all are busy)."""

    def __init__(self, parallelism: Parallelism, repository: Path = MODEL_REPOSITORY):
        self.parallelism = parallelism
        self._free: queue.Queue[ServingEmbedder] = queue.Queue()
        for _ in range(parallelism.sessions):
            self._free.put(embedder(parallelism.threads_per_session, repository))

    @contextmanager
    def borrow(self) -> Iterator[ServingEmbedder]:
        session = self._free.get()
        try:
            yield session
        finally:
            self._free.put(session)
