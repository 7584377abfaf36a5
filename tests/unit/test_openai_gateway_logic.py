"""The gateway's pure logic, without a server: request schemas, error mapping, model recognition,
keys and the rate limit; and the framing (key, limit, request id, metrics) through FastAPI's test client."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from modelrepo.gateway.catalog import CHAT, EMBEDDING, classify
from modelrepo.gateway.errors import from_triton
from modelrepo.gateway.generation import generation_for_chat
from modelrepo.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from modelrepo.gateway.ratelimit import RateLimiter
from modelrepo.gateway.settings import GatewaySettings, KeyFileError, read_api_keys
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config


def chat(**fields):
    return ChatCompletionRequest(model="llm_bls", messages=[{"role": "user", "content": "hi"}], **fields)


@pytest.mark.parametrize("fields, field", [
    ({"n": 2}, "n"), ({"temperature": 2.5}, "temperature"), ({"top_p": 0}, "top_p"), ({"seed": -1}, "seed"),
    ({"max_tokens": 0}, "max_tokens"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"logit_bias": {"1": 2}}, "logit_bias"),
])
def test_a_bad_chat_field_is_refused_by_name(fields, field):
    with pytest.raises(ValidationError) as caught:
        chat(**fields)
    assert caught.value.errors()[0]["loc"][0] == field


def test_max_completion_tokens_wins_over_max_tokens_and_the_default_fills_in():
    assert chat(max_tokens=5, max_completion_tokens=7).token_budget(256) == 7
    assert chat(max_tokens=5).token_budget(256) == 5
    assert chat().token_budget(256) == 256


def test_text_parts_join_and_developer_is_a_system_turn():
    request = ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert request.turns() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


def served(name):
    return classify(read_config(MODEL_REPOSITORY / name))


def test_a_conversation_goes_to_a_model_with_a_messages_input_only():
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    request = ChatCompletionRequest(model="llm_bls", messages=turns, seed=3, stop="x")
    generation = generation_for_chat(request, served("llm_bls"), 256)
    assert generation.text_input == "bye" and generation.messages == turns
    assert (generation.seed, generation.stop) == (3, ["x"])
    single = generation_for_chat(chat(), served("llm_cached"), 256)
    assert single.text_input == "hi" and single.messages is None
    from modelrepo.gateway.errors import OpenAIError

    with pytest.raises(OpenAIError) as caught:
        generation_for_chat(request.model_copy(update={"model": "llm_cached"}), served("llm_cached"), 256)
    assert caught.value.param == "messages" and caught.value.status == 400


def test_completions_and_embeddings_take_one_prompt_and_non_empty_texts():
    with pytest.raises(ValidationError, match="one non-empty prompt"):
        CompletionRequest(model="m", prompt=["a", "b"])
    with pytest.raises(ValidationError, match="non-empty strings"):
        EmbeddingRequest(model="m", input=["a", ""])
    assert EmbeddingRequest(model="m", input="a").texts() == ["a"]


def test_the_repository_s_chat_and_embedding_models_are_recognised_from_their_configs():
    kinds = {name: (served(name).kind if served(name) else None)
             for name in ("llm", "llm_bls", "llm_cached", "text_embedding", "review_sentiment", "llm_engine", "minilm_encoder")}
    assert kinds == {"llm": CHAT, "llm_bls": CHAT, "llm_cached": CHAT, "text_embedding": EMBEDDING,
                     "review_sentiment": None, "llm_engine": None, "minilm_encoder": None}
    assert [served(name).streams for name in ("llm_bls", "llm", "llm_cached")] == [True, False, False]
    embedding = served("text_embedding")
    assert (embedding.text_input, embedding.dimension, embedding.max_batch_size) == ("TEXT", 384, 64)


def test_an_added_embedding_model_is_recognised():
    config = model_config_pb2.ModelConfig(name="my_encoder", max_batch_size=8)
    config.input.add(name="TEXT", data_type=model_config_pb2.TYPE_STRING, dims=[1])
    config.output.add(name="EMBEDDING", data_type=model_config_pb2.TYPE_FP32, dims=[768])
    assert classify(config).kind == EMBEDDING and classify(config).dimension == 768


@pytest.mark.parametrize("message, status, param", [
    ("in ensemble 'llm', input 'max_tokens': must be between 1 and 512", 400, "max_tokens"),
    ("llm_preprocessing: input 'text_input': is 2000 tokens after the chat template", 400, "prompt"),
    ("input 'random_seed': must be >= 0", 400, "seed"),
    ("Exceeds maximum queue size", 503, None),
    ("overloaded: Request timeout expired", 503, None),
    ("Request for unknown model: 'x' is not found", 404, "model"),
    ("CUDA error", 500, None),
])
def test_triton_refusals_map_to_openai_statuses_and_fields(message, status, param):
    error = from_triton(message, prompt_field="prompt")
    assert (error.status, error.param) == (status, param)
    assert error.body()["error"]["message"]


def test_only_a_server_failure_is_logged_with_its_request_id_and_cause(caplog):
    with caplog.at_level("WARNING", logger="modelrepo.gateway.errors"):
        for message in ("input 'text_input': must not be empty", "Exceeds maximum queue size", "CUDA error"):
            from_triton(message).report("req-1")
    assert [record.getMessage() for record in caplog.records] == ["req-1 500 The inference server failed: CUDA error"]


def test_api_keys_come_from_the_environment_and_a_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team keys\nkey-one\n\nkey-two  # ci\n")
    assert read_api_keys({"MODELREPO_OPENAI_API_KEYS": "env-a, env-b"}, path) == {"env-a", "env-b", "key-one", "key-two"}
    assert read_api_keys({"MODELREPO_OPENAI_API_KEYS_FILE": str(path)}) == {"key-one", "key-two"}
    with pytest.raises(KeyFileError, match="not found"):
        read_api_keys({}, tmp_path / "missing")


def test_the_rate_limit_allows_the_per_minute_burst_then_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(20.0)  # one request per 20 s refills
    assert limiter.acquire("b") == 0.0  # per key
    now[0] = 20.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    assert RateLimiter(0).acquire("a") == 0.0


def test_keys_and_the_limit_are_enforced_before_any_model_is_looked_up():
    from fastapi.testclient import TestClient

    from modelrepo.gateway.app import create_app

    # Nothing listens on port 1: a request that got past the middleware would fail differently.
    app = create_app(GatewaySettings(triton_grpc_url="127.0.0.1:1", api_keys=frozenset({"k"}), requests_per_minute=1))
    with TestClient(app) as client:
        body = {"model": "llm_bls", "messages": [{"role": "user", "content": "hi"}]}
        missing = client.post("/v1/chat/completions", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers["x-request-id"].startswith("req-")
        kept = client.get("/v1/models", headers={"X-Request-Id": "trace-42"})
        assert kept.headers["x-request-id"] == "trace-42" and kept.status_code == 401
        assert client.get("/v1/models", headers={"X-Request-Id": "bad id\t" * 20}).headers["x-request-id"].startswith("req-")
        bad = client.post("/v1/chat/completions", json={**body, "n": 3}, headers={"Authorization": "Bearer k"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"
        limited = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert client.get("/health").status_code == 503  # no server behind it: not ready
        metrics = client.get("/metrics").text
        assert 'openai_requests_total{model="",route="/v1/chat/completions",status="401"} 1.0' in metrics
        assert 'openai_errors_total{code="rate_limit_exceeded",route="/v1/chat/completions"} 1.0' in metrics


def test_only_a_model_that_streams_is_asked_to_and_settings_go_as_their_inputs():
    from modelrepo.gateway.backend import Generation

    generation = Generation("hi", 4, temperature=0.5, seed=9, stop=["x"])
    assert "stream" not in generation.inputs(served("llm"), stream=True)  # the ensemble refuses stream=true
    inputs = generation.inputs(served("llm_bls"), stream=True)
    assert inputs["stream"].tolist() == [[True]] and inputs["random_seed"].dtype.name == "uint64"
    assert inputs["stop_words"].tolist() == [[b"x"]] and "messages" not in inputs


def test_without_a_reachable_server_the_models_list_is_a_503_saying_why():
    from fastapi.testclient import TestClient

    from modelrepo.gateway.app import create_app

    with TestClient(create_app(GatewaySettings(triton_grpc_url="127.0.0.1:1"))) as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 503 and "repository index" in answer.json()["error"]["message"]


def test_the_framing_passes_a_stream_with_one_request_id_and_counts_failures():
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from fastapi.testclient import TestClient

    from modelrepo.gateway.framing import Framing
    from modelrepo.gateway.metrics import GatewayMetrics

    app, metrics = FastAPI(), GatewayMetrics()
    app.add_middleware(Framing, settings=GatewaySettings(triton_grpc_url="-"), limiter=RateLimiter(0), metrics=metrics)

    @app.get("/v1/stream/{name}")
    async def stream(name: str):
        async def events():
            for i in range(3):
                yield f"data: {name} {i}\n\n"
        return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Request-Id": "from-the-route"})

    @app.get("/v1/broken")
    async def broken():
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        with client.stream("GET", "/v1/stream/a", headers={"X-Request-Id": "trace-7"}) as answer:
            chunks = list(answer.iter_lines())
            assert answer.headers.get_list("x-request-id") == ["trace-7"]  # the framing's id, once
        assert [line for line in chunks if line] == ["data: a 0", "data: a 1", "data: a 2"]
        assert client.get("/v1/broken").status_code == 500
    assert metrics.requests.labels("/v1/stream/{name}", "", "200")._value.get() == 1  # the route's template
    assert metrics.requests.labels("/v1/broken", "", "500")._value.get() == 1
    assert metrics.errors.labels("/v1/broken", "internal_error")._value.get() == 1


def test_a_generation_triton_never_answers_is_a_504_and_its_stream_is_cancelled():
    import asyncio

    from modelrepo.gateway.backend import Generation, TritonBackend
    from modelrepo.gateway.errors import OpenAIError

    class SilentStream:
        cancelled = False

        def __aiter__(self):
            return self

        async def __anext__(self):
            await asyncio.sleep(3600)

        def cancel(self):
            SilentStream.cancelled = True

    backend = TritonBackend("-", response_timeout_s=0.05)
    backend._client = type("Client", (), {"stream_infer": lambda self, requests: SilentStream()})()

    async def first_chunk():
        return await anext(backend.generate(served("llm_bls"), Generation("hi", 4), "req-1", True, "messages"))

    with pytest.raises(OpenAIError) as refused:
        asyncio.run(first_chunk())
    assert refused.value.status == 504 and "sent nothing for 0.05 s" in refused.value.message
    assert SilentStream.cancelled
