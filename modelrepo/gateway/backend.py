"""The Triton calls: generation over a gRPC stream (cancelled when our client goes away, which
makes llm_bls send the engine its stop request and free the slot) and batched embeddings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
from tritonclient.grpc import aio as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from modelrepo.gateway.catalog import ServedModel
from modelrepo.gateway.errors import OpenAIError, from_triton
from modelrepo.python_backends.llm import protocol as p
from modelrepo.triton.admin import GRPC_ADMIN_HEADER


@dataclass
class Generation:
    """What one chat / completion asks of a chat model."""

    text_input: str
    max_tokens: int
    messages: list[dict[str, str]] | None = None  # a conversation (llm_bls's `messages` input)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def inputs(self, model: ServedModel, stream: bool) -> dict[str, np.ndarray]:
        arrays = {p.TEXT_INPUT: np.array([[self.text_input.encode("utf-8")]], dtype=object),
                  p.MAX_TOKENS: np.array([[self.max_tokens]], dtype=np.int32)}
        if self.messages is not None:
            arrays[p.MESSAGES] = np.array([[json.dumps(self.messages).encode("utf-8")]], dtype=object)
        if model.streams:  # the others answer in one piece, which the gateway streams as one chunk
            arrays[p.STREAM] = np.array([[stream]])
        if self.temperature is not None:
            arrays[p.TEMPERATURE] = np.array([[self.temperature]], dtype=np.float32)
        if self.top_p is not None:
            arrays[p.TOP_P] = np.array([[self.top_p]], dtype=np.float32)
        if self.seed is not None:
            arrays[p.RANDOM_SEED] = np.array([[self.seed]], dtype=np.uint64)
        if self.stop:
            arrays[p.STOP_WORDS] = np.array([[word.encode("utf-8") for word in self.stop]], dtype=object)
        return arrays


def triton_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    tensors = []
    for name, array in arrays.items():
        dtype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def timed_out(waited_s: float) -> OpenAIError:
    return OpenAIError(504, f"The inference server sent nothing for {waited_s:g} s; the request was cancelled",
                       code="timeout")


class TritonBackend:
    def __init__(self, grpc_url: str, admin_key: str | None = None, response_timeout_s: float = 300.0):
        self.grpc_url = grpc_url
        self.response_timeout_s = response_timeout_s  # the longest wait for Triton's next response
        self.admin_headers = {GRPC_ADMIN_HEADER: admin_key} if admin_key else {}
        self._client = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        # made on first use: a grpc.aio channel belongs to the event loop it was made in (uvicorn's)
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.grpc_url)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ready(self) -> bool:
        try:
            return await self.client.is_server_ready()
        except InferenceServerException:
            return False

    async def generate(self, model: ServedModel, generation: Generation, request_id: str, stream: bool,
                       prompt_field: str) -> AsyncIterator[str]:
        """The text chunks of one generation. Closing the iterator early (our client disconnected), or
        Triton sending nothing for `response_timeout_s` (a 504), cancels the gRPC stream: Triton
        cancels the request, llm_bls stops the engine's sequence."""
        inputs = triton_inputs(generation.inputs(model, stream))

        async def requests():
            yield {"model_name": model.name, "inputs": inputs, "request_id": request_id,
                   "outputs": [grpcclient.InferRequestedOutput(p.TEXT_OUTPUT)],
                   "parameters": {"triton_enable_empty_final_response": True}}

        responses = self.client.stream_infer(requests())
        finished = False
        try:
            while True:
                try:
                    result, error = await asyncio.wait_for(anext(responses), self.response_timeout_s)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise timed_out(self.response_timeout_s) from None
                if error is not None:
                    raise from_triton(str(error.message() if hasattr(error, "message") else error), prompt_field)
                array = result.as_numpy(p.TEXT_OUTPUT)
                if array is not None and array.size:
                    yield p.first_text(array)
                if result.get_response().parameters["triton_final_response"].bool_param:
                    finished = True
                    return
        except InferenceServerException as err:
            raise from_triton(err.message(), prompt_field) from None
        except grpc.RpcError as err:  # the server went away or refused the stream itself
            raise OpenAIError(503, f"The inference server is unavailable: {err.details()}", code="unavailable") from None
        finally:
            if not finished:
                responses.cancel()

    async def embed(self, model: ServedModel, texts: list[str]) -> np.ndarray:
        """One Triton request per `max_batch_size` texts (one request when they fit), rows in order."""
        size = model.max_batch_size or 1
        rows = []
        for start in range(0, len(texts), size):
            batch = np.array([[text.encode("utf-8")] for text in texts[start:start + size]], dtype=object)
            try:
                result = await self.client.infer(model.name, triton_inputs({model.text_input: batch}),
                                                 outputs=[grpcclient.InferRequestedOutput("EMBEDDING")],
                                                 client_timeout=self.response_timeout_s)
            except InferenceServerException as err:
                if err.status() == "StatusCode.DEADLINE_EXCEEDED":
                    raise timed_out(self.response_timeout_s) from None
                raise from_triton(err.message(), "input") from None
            rows.append(result.as_numpy("EMBEDDING"))
        if not rows:
            raise OpenAIError(400, "input: no text to embed", param="input")
        return np.concatenate(rows).astype(np.float32)
