"""llm_cached: answers a prompt from a cache of earlier answers, else generates and stores.

Lookup: first by exact prompt (a dict hit costs microseconds); in `semantic` mode then by meaning —
the prompt is embedded with `text_embedding` (L2-normalised MiniLM) and the closest cached prompt
answers when its cosine similarity is at least `similarity_threshold`. `exact` mode skips the
embedding. Entries live at most `ttl_seconds` and at most `max_entries` are kept (least recently
used goes first). Answers depend on the generation settings, so they are part of the key; a sampled
request without a `random_seed` is never cached (it is meant to differ each time). Every response
says whether it came from the cache (`cache_hit`) and how close the cached prompt was.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelrepo.python_backends.batching import Tensors, required
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm import protocol as p
from modelrepo.python_backends.metrics import COUNTER, GAUGE
from modelrepo.python_backends.text_tokenizer import decode_text
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS

CACHE_HIT, CACHE_SIMILARITY = "cache_hit", "cache_similarity"
GENERATOR, EMBEDDER = "llm", "text_embedding"
MODES = ("semantic", "exact")
# generation settings forwarded to `llm` and part of the cache key
SETTINGS = (p.MAX_TOKENS, p.TEMPERATURE, p.TOP_P, p.TOP_K, p.RANDOM_SEED, p.MIN_LENGTH, p.STOP_WORDS, p.END_ID, p.PAD_ID)


@dataclass
class Entry:
    prompt: str
    embedding: np.ndarray | None
    answer: str
    stored_at: float


class AnswerCache:
    """Bounded, expiring store of answers per generation-settings key. Plain Python, no server."""

    def __init__(self, max_entries: int = 1024, ttl_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()  # (settings, prompt) → entry, LRU order

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = self.clock()
        for key in [key for key, entry in self._entries.items() if now - entry.stored_at > self.ttl_seconds]:
            del self._entries[key]

    def exact(self, settings: tuple, prompt: str) -> Entry | None:
        self._expire()
        entry = self._entries.get((settings, prompt))
        if entry is not None:
            self._entries.move_to_end((settings, prompt))
        return entry

    def nearest(self, settings: tuple, embedding: np.ndarray) -> tuple[Entry | None, float]:
        self._expire()
        candidates = [(key, e) for key, e in self._entries.items() if key[0] == settings and e.embedding is not None]
        if not candidates:
            return None, 0.0
        similarities = np.stack([e.embedding for _, e in candidates]) @ embedding
        best = int(np.argmax(similarities))
        self._entries.move_to_end(candidates[best][0])
        return candidates[best][1], float(similarities[best])

    def store(self, settings: tuple, prompt: str, embedding: np.ndarray | None, answer: str) -> None:
        self._entries[(settings, prompt)] = Entry(prompt, embedding, answer, self.clock())
        self._entries.move_to_end((settings, prompt))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def settings_key(request: Tensors) -> tuple:
    """The generation settings of a request, hashable; None when the request must not be cached."""
    values = []
    for name in SETTINGS:
        value = request.get(name)
        values.append(None if value is None else tuple(np.asarray(value).reshape(-1).tolist()))
    temperature = float(p.scalar(request, p.TEMPERATURE, 0.0))
    top_k = int(p.scalar(request, p.TOP_K, 0))
    if temperature > 0 and top_k != 1 and request.get(p.RANDOM_SEED) is None:
        return None
    return tuple(values)


class SemanticCache:
    def __init__(self, infer, infer_stream, cache: AnswerCache, mode: str = "semantic", threshold: float = 0.95, metrics=None, name: str = "llm_cached"):
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {MODES}, got {mode!r}")
        self.infer = infer
        self.infer_stream = infer_stream  # `llm` holds the decoupled engine: BLS calls it as a stream
        self.cache = cache
        self.mode = mode
        self.threshold = threshold
        self.max_text_bytes = p.DEFAULT_MAX_TEXT_BYTES
        labels = {"model": name}
        if metrics is not None:
            self._requests = metrics.family("llm_cache_requests_total", "Cache lookups by result (hit, miss, bypass)", COUNTER)
            self._ratio = metrics.family("llm_cache_hit_ratio", "Hits / lookups since the model loaded", GAUGE).metric(labels)
            self._size = metrics.family("llm_cache_entries", "Answers held in the cache", GAUGE).metric(labels)
        self._metrics = metrics
        self._labels = labels
        self.hits = self.lookups = 0

    @classmethod
    def from_context(cls, context: ModelContext) -> "SemanticCache":
        cache = AnswerCache(context.int_parameter("max_entries", 1024), context.float_parameter("ttl_seconds", 3600.0))
        return cls(
            context.infer,
            context.infer_stream,
            cache,
            mode=context.parameter("mode", "semantic"),
            threshold=context.float_parameter("similarity_threshold", 0.95),
            metrics=context.metrics,
            name=context.name,
        )

    def _count(self, result: str) -> None:
        if result != "bypass":
            self.lookups += 1
            self.hits += result == "hit"
        if self._metrics is not None:
            self._requests.metric({**self._labels, "result": result}).increment(1)
            if self.lookups:
                self._ratio.set(self.hits / self.lookups)
            self._size.set(len(self.cache))

    async def stream_request_async(self, request: Tensors, stream) -> None:
        """Decoupled, one response: requests run concurrently, so a hit never waits behind a miss."""
        stream.send(await self.answer(request), final=True)

    async def answer(self, request: Tensors) -> Tensors:
        p.check_parameters(request.get(REQUEST_PARAMETERS) or {})
        texts = required(request, p.TEXT_INPUT).reshape(-1)
        if texts.size != 1:
            raise InputError(p.TEXT_INPUT, f"one prompt per request, got {texts.size}")
        prompt = decode_text(texts[0], None, self.max_text_bytes, p.TEXT_INPUT)
        p.check_max_tokens(p.scalar(request, p.MAX_TOKENS, 0), p.DEFAULT_MAX_NEW_TOKENS)
        settings = settings_key(request)
        if settings is None:
            self._count("bypass")
            return _answer(await self.generate(request), hit=False, similarity=0.0)
        entry = self.cache.exact(settings, prompt)
        if entry is not None:
            self._count("hit")
            return _answer(entry.answer, hit=True, similarity=1.0)
        embedding = None
        if self.mode == "semantic":
            embedding = await self.embed(prompt)
            entry, similarity = self.cache.nearest(settings, embedding)
            if entry is not None and similarity >= self.threshold:
                self._count("hit")
                return _answer(entry.answer, hit=True, similarity=similarity)
        answer = await self.generate(request)
        self.cache.store(settings, prompt, embedding, answer)
        self._count("miss")
        return _answer(answer, hit=False, similarity=0.0)

    async def embed(self, prompt: str) -> np.ndarray:
        out = await self.infer(EMBEDDER, {"TEXT": np.array([[prompt]], dtype=object)}, ["EMBEDDING"])
        return out["EMBEDDING"].reshape(-1).astype(np.float32)

    async def generate(self, request: Tensors) -> str:
        inputs = {name: np.asarray(request[name]) for name in (p.TEXT_INPUT, *SETTINGS) if request.get(name) is not None}
        return "".join([p.first_text(out[p.TEXT_OUTPUT]) async for out in self.infer_stream(GENERATOR, inputs, [p.TEXT_OUTPUT])])


def _answer(text: str, hit: bool, similarity: float) -> Tensors:
    return {
        p.TEXT_OUTPUT: np.array([[text]], dtype=object),
        CACHE_HIT: np.array([[hit]]),
        CACHE_SIMILARITY: np.array([[similarity]], dtype=np.float32),
    }
