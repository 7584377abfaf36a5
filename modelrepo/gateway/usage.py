"""Token counts for `usage`: the chat models' own tokenizer (llm_preprocessing's), in the gateway.

Prompt tokens are the chat template's ids, exactly what llm_preprocessing feeds the engine;
completion tokens are the answer text encoded again (equal to the generated ids except where a
detokenised text re-encodes differently, which is rare)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from modelrepo.python_backends.llm.chat import ChatPreprocessor, load_tokenizer

UNLIMITED = 1 << 30  # the server enforces the limits; the gateway only counts


class TokenCounter:
    def __init__(self, tokenizer_dir: Path | None):
        self.tokenizer_dir = tokenizer_dir

    @cached_property
    def _chat(self) -> ChatPreprocessor | None:
        if self.tokenizer_dir is None or not Path(self.tokenizer_dir).is_dir():
            return None
        return ChatPreprocessor(load_tokenizer(Path(self.tokenizer_dir)), max_prompt_tokens=UNLIMITED,
                                max_text_bytes=UNLIMITED)

    def prompt_tokens(self, turns: list[dict[str, str]]) -> int:
        return 0 if self._chat is None else len(self._chat.conversation_ids(turns))

    def text_tokens(self, text: str) -> int:
        if self._chat is None or not text:
            return 0
        return len(self._chat.tokenizer.encode(text, add_special_tokens=False))
