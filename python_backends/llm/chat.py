"""llm_preprocessing: the user's text → the model's chat template → token ids, batched.

`text_input` is one user turn; the tokenizer's own chat template (SmolLM2's ships its default system
prompt) adds the assistant prefix. The optional `messages` input (MESSAGES here) carries a whole
conversation instead: a JSON array of {"role": "system" | "user" | "assistant", "content": text},
ending with a user turn (the OpenAI gateway sends it); then `text_input` is only its last user turn. Rules: valid UTF-8, not empty, at most `max_text_bytes` bytes,
at most `max_prompt_tokens` tokens after templating; `max_tokens` between 1 and `max_new_tokens`.
Stop words become TensorRT-LLM's word lists, each word both as written and after a space (a word in
running text is usually tokenised with its leading space).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import json

import numpy as np

from modelrepo.python_backends.batching import Tensors, answer_each, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.llm.chat_tokenizer import ChatTokenizer
from modelrepo.python_backends.llm.layout import TOKENIZER_DIR
from modelrepo.python_backends.text_tokenizer import decode_text
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS

ROLES = ("system", "user", "assistant")


def load_tokenizer(path: Path) -> ChatTokenizer:
    return ChatTokenizer(path)


class ChatPreprocessor:
    def __init__(
        self,
        tokenizer,
        max_prompt_tokens: int = p.DEFAULT_MAX_PROMPT_TOKENS,
        max_new_tokens: int = p.DEFAULT_MAX_NEW_TOKENS,
        max_text_bytes: int = p.DEFAULT_MAX_TEXT_BYTES,
    ):
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.max_text_bytes = max_text_bytes
        self.end_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id)

    @classmethod
    def from_context(cls, context: ModelContext) -> "ChatPreprocessor":
        return cls(
            load_tokenizer(context.version_dir / TOKENIZER_DIR),
            max_prompt_tokens=context.int_parameter("max_prompt_tokens", p.DEFAULT_MAX_PROMPT_TOKENS),
            max_new_tokens=context.int_parameter("max_new_tokens", p.DEFAULT_MAX_NEW_TOKENS),
            max_text_bytes=context.int_parameter("max_text_bytes", p.DEFAULT_MAX_TEXT_BYTES),
        )

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return answer_each(requests, self.prepare, lambda prepared: prepared)

    def prompt_ids(self, text: str) -> list[int]:
        return self.conversation_ids([{"role": "user", "content": text}], p.TEXT_INPUT)

    def conversation_ids(self, messages: list[dict[str, str]], input_name: str = p.MESSAGES) -> list[int]:
        """The chat template over checked turns (see `parse_messages`), with the assistant prefix."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if len(ids) > self.max_prompt_tokens:
            raise InputError(
                input_name,
                f"is {len(ids)} tokens after the chat template; at most {self.max_prompt_tokens} are accepted",
            )
        return list(ids)

    def stop_word_ids(self, words: list[str]) -> list[list[int]]:
        variants = {tuple(self.tokenizer.encode(form, add_special_tokens=False)) for word in words for form in (word, " " + word)}
        return [list(ids) for ids in sorted(variants) if ids]

    def prepare(self, request: Tensors) -> Tensors:
        p.check_parameters(request.get(REQUEST_PARAMETERS) or {})
        if bool(p.scalar(request, p.PRE_STREAM, False, p.STREAM)):
            raise InputError(p.STREAM, "is not supported by the `llm` ensemble; stream with `llm_bls`")
        texts = required(request, p.QUERY).reshape(-1)
        if texts.size != 1:
            raise InputError(p.TEXT_INPUT, f"one prompt per request, got {texts.size}")
        text = decode_text(texts[0], None, self.max_text_bytes, p.TEXT_INPUT)
        max_tokens = p.check_max_tokens(p.scalar(request, p.REQUEST_OUTPUT_LEN, 0, p.MAX_TOKENS), self.max_new_tokens)
        messages = request.get(p.PRE_MESSAGES)
        if messages is None:
            ids = self.prompt_ids(text)
        else:
            conversation = decode_text(np.asarray(messages).reshape(-1)[0], None, self.max_text_bytes, p.MESSAGES)
            ids = self.conversation_ids(parse_messages(conversation))
        words = [decode_text(w, None, self.max_text_bytes, p.STOP_WORDS) for w in _strings(request.get(p.STOP_WORDS_DICT))]
        return {
            p.INPUT_ID: np.array([ids], dtype=np.int32),
            p.REQUEST_INPUT_LEN: np.array([[len(ids)]], dtype=np.int32),
            p.OUT_REQUEST_OUTPUT_LEN: np.array([[max_tokens]], dtype=np.int32),
            p.STOP_WORDS_IDS: p.pack_word_lists(self.stop_word_ids(words))[None],
            p.OUT_END_ID: np.array([[int(p.scalar(request, p.END_ID, self.end_id))]], dtype=np.int32),
            p.OUT_PAD_ID: np.array([[int(p.scalar(request, p.PAD_ID, self.pad_id))]], dtype=np.int32),
        }


def parse_messages(text: str) -> list[dict[str, str]]:
    """A conversation as JSON: a non-empty array of {"role", "content"} objects (roles: system, user,
    assistant), the last one a user turn. Returns it as plain dicts; refuses anything else by rule."""
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(p.MESSAGES, f"must be a JSON array of messages: {err.msg} at character {err.pos}") from None
    if not isinstance(messages, list) or not messages:
        raise InputError(p.MESSAGES, "must be a non-empty JSON array of {\"role\", \"content\"} objects")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise InputError(p.MESSAGES, f"message {index} must be an object with exactly the keys role and content")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InputError(p.MESSAGES, f"message {index}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content:
            raise InputError(p.MESSAGES, f"message {index}: content must be a non-empty string")
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "user":
        raise InputError(p.MESSAGES, f"the last message must be a user turn, got {turns[-1]['role']!r}")
    return turns


def _strings(value) -> list:
    """The non-empty elements of an optional BYTES input."""
    return [] if value is None else [item for item in np.asarray(value).reshape(-1) if len(item)]
