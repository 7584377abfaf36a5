"""llm_cached's logic with stand-ins for the two models it calls (text_embedding, llm)."""

import asyncio

import numpy as np
import pytest

from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.llm.semantic_cache import AnswerCache, SemanticCache
from modelrepo.python_backends.metrics import InMemoryRegistry
from modelrepo.python_backends.triton_adapter import REQUEST_PARAMETERS

EMBEDDINGS = {  # unit vectors: the paraphrase is 0.98 from the original, the other prompt far
    "What is the capital of France?": np.array([1.0, 0.0, 0.0]),
    "Whats the capital of France": np.array([0.98, np.sqrt(1 - 0.98**2), 0.0]),
    "How do birds fly?": np.array([0.0, 0.0, 1.0]),
}


class Models:
    def __init__(self):
        self.generated = 0
        self.embedded = 0

    async def infer(self, model, inputs, outputs):
        assert model == "text_embedding"
        self.embedded += 1
        text = inputs["TEXT"].reshape(-1)[0]
        return {"EMBEDDING": EMBEDDINGS[text][None].astype(np.float32)}

    async def infer_stream(self, model, inputs, outputs):
        assert model == "llm"
        self.generated += 1
        yield {"text_output": np.array([[f"answer {self.generated}".encode()]], dtype=object)}


def ask(cache, prompt, **settings):
    request = {"text_input": np.array([[prompt]], dtype=object), "max_tokens": np.array([[8]], dtype=np.int32), REQUEST_PARAMETERS: {}}
    request.update({name: np.array([[value]]) for name, value in settings.items()})
    out = asyncio.run(cache.answer(request))
    return out["text_output"].item(), bool(out["cache_hit"].item()), float(out["cache_similarity"].item())


def make(mode="semantic", threshold=0.95, **store):
    models = Models()
    registry = InMemoryRegistry()
    cache = SemanticCache(models.infer, models.infer_stream, AnswerCache(**store), mode, threshold, registry, "llm_cached")
    return cache, models, registry


def test_exact_and_semantic_hits_and_a_miss():
    cache, models, registry = make()
    assert ask(cache, "What is the capital of France?") == ("answer 1", False, 0.0)
    assert ask(cache, "What is the capital of France?") == ("answer 1", True, 1.0)
    text, hit, similarity = ask(cache, "Whats the capital of France")
    assert (text, hit) == ("answer 1", True) and similarity == pytest.approx(0.98, abs=1e-4)
    assert ask(cache, "How do birds fly?")[:2] == ("answer 2", False)
    assert models.generated == 2
    assert registry.value("llm_cache_requests_total", model="llm_cached", result="hit") == 2
    assert registry.value("llm_cache_hit_ratio", model="llm_cached") == pytest.approx(0.5)


def test_exact_mode_never_embeds_and_misses_paraphrases():
    cache, models, _ = make(mode="exact")
    ask(cache, "What is the capital of France?")
    assert ask(cache, "What is the capital of France?")[1] is True
    assert ask(cache, "Whats the capital of France")[1] is False
    assert models.embedded == 0


def test_settings_are_part_of_the_key_and_unseeded_sampling_is_never_cached():
    cache, models, registry = make()
    ask(cache, "What is the capital of France?")
    assert ask(cache, "What is the capital of France?", temperature=np.float32(0.7), random_seed=np.uint64(3))[1] is False
    assert ask(cache, "What is the capital of France?", temperature=np.float32(0.7))[1] is False
    assert ask(cache, "What is the capital of France?", temperature=np.float32(0.7))[1] is False
    assert registry.value("llm_cache_requests_total", model="llm_cached", result="bypass") == 2


def test_entries_expire_and_the_least_recently_used_goes_first():
    now = [0.0]
    store = AnswerCache(max_entries=2, ttl_seconds=10, clock=lambda: now[0])
    key = ("settings",)
    store.store(key, "a", None, "A")
    store.store(key, "b", None, "B")
    assert store.exact(key, "a").answer == "A"  # a is now the most recent
    store.store(key, "c", None, "C")
    assert store.exact(key, "b") is None and len(store) == 2
    now[0] = 11.0
    assert store.exact(key, "a") is None and len(store) == 0


def test_bad_requests_are_refused_before_any_model_is_called():
    cache, models, _ = make()
    with pytest.raises(InputError, match="empty"):
        ask(cache, "  ")
    request = {"text_input": np.array([["hi"]], dtype=object), "max_tokens": np.array([[8]]), REQUEST_PARAMETERS: {"ttl": 1}}
    with pytest.raises(InputError, match="'ttl'"):
        asyncio.run(cache.answer(request))
    assert models.generated == models.embedded == 0
