"""llm_bls: the streaming entry point (decoupled), TensorRT-LLM's `tensorrt_llm_bls` shape.

preprocessing (BLS) → engine (BLS, decoupled, always streaming so the first chunk leaves at once) →
postprocessing per chunk (incremental detokenisation: the offsets travel with the stream). With
`stream` false the chunks are gathered and the client gets one response.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import numpy as np

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS

PREPROCESSING, ENGINE, POSTPROCESSING = "llm_preprocessing", "llm_engine", "llm_postprocessing"

# public input → engine input, passed through when the client sends it
SAMPLING_INPUTS = {
    p.TEMPERATURE: p.ENGINE_TEMPERATURE,
    p.TOP_P: p.RUNTIME_TOP_P,
    p.TOP_K: p.RUNTIME_TOP_K,
    p.RANDOM_SEED: p.ENGINE_SEED,
    p.MIN_LENGTH: p.ENGINE_MIN_LENGTH,
}


def preprocessing_inputs(request: Mapping) -> Tensors:
    texts = required(request, p.TEXT_INPUT)
    if texts.size != 1:  # a batch of prompts in one request: refuse it by name, as `llm` does
        raise InputError(p.TEXT_INPUT, f"one prompt per request, got {texts.size}")
    inputs = {
        p.QUERY: texts.reshape(1, 1),
        p.REQUEST_OUTPUT_LEN: np.asarray(required(request, p.MAX_TOKENS), dtype=np.int32).reshape(1, 1),
    }
    if request.get(p.MESSAGES) is not None:  # a whole conversation: preprocessing templates it
        inputs[p.PRE_MESSAGES] = np.asarray(request[p.MESSAGES], dtype=object).reshape(1, 1)
    if request.get(p.STOP_WORDS) is not None:
        inputs[p.STOP_WORDS_DICT] = np.asarray(request[p.STOP_WORDS], dtype=object).reshape(1, -1)
    for public, name in ((p.END_ID, p.END_ID.upper()), (p.PAD_ID, p.PAD_ID.upper())):
        if request.get(public) is not None:
            inputs[name] = np.asarray(request[public], dtype=np.int32).reshape(1, 1)
    return inputs


def engine_inputs(request: Mapping, pre: Tensors) -> Tensors:
    inputs = {
        p.INPUT_IDS: pre[p.INPUT_ID],
        p.INPUT_LENGTHS: pre[p.REQUEST_INPUT_LEN],
        p.ENGINE_OUTPUT_LEN: pre[p.OUT_REQUEST_OUTPUT_LEN],
        p.ENGINE_END_ID: pre[p.OUT_END_ID],
        p.ENGINE_PAD_ID: pre[p.OUT_PAD_ID],
        p.STOP_WORDS_LIST: pre[p.STOP_WORDS_IDS],
        p.STREAMING: np.array([[True]]),
        p.EXCLUDE_INPUT: np.array([[True]]),
    }
    for public, name in SAMPLING_INPUTS.items():
        if request.get(public) is not None:
            inputs[name] = np.asarray(request[public]).reshape(1, 1)
    return inputs


def token_inputs(tokens: list[int]) -> Tensors:
    """llm_postprocessing's inputs for one sequence of generated ids."""
    return {p.TOKENS_BATCH: np.array([[tokens]], dtype=np.int32), p.POST_SEQUENCE_LENGTH: np.array([[len(tokens)]], dtype=np.int32)}


class LlmBls:
    def __init__(self, infer, infer_stream):
        self.infer = infer
        self.infer_stream = infer_stream

    @classmethod
    def from_context(cls, context: ModelContext) -> "LlmBls":
        return cls(context.infer, context.infer_stream)

    async def stream_request_async(self, request: Tensors, stream) -> None:
        p.check_parameters(request.get(REQUEST_PARAMETERS) or {})
        streaming = bool(p.scalar(request, p.STREAM, False))
        pre = await self.infer(
            PREPROCESSING,
            preprocessing_inputs(request),
            [p.INPUT_ID, p.REQUEST_INPUT_LEN, p.STOP_WORDS_IDS, p.OUT_REQUEST_OUTPUT_LEN, p.OUT_END_ID, p.OUT_PAD_ID],
        )
        tokens: list[int] = []
        offsets = (0, 0)
        request_id = f"llm_bls-{uuid.uuid4().hex}"
        stopped = False
        async for out in self.infer_stream(ENGINE, engine_inputs(request, pre), [p.OUTPUT_IDS, p.SEQUENCE_LENGTH], request_id=request_id):
            if stopped:  # read the engine's stream to its final response, which the stop makes it send soon:
                continue  # a BLS stream left with responses still to come is freed while they arrive
            if stream.cancelled():  # our client went away: stop the engine's sequence, free its slot
                await self.stop_engine(request_id)
                stopped = True
                continue
            length = int(p.scalar(out, p.SEQUENCE_LENGTH, 0))
            tokens.extend(out[p.OUTPUT_IDS].reshape(-1)[:length].tolist())
            if streaming:
                text, offsets = await self.detokenize(tokens, offsets, flush=False)
                if text:
                    stream.send({p.TEXT_OUTPUT: np.array([[text]], dtype=object)})
        if stopped:
            return
        if streaming:
            text, _ = await self.detokenize(tokens, offsets, flush=True)
        else:
            text = p.first_text((await self.infer(POSTPROCESSING, token_inputs(tokens), [p.OUTPUT]))[p.OUTPUT])
        if text or not streaming:
            stream.send({p.TEXT_OUTPUT: np.array([[text]], dtype=object)})

    async def stop_engine(self, request_id: str) -> None:
        stop = {
            p.INPUT_IDS: np.zeros((1, 1), dtype=np.int32),
            p.INPUT_LENGTHS: np.ones((1, 1), dtype=np.int32),
            p.ENGINE_OUTPUT_LEN: np.ones((1, 1), dtype=np.int32),
            p.STOP: np.array([[True]]),
        }
        async for _ in self.infer_stream(ENGINE, stop, [p.OUTPUT_IDS], request_id=request_id):
            pass

    async def detokenize(self, tokens: list[int], offsets: tuple[int, int], flush: bool) -> tuple[str, tuple[int, int]]:
        out = await self.infer(
            POSTPROCESSING,
            {
                **token_inputs(tokens),
                p.PREFIX_OFFSET: np.array([[offsets[0]]], dtype=np.int32),
                p.READ_OFFSET: np.array([[offsets[1]]], dtype=np.int32),
                p.FLUSH: np.array([[flush]]),
            },
            [p.OUTPUT, p.OUT_PREFIX_OFFSET, p.OUT_READ_OFFSET],
        )
        return p.first_text(out[p.OUTPUT]), (int(p.scalar(out, p.OUT_PREFIX_OFFSET, 0)), int(p.scalar(out, p.OUT_READ_OFFSET, 0)))
