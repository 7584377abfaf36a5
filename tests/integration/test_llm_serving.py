"""The LLM pipeline on the real server: streaming (gRPC, HTTP SSE), the ensemble, the engine's
tensors, batching, cancellation, the semantic cache and bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from modelrepo.python_backends.llm import protocol as p
from modelrepo.triton.llm_client import generate, grpc_stream, llm_inputs, sse_stream
from tests.integration.triton_calls import scrape_metrics

pytestmark = pytest.mark.slow
PROMPT = "What is the capital of France?"
ENGINE_LABELS = (("model", "llm_engine"),)


def metric(server, name, labels=ENGINE_LABELS) -> float:
    return scrape_metrics(server).get(name, {}).get(labels, 0.0)


def test_grpc_streaming_equals_the_ensemble_and_transformers_generate(server, llm_tokenizer, llm_reference):
    expected = llm_tokenizer.decode(llm_reference(PROMPT, 24), skip_special_tokens=True)
    streamed = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(PROMPT, 24, stream=True))
    assert streamed.error is None and len(streamed.chunks) > 3
    assert streamed.text == expected
    whole = grpc_stream(server.grpc_url, "llm", llm_inputs(PROMPT, 24))  # the ensemble: one response
    assert whole.chunks == [expected]
    status, body = generate(server.http_url, "llm", {"text_input": PROMPT, "max_tokens": 24})
    assert status == 200 and body["text_output"] == expected


def test_http_sse_streams_the_same_chunks(server):
    sse = sse_stream(server.http_url, "llm_bls", {"text_input": PROMPT, "max_tokens": 24, "stream": True})
    streamed = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(PROMPT, 24, stream=True))
    assert sse.error is None and sse.chunks == streamed.chunks
    status, body = generate(server.http_url, "llm_bls", {"text_input": PROMPT, "max_tokens": 24})
    assert status == 200 and body["text_output"] == streamed.text


def test_chunks_are_valid_utf8_and_never_repeat_text(server):
    prompt = "Write 'hello' in Chinese characters."  # SmolLM2 answers with CJK characters (3 UTF-8 bytes)
    streamed = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(prompt, 40, stream=True))
    whole = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(prompt, 40))
    assert streamed.error is None  # grpc_stream decodes every chunk as strict UTF-8
    assert all("\ufffd" not in chunk for chunk in streamed.chunks)
    assert streamed.text == whole.text
    assert any(ord(ch) > 127 for ch in streamed.text), streamed.text


def test_the_engine_speaks_tensorrt_llm_tensors_and_honours_max_tokens(server, llm_tokenizer):
    ids = llm_tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    inputs = {
        p.INPUT_IDS: np.array([ids], dtype=np.int32),
        p.INPUT_LENGTHS: np.array([[len(ids)]], dtype=np.int32),
        p.ENGINE_OUTPUT_LEN: np.array([[5]], dtype=np.int32),
        p.STREAMING: np.array([[True]]),
    }
    result = grpc_stream(server.grpc_url, "llm_engine", inputs, output=p.OUTPUT_IDS)
    assert result.error is None
    tokens = [int(t) for out in result.outputs for t in out[p.OUTPUT_IDS].reshape(-1)]
    assert len(tokens) == 5


def test_stop_words_end_the_answer_before_the_word(server):
    full = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(PROMPT, 24)).text
    assert "Paris" in full
    stopped = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(PROMPT, 24, stop_words=["Paris"], stream=True))
    assert stopped.error is None
    assert stopped.text == full[: full.index("Paris")].rstrip(" ")
    assert "Paris" not in stopped.text


def test_a_seed_makes_sampled_answers_reproducible(server):
    settings = dict(temperature=1.0, top_p=0.95, top_k=40)
    first = grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Tell me a story.", 16, random_seed=11, **settings)).text
    again = grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Tell me a story.", 16, random_seed=11, **settings)).text
    other = grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Tell me a story.", 16, random_seed=12, **settings)).text
    assert first == again and first != other


TOKENS = 48


def test_concurrent_requests_share_decode_steps(server):
    before = scrape_metrics(server)
    results = [None] * 4
    start = threading.Barrier(4)
    # Every sequence runs its whole length (min_length = max_tokens) and all four start together: the
    # overlap then depends on neither the text nor the machine's speed. With 32 tokens that could end
    # early, a fast machine finished each sequence in about the time the threads took to start
    # (100 sequence-steps in 66 decode steps).

    def run(k):
        inputs = llm_inputs(f"Count from {k} to {k + 20}.", TOKENS, stream=True, min_length=TOKENS)
        start.wait(30)
        results[k] = grpc_stream(server.grpc_url, "llm_bls", inputs)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(r is not None and r.error is None and r.chunks for r in results)
    after = scrape_metrics(server)
    single = next(key for key in after["llm_decode_batch_size_bucket"] if dict(key) == {"model": "llm_engine", "le": dict(key)["le"]} and float(dict(key)["le"]) == 1.0)
    steps = after["llm_decode_batch_size_count"][ENGINE_LABELS] - before["llm_decode_batch_size_count"][ENGINE_LABELS]
    single_steps = after["llm_decode_batch_size_bucket"][single] - before["llm_decode_batch_size_bucket"][single]
    sequences = after["llm_decode_batch_size_sum"][ENGINE_LABELS] - before["llm_decode_batch_size_sum"][ENGINE_LABELS]
    assert sequences >= 4 * (TOKENS - 1)  # every sequence ran its full length (the first token is the prefill's)
    assert steps - single_steps > 10  # many steps advanced several sequences at once
    assert sequences / steps > 2.0


def test_cancelling_a_stream_stops_its_sequence_and_frees_the_slot(server):
    cancelled_before = metric(server, "llm_cancellations_total")
    result = grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Write a long essay about rivers.", 400, stream=True), cancel_after=3)
    assert result.cancelled and len(result.chunks) == 3
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and metric(server, "llm_cancellations_total") <= cancelled_before:
        time.sleep(0.5)
    assert metric(server, "llm_cancellations_total") == cancelled_before + 1
    assert metric(server, "llm_active_sequences") == 0
    assert grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Name a color.", 4)).error is None


def test_engine_metrics_are_on_the_metrics_port(server):
    grpc_stream(server.grpc_url, "llm_bls", llm_inputs("Name a color.", 8, stream=True))
    values = scrape_metrics(server)
    for name in ("llm_time_to_first_token_seconds_count", "llm_time_per_output_token_seconds_count",
                 "llm_generated_tokens_total", "llm_decode_batch_size_count"):
        assert values[name][ENGINE_LABELS] > 0, name
    assert ENGINE_LABELS in values["llm_queue_size"] and ENGINE_LABELS in values["llm_active_sequences"]


def test_the_semantic_cache_answers_repeats_and_paraphrases_and_says_so(server):
    def ask(prompt):
        status, out = generate(server.http_url, "llm_cached", {"text_input": prompt, "max_tokens": 16})
        assert status == 200, out
        return out["text_output"], bool(out["cache_hit"]), float(out["cache_similarity"])

    first = ask("What is the tallest mountain on Earth?")
    assert first[1] is False
    # A hit is answered without the engine (how fast is the cache benchmark's business, not a test's).
    generated_before = metric(server, "llm_generated_tokens_total")
    repeat = ask("What is the tallest mountain on Earth?")
    assert repeat == (first[0], True, 1.0)
    paraphrase = ask("Which is the tallest mountain on Earth?")  # MiniLM cosine 0.99 to the first
    assert paraphrase[0] == first[0] and paraphrase[1] is True and 0.95 <= paraphrase[2] < 1.0
    assert metric(server, "llm_generated_tokens_total") == generated_before
    assert ask("How do airplanes stay in the air?")[1] is False
    ratio = scrape_metrics(server)["llm_cache_hit_ratio"][(("model", "llm_cached"),)]
    assert 0 < ratio < 1


@pytest.mark.parametrize(
    "body, rule",
    [
        ({"text_input": "", "max_tokens": 8}, "text_input.*empty"),
        ({"text_input": "word " * 1100, "max_tokens": 8}, "text_input.*at most 1024"),
        ({"text_input": "hi", "max_tokens": 0}, "max_tokens.*between 1 and 512"),
        ({"text_input": "hi", "max_tokens": 1000000}, "max_tokens.*between 1 and 512"),
        ({"text_input": "hi", "max_tokens": 8, "temprature": 0.5}, "temprature.*not a known parameter"),
        ({"text_input": "hi", "max_tokens": 8, "top_p": 1.5}, "top_p.*\\(0, 1\\]"),
    ],
)
@pytest.mark.parametrize("model", ["llm", "llm_bls", "llm_cached"])
def test_bad_requests_are_refused_by_name_and_the_server_stays_ready(server, model, body, rule):
    import re

    status, answer = generate(server.http_url, model, body)
    assert status == 400, answer
    assert re.search(rule, answer["error"]), answer["error"]
    assert "internal" not in answer["error"]
    assert server.is_ready()
