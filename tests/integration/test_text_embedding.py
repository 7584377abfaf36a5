"""text_embedding over HTTP and gRPC against sentence-transformers all-MiniLM-L6-v2 in process."""

from __future__ import annotations

import numpy as np
import pytest

from modelrepo.build.minilm import reference_embeddings
from tests.integration.triton_calls import Caller, texts

SAMPLES = [
    "The coffee arrived fresh and tastes wonderful.",
    "a",
    "Café crème, naïve façade — 日本語 🙂",
    "Stale crackers, broken box, never again!!!",
]
# ~700 tokens: the pipeline (like sentence-transformers) keeps the first 256.
LONG_TEXT = " ".join(f"sentence number {i} about a tin of tea leaves" for i in range(80))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def embed(caller, values) -> np.ndarray:
    return caller.infer("text_embedding", {"TEXT": texts(*values)}, ["EMBEDDING"])["EMBEDDING"]


def test_batch_matches_sentence_transformers(caller):
    served = embed(caller, SAMPLES)
    assert served.shape == (len(SAMPLES), 384) and served.dtype == np.float32
    assert cosine(served, reference_embeddings(SAMPLES)).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_single_texts_match_the_batched_answer(caller):
    batched = embed(caller, SAMPLES)
    singles = np.vstack([embed(caller, [text]) for text in SAMPLES])
    np.testing.assert_allclose(singles, batched, atol=1e-5)


def test_long_text_is_truncated_like_sentence_transformers(caller):
    served = embed(caller, [LONG_TEXT])
    assert cosine(served, reference_embeddings([LONG_TEXT]))[0] >= 0.9999
    # Truncation really happened: the tail of the text does not change the embedding.
    longer = embed(caller, [LONG_TEXT + " and an ending about something else entirely"])
    np.testing.assert_allclose(longer, served, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 64])
def test_batch_sizes_up_to_max(caller, batch):
    values = [f"review number {i}: tasty snack" for i in range(batch)]
    served = embed(caller, values)
    assert served.shape == (batch, 384)
    assert cosine(served, reference_embeddings(values)).min() >= 0.9999


def test_texts_of_every_length_in_flight_at_once_are_each_answered_as_alone(server, caller):
    # All in flight at once, each from its own client: minilm_encoder batches them and its runner runs a
    # batch in groups of similar length (python_backends/batching.length_groups); every answer must be
    # the one its text gets alone, wherever the cuts fell.
    from concurrent.futures import ThreadPoolExecutor

    values = [*SAMPLES, LONG_TEXT, *(f"query {i} about tea" for i in range(6))]
    url = server.http_url if caller.protocol == "http" else server.grpc_url

    def embed_alone(text: str) -> np.ndarray:
        client = caller.module.InferenceServerClient(url)
        try:
            return embed(Caller(caller.protocol, client), [text])[0]
        finally:
            client.close()

    with ThreadPoolExecutor(len(values)) as pool:
        served = np.vstack(list(pool.map(embed_alone, values)))
    assert cosine(served, reference_embeddings(values)).min() >= 0.9999
    assert server.is_ready()
