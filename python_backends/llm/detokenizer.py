"""llm_postprocessing: token ids → text, whole or incrementally.

Incremental decoding (the scheme vLLM uses): re-decode a short window of recent ids and emit only
what the window added, holding text back while it ends in U+FFFD (a multi-byte character split
across tokens). The caller carries two offsets between calls, so the model stays stateless and one
instance serves every stream; chunks never repeat text and never split a UTF-8 character.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.chat import TOKENIZER_DIR, load_tokenizer

REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Delta:
    text: str
    prefix_offset: int
    read_offset: int


def incremental_delta(decode, ids: Sequence[int], prefix_offset: int, read_offset: int, flush: bool = False) -> Delta:
    """Text that `ids[read_offset:]` adds after `ids[:read_offset]`, and the next offsets."""
    prefix_text = decode(ids[prefix_offset:read_offset])
    new_text = decode(ids[prefix_offset:])
    if len(new_text) > len(prefix_text) and (flush or not new_text.endswith(REPLACEMENT)):
        return Delta(new_text[len(prefix_text):], read_offset, len(ids))
    return Delta("", prefix_offset, read_offset)


class Detokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_context(cls, context: ModelContext) -> "Detokenizer":
        return cls(load_tokenizer(context.version_dir / TOKENIZER_DIR))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return [self.one(request) for request in requests]

    def one(self, request: Tensors) -> Tensors:
        tokens = required(request, p.TOKENS_BATCH)  # [batch, beam, tokens]
        lengths = required(request, p.POST_SEQUENCE_LENGTH)  # [batch, beam]
        tokens = tokens.reshape(lengths.shape[0], -1, tokens.shape[-1])
        lengths = lengths.reshape(tokens.shape[0], -1)
        if request.get(p.READ_OFFSET) is None:
            texts = [[self.decode(row[:length]) for row, length in zip(beams, lens)] for beams, lens in zip(tokens, lengths)]
            return {p.OUTPUT: np.array(texts, dtype=object).reshape(tokens.shape[0], -1)}
        delta = incremental_delta(
            self.decode,
            tokens[0, 0, : lengths[0, 0]].tolist(),
            int(p.scalar(request, p.PREFIX_OFFSET, 0)),
            int(p.scalar(request, p.READ_OFFSET, 0)),
            bool(p.scalar(request, p.FLUSH, False)),
        )
        return {
            p.OUTPUT: np.array([[delta.text]], dtype=object),
            p.OUT_PREFIX_OFFSET: np.array([[delta.prefix_offset]], dtype=np.int32),
            p.OUT_READ_OFFSET: np.array([[delta.read_offset]], dtype=np.int32),
        }
