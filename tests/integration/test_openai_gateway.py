"""The OpenAI-compatible gateway, run as `modelrepo serve` runs it, against the session's real
server, through the official `openai` client: chat (sync, async, streaming, multi-turn, stop, seed),
completions, embeddings, errors, auth and cancellation."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from modelrepo.gateway.process import gateway_command, wait_until_healthy
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.python_backends.llm import protocol as p
from modelrepo.triton.llm_client import grpc_stream, llm_inputs
from modelrepo.triton.server import free_ports
from tests.integration.triton_calls import scrape_metrics

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow
API_KEY = "gateway-test-key"
PROMPT = "What is the capital of France?"
ENGINE_LABELS = (("model", "llm_engine"),)
# Each answer here takes a second or two; a stuck one fails its test in minutes, not in openai's 10.
REQUEST_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def gateway(server, admin_key, tmp_path_factory):
    """One gateway per session, on the session's server: its base URL (its log in a file, never a full pipe)."""
    (port,) = free_ports(1)
    env = dict(os.environ, MODELREPO_ADMIN_KEY=admin_key, MODELREPO_OPENAI_API_KEYS=API_KEY)
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(gateway_command(server.grpc_url, "127.0.0.1", port, MODEL_REPOSITORY), env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
    except RuntimeError as err:
        process.kill()
        pytest.fail(f"{err}:\n{log_path.read_text()[-4000:]}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=API_KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S)


def direct(server, prompt: str, max_tokens: int, **settings) -> str:
    result = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(prompt, max_tokens, **settings))
    assert result.error is None, result.error
    return result.text


def greedy_chat(client, messages, max_tokens=12, **extra):
    return client.chat.completions.create(model="llm_bls", messages=messages, max_tokens=max_tokens, temperature=0,
                                          **extra)


def test_models_lists_the_served_chat_and_embedding_models(client):
    models = {model.id: model.model_extra["kind"] for model in client.models.list()}
    assert {"llm", "llm_bls", "llm_cached"} <= {name for name, kind in models.items() if kind == "chat"}
    assert "text_embedding" in {name for name, kind in models.items() if kind == "embedding"}
    assert "review_sentiment" not in models and "llm_engine" not in models


def test_chat_equals_the_direct_grpc_answer_and_counts_usage_in_tokens(client, server, llm_tokenizer):
    from modelrepo.python_backends.llm.chat import ChatPreprocessor

    answer = greedy_chat(client, [{"role": "user", "content": PROMPT}])
    assert answer.choices[0].message.content == direct(server, PROMPT, 12, temperature=0.0)
    assert answer.choices[0].message.role == "assistant" and answer.object == "chat.completion"
    usage = answer.usage
    assert usage.prompt_tokens == len(ChatPreprocessor(llm_tokenizer).prompt_ids(PROMPT))
    assert 0 < usage.completion_tokens <= 12 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert answer.choices[0].finish_reason == ("length" if usage.completion_tokens == 12 else "stop")


def test_async_chat_answers_the_same(client, gateway):
    async def ask():
        async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=API_KEY, max_retries=0,
                                      timeout=REQUEST_TIMEOUT_S) as async_client:
            return await async_client.chat.completions.create(
                model="llm_bls", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0)

    assert asyncio.run(ask()).choices[0].message.content == greedy_chat(client, [{"role": "user", "content": PROMPT}]).choices[0].message.content


