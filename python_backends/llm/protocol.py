"""Tensor names, limits and request validation shared by the LLM models.

Names follow TensorRT-LLM's Triton repository (`inflight_batcher_llm`): the public ensemble / BLS
inputs (`text_input`, `max_tokens`, …), the preprocessing outputs (`INPUT_ID`, …) and the engine's
(`input_ids`, `request_output_len`, … → `output_ids`, `sequence_length`). So `llm_engine` is
swappable for TensorRT-LLM's `tensorrtllm` backend, and TensorRT-LLM clients and genai-perf work
unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from modelrepo.python_backends.errors import InputError, refuse_unknown_parameters

# public inputs of `llm`, `llm_bls`, `llm_cached`
TEXT_INPUT, MAX_TOKENS, STREAM = "text_input", "max_tokens", "stream"
TEMPERATURE, TOP_P, TOP_K, RANDOM_SEED = "temperature", "top_p", "top_k", "random_seed"
STOP_WORDS, END_ID, PAD_ID, MIN_LENGTH = "stop_words", "end_id", "pad_id", "min_length"
EXCLUDE_INPUT = "exclude_input_in_output"
MESSAGES = "messages"  # optional: a whole conversation as JSON (python_backends/llm/chat.py)
TEXT_OUTPUT = "text_output"
PUBLIC_OPTIONAL = (STREAM, TEMPERATURE, TOP_P, TOP_K, RANDOM_SEED, STOP_WORDS, END_ID, PAD_ID, MIN_LENGTH, EXCLUDE_INPUT)

# llm_preprocessing
QUERY, REQUEST_OUTPUT_LEN, STOP_WORDS_DICT, PRE_STREAM = "QUERY", "REQUEST_OUTPUT_LEN", "STOP_WORDS_DICT", "STREAM"
PRE_MESSAGES = "MESSAGES"
INPUT_ID, REQUEST_INPUT_LEN, STOP_WORDS_IDS = "INPUT_ID", "REQUEST_INPUT_LEN", "STOP_WORDS_IDS"
OUT_REQUEST_OUTPUT_LEN, OUT_END_ID, OUT_PAD_ID = "REQUEST_OUTPUT_LEN", "OUT_END_ID", "OUT_PAD_ID"

# llm_engine (the names of TensorRT-LLM's `tensorrt_llm` model)
INPUT_IDS, INPUT_LENGTHS, ENGINE_OUTPUT_LEN = "input_ids", "input_lengths", "request_output_len"
ENGINE_END_ID, ENGINE_PAD_ID, STOP_WORDS_LIST = "end_id", "pad_id", "stop_words_list"
RUNTIME_TOP_K, RUNTIME_TOP_P, ENGINE_TEMPERATURE = "runtime_top_k", "runtime_top_p", "temperature"
ENGINE_SEED, ENGINE_MIN_LENGTH, STREAMING = "random_seed", "min_length", "streaming"
STOP = "stop"  # TensorRT-LLM's cancel: a request with stop=true and the request id of a running one
OUTPUT_IDS, SEQUENCE_LENGTH = "output_ids", "sequence_length"

# llm_postprocessing
TOKENS_BATCH, POST_SEQUENCE_LENGTH, OUTPUT = "TOKENS_BATCH", "SEQUENCE_LENGTH", "OUTPUT"
PREFIX_OFFSET, READ_OFFSET, FLUSH = "PREFIX_OFFSET", "READ_OFFSET", "FLUSH"
OUT_PREFIX_OFFSET, OUT_READ_OFFSET = "OUT_PREFIX_OFFSET", "OUT_READ_OFFSET"

# Limits (documented in the README; each model reads its own from config parameters).
DEFAULT_MAX_PROMPT_TOKENS = 1024
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_TEXT_BYTES = 16 * 1024


def scalar(request: Mapping[str, np.ndarray | None], name: str, default, public_name: str | None = None):
    """One value from an optional [1] / [1, 1] input (a request is one sequence)."""
    value = request.get(name)
    if value is None:
        return default
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise InputError(public_name or name, f"must hold exactly one value, got {flat.size}")
    item = flat[0]
    return item.item() if hasattr(item, "item") else item


def first_text(array: np.ndarray) -> str:
    """The first element of a BYTES tensor as text (Triton hands BYTES back as bytes)."""
    value = np.asarray(array).reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def check_max_tokens(value: int, limit: int, name: str = MAX_TOKENS) -> int:
    if not 1 <= int(value) <= limit:
        raise InputError(name, f"must be between 1 and {limit} (the model's max new tokens), got {value}")
    return int(value)


def check_sampling(temperature: float, top_p: float, top_k: int, min_length: int, max_tokens: int) -> None:
    if not math.isfinite(temperature) or temperature < 0:
        raise InputError(TEMPERATURE, f"must be a finite number >= 0 (0 is greedy), got {temperature}")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InputError(TOP_P, f"must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise InputError(TOP_K, f"must be >= 0 (0 turns top-k off), got {top_k}")
    if not 0 <= min_length <= max_tokens:
        raise InputError(MIN_LENGTH, f"must be between 0 and max_tokens ({max_tokens}), got {min_length}")


def check_parameters(parameters: Mapping[str, object]) -> None:
    """Request parameters (fields of a `generate` body that are not inputs) are refused: settings are inputs."""
    refuse_unknown_parameters(parameters, (), f"send settings as inputs: {', '.join((MAX_TOKENS, *PUBLIC_OPTIONAL))}")


def pack_word_lists(word_ids: list[list[int]]) -> np.ndarray:
    """TensorRT-LLM's word-list format for one request: int32 [2, N] — the ids of every word
    concatenated, and their cumulative end offsets padded with -1."""
    flat = [token for word in word_ids for token in word]
    offsets = np.cumsum([len(word) for word in word_ids]).tolist()
    size = max(len(flat), 1)
    packed = np.full((2, size), -1, dtype=np.int32)
    packed[0, :] = 0
    packed[0, : len(flat)] = flat
    packed[1, : len(offsets)] = offsets
    return packed


def unpack_word_lists(packed: np.ndarray | None) -> tuple[tuple[int, ...], ...]:
    if packed is None:
        return ()
    packed = np.asarray(packed).reshape(2, -1)
    words, start = [], 0
    for end in packed[1]:
        if end < 0:
            break
        words.append(tuple(int(token) for token in packed[0, start:end]))
        start = int(end)
    return tuple(word for word in words if word)
