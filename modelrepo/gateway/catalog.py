"""Which served models the gateway offers, read from the server (the repository index and each
model's config), not from a list: a model is

- a chat model when it speaks the LLM entry protocol (python_backends/llm/protocol.py): inputs
  `text_input` (string) and `max_tokens`, output `text_output` — llm, llm_bls, llm_cached;
- an embedding model when it takes one string tensor and answers an FP32 vector named `EMBEDDING`
  — text_embedding and every embedding model `modelrepo add` makes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from modelrepo.gateway.errors import OpenAIError
from modelrepo.python_backends.llm import protocol as p

CHAT, EMBEDDING = "chat", "embedding"
EMBEDDING_OUTPUT = "EMBEDDING"


@dataclass(frozen=True)
class ServedModel:
    name: str
    kind: str
    max_batch_size: int = 0
    text_input: str = p.TEXT_INPUT
    dimension: int = 0
    inputs: frozenset[str] = frozenset()
    created: int = 0
    streams: bool = False  # answers chunk by chunk when asked (`stream` input, not an ensemble: `llm` refuses it)

    def accepts(self, input_name: str) -> bool:
        return input_name in self.inputs


def classify(config: model_config_pb2.ModelConfig, created: int = 0) -> ServedModel | None:
    inputs = {tensor.name: tensor for tensor in config.input}
    outputs = {tensor.name: tensor for tensor in config.output}
    string = model_config_pb2.TYPE_STRING
    if (p.TEXT_INPUT in inputs and inputs[p.TEXT_INPUT].data_type == string and p.MAX_TOKENS in inputs
            and p.TEXT_OUTPUT in outputs):
        return ServedModel(config.name, CHAT, config.max_batch_size, inputs=frozenset(inputs), created=created,
                           streams=p.STREAM in inputs and config.platform != "ensemble")
    vector = outputs.get(EMBEDDING_OUTPUT)
    text_inputs = [tensor.name for tensor in config.input if tensor.data_type == string]
    if (vector is not None and vector.data_type == model_config_pb2.TYPE_FP32 and len(vector.dims) == 1
            and len(text_inputs) == 1 and len(config.input) == 1):
        return ServedModel(config.name, EMBEDDING, config.max_batch_size, text_inputs[0], int(vector.dims[0]),
                           frozenset(inputs), created)
    return None


class Catalog:
    """The ready chat and embedding models, re-read from the server at most every `refresh_s`
    (and at once when a request names a model not seen yet)."""

    def __init__(self, backend, refresh_s: float = 10.0):
        self.backend = backend  # modelrepo.gateway.backend.TritonBackend
        self.refresh_s = refresh_s
        self._models: dict[str, ServedModel] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()  # made outside any loop: fine since Python 3.10
        self._first_seen: dict[str, int] = {}

    async def models(self, force: bool = False) -> dict[str, ServedModel]:
        async with self._lock:
            if force or time.monotonic() - self._read_at >= self.refresh_s:
                self._models = await self._read()
                self._read_at = time.monotonic()
        return self._models

    async def find(self, name: str, kind: str) -> ServedModel | None:
        model = (await self.models()).get(name)
        if model is None and time.monotonic() - self._read_at > 1.0:  # newly loaded since the last read?
            model = (await self.models(force=True)).get(name)
        return model if model is not None and model.kind == kind else None

    async def _read(self) -> dict[str, ServedModel]:
        try:
            return await self._read_index()
        except InferenceServerException as err:  # no admin key, a wrong one, or the server is down
            raise OpenAIError(503, f"cannot read the served models from Triton ({err.message()}); the gateway "
                                   "reads the repository index with the admin key ($MODELREPO_ADMIN_KEY)",
                              code="unavailable") from None

    async def _read_index(self) -> dict[str, ServedModel]:
        client, headers = self.backend.client, self.backend.admin_headers
        index = await client.get_model_repository_index(headers=headers)
        found = {}
        for entry in index.models:
            if entry.state != "READY":
                continue
            created = self._first_seen.setdefault(entry.name, int(time.time()))
            config = (await client.get_model_config(entry.name, headers=headers)).config
            served = classify(config, created)
            if served is not None:
                found[served.name] = served
        return found