def test_streamed_chat_arrives_in_chunks_that_join_to_the_answer_then_usage_then_done(client, gateway):
    whole = greedy_chat(client, [{"role": "user", "content": PROMPT}], max_tokens=16)
    chunks = list(greedy_chat(client, [{"role": "user", "content": PROMPT}], max_tokens=16, stream=True,
                              stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    raw = urllib.request.urlopen(urllib.request.Request(
        f"{gateway}/v1/chat/completions", method="POST", headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        data=json.dumps({"model": "llm_bls", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                         "stream": True}).encode())).read().decode()
    assert raw.rstrip().endswith("data: [DONE]")


def test_completions_answer_the_prompt(client, server):
    answer = client.completions.create(model="llm_bls", prompt=PROMPT, max_tokens=10, temperature=0)
    assert answer.choices[0].text == direct(server, PROMPT, 10, temperature=0.0)
    assert answer.object == "text_completion" and answer.usage.completion_tokens > 0
    streamed = client.completions.create(model="llm_bls", prompt=PROMPT, max_tokens=10, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == answer.choices[0].text


def test_a_conversation_is_templated_with_every_turn(client, server):
    turns = [{"role": "system", "content": "You are a geography teacher."},
             {"role": "user", "content": "Name a river in Egypt."}, {"role": "assistant", "content": "The Nile."},
             {"role": "user", "content": "How long is it?"}]
    answer = greedy_chat(client, turns, max_tokens=12).choices[0].message.content
    inputs = llm_inputs("How long is it?", 12, temperature=0.0)
    inputs[p.MESSAGES] = np.array([[json.dumps(turns).encode()]], dtype=object)
    expected = grpc_stream(server.grpc_url, "llm_bls", inputs)
    assert expected.error is None and answer == expected.text
    assert answer != direct(server, "How long is it?", 12, temperature=0.0)  # the earlier turns matter
    inputs[p.MESSAGES] = np.array([[b'[{"role": "user"}]']], dtype=object)
    refused = grpc_stream(server.grpc_url, "llm_bls", inputs)
    assert "input 'messages'" in refused.error and "exactly the keys role and content" in refused.error


def test_a_stop_sequence_ends_the_answer_before_it(client):
    full = greedy_chat(client, [{"role": "user", "content": PROMPT}], max_tokens=24).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2].strip(".,!?")
    stopped = greedy_chat(client, [{"role": "user", "content": PROMPT}], max_tokens=24, stop=[stop]).choices[0]
    assert stop not in stopped.message.content and full.startswith(stopped.message.content.rstrip())
    assert stopped.finish_reason == "stop"


def test_the_same_seed_samples_the_same_answer(client):
    def sample(seed):
        return client.chat.completions.create(model="llm_bls", messages=[{"role": "user", "content": "Tell me a story."}],
                                              max_tokens=8, temperature=1.0, top_p=0.95, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)


def test_embeddings_equal_text_embedding_over_grpc_in_one_batch(client, grpc_client):
    import tritonclient.grpc as grpcclient

    texts = ["The Eiffel Tower is in Paris.", "A cat sleeps.", "Quarterly revenue grew."]
    answer = client.embeddings.create(model="text_embedding", input=texts)
    got = np.array([item.embedding for item in answer.data], dtype=np.float32)
    tensor = grpcclient.InferInput("TEXT", [3, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    expected = grpc_client.infer("text_embedding", [tensor]).as_numpy("EMBEDDING")
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == (3, 384) and cosine.min() >= 0.9999
    assert [item.index for item in answer.data] == [0, 1, 2] and answer.usage.prompt_tokens > 0
    packed = client.embeddings.create(model="text_embedding", input=texts[0], encoding_format="base64")
    raw = packed.data[0].embedding
    vector = np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str) else np.array(raw, dtype=np.float32)
    np.testing.assert_allclose(vector, got[0], rtol=0, atol=1e-6)
    # JSON floats (the client above asked for base64 and decoded it): the same float32 values, bit for bit
    as_json = client.post("/embeddings", cast_to=object, body={"model": "text_embedding", "input": texts,
                                                                "encoding_format": "float"})
    floats = np.array([item["embedding"] for item in as_json["data"]], dtype=np.float32)
    np.testing.assert_array_equal(floats, got)


@pytest.mark.parametrize("extra, param", [({"n": 2}, "n"), ({"temperature": 3}, "temperature"),
                                          ({"max_tokens": 100000}, "max_tokens"), ({"seed": -5}, "seed")])
def test_a_bad_request_is_a_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="llm_bls", messages=[{"role": "user", "content": "hi"}],
                                       **{"max_tokens": 4, **extra})
    assert caught.value.status_code == 400 and caught.value.body["param"] == param


def test_an_unknown_model_is_a_404_and_a_missing_key_a_401(client, gateway):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):  # an embedding model is no chat model
        client.chat.completions.create(model="text_embedding", messages=[{"role": "user", "content": "hi"}])
    for key in ("wrong-key", ""):
        stranger = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key or "none", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()


def metric(server, name) -> float:
    return scrape_metrics(server).get(name, {}).get(ENGINE_LABELS, 0.0)


def test_a_client_that_disconnects_mid_stream_stops_the_generation_and_frees_the_slot(client, server, gateway):
    import httpx

    cancelled_before = metric(server, "llm_cancellations_total")
    body = {"model": "llm_bls", "messages": [{"role": "user", "content": "Write a long essay about rivers."}],
            "max_tokens": 400, "stream": True}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        with http.stream("POST", f"{gateway}/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                events += line.startswith("data: ")
                if events >= 4:
                    break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and metric(server, "llm_cancellations_total") <= cancelled_before:
        time.sleep(0.5)
    assert metric(server, "llm_cancellations_total") == cancelled_before + 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and metric(server, "llm_active_sequences") != 0:
        time.sleep(0.5)
    assert metric(server, "llm_active_sequences") == 0
    assert greedy_chat(client, [{"role": "user", "content": "Name a color."}], max_tokens=4).choices[0].message.content
    with urllib.request.urlopen(f"{gateway}/metrics") as response:
        assert 'openai_cancelled_streams_total{model="llm_bls"} 1.0' in response.read().decode()


def test_the_gateway_exposes_every_series_the_monitoring_rules_and_dashboard_read(client, gateway):
    """The rules and the dashboard read these from the gateway's own /metrics (a scrape job of its own);
    the Triton-side check (test_prometheus_alerts) cannot see them. One streamed chat, one embedding and
    one refused request make each series appear (the cancelled-streams counter: the test above)."""
    from tests.deploy.test_monitoring_assets import exposition_series_names, gateway_series_names, series_read_by_monitoring

    for _ in client.chat.completions.create(model="llm_bls", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                            stream=True):
        pass
    client.embeddings.create(model="text_embedding", input="tea")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no_such_model", input="tea")
    with urllib.request.urlopen(f"{gateway}/metrics") as response:
        exposition = response.read().decode()
    scraped = exposition_series_names(exposition)
    read = series_read_by_monitoring(gateway_series_names())
    assert {"openai_requests_total", "openai_request_duration_seconds_bucket"} <= read
    assert read - {"openai_cancelled_streams_total"} <= scraped, sorted(read - scraped)
