"""TEXT (UTF-8 bytes) -> input_ids, attention_mask with a Hugging Face fast tokenizer, batched.

Rules for each text: valid UTF-8, not empty or whitespace-only, at most `max_text_bytes` bytes.
Texts longer than `max_tokens` tokens (special tokens included) are truncated, as
sentence-transformers does for all-MiniLM-L6-v2 (256).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from modelrepo.python_backends.batching import Tensors, answer_each, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError

TEXT = "TEXT"
DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_TEXT_BYTES = 16 * 1024


def decode_text(value: object, item: int, max_bytes: int, input_name: str = TEXT) -> str:
    """One BYTES element -> str, or an InputError naming the rule it broke."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > max_bytes:
        raise InputError(input_name, f"is {len(raw)} bytes; at most {max_bytes} bytes are accepted", item)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(input_name, f"must be valid UTF-8 ({err.reason} at byte {err.start})", item) from None
    if not text.strip():
        raise InputError(input_name, "must not be empty or whitespace-only", item)
    return text


class TextTokenizer:
    def __init__(
        self,
        tokenizer_file: Path,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    ):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()  # we pad per request, to that request's longest text
        self.max_text_bytes = max_text_bytes

    @classmethod
    def from_context(cls, context: ModelContext) -> "TextTokenizer":
        return cls(
            context.version_dir / "tokenizer" / "tokenizer.json",
            max_tokens=context.int_parameter("max_tokens", DEFAULT_MAX_TOKENS),
            max_text_bytes=context.int_parameter("max_text_bytes", DEFAULT_MAX_TEXT_BYTES),
        )

    def decode_request(self, texts: np.ndarray) -> list[str]:
        return [decode_text(value, item, self.max_text_bytes) for item, value in enumerate(texts.reshape(-1))]

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, lambda request: self.decode_request(required(request, TEXT)), self.encode)

    def encode(self, texts_per_request: list[list[str]]) -> list[Tensors]:
        # One call for the whole dynamic batch: the Rust tokenizer parallelises across texts.
        encodings = self.tokenizer.encode_batch([text for texts in texts_per_request for text in texts])
        bounds = np.cumsum([0, *map(len, texts_per_request)])
        return [pack_encodings(encodings[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


def pack_encodings(encodings: Sequence[Encoding]) -> Tensors:
    """Right-pad a request's encodings to its longest one: int64 [n, longest]."""
    longest = max(len(encoding.ids) for encoding in encodings)
    input_ids = np.zeros((len(encodings), longest), dtype=np.int64)
    attention_mask = np.zeros((len(encodings), longest), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        input_ids[row, : len(encoding.ids)] = encoding.ids
        attention_mask[row, : len(encoding.ids)] = encoding.attention_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask}
