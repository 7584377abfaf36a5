"""Overload: queue policies refuse excess requests at once with 503 / UNAVAILABLE, accepted ones still
answer, the server recovers, and refusals behind our BLS code are counted in our own metric."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

from modelrepo.build.credit import request_arrays
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from tests.integration.triton_calls import input_tensors, scrape_metrics, texts

REVIEW = "The battery lasts two days and the screen is sharp, but the speaker crackles at full volume. " * 3


def grpc_tensors(inputs: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    return input_tensors(grpcclient, inputs)


def burst(grpc_url: str, model: str, inputs: dict[str, np.ndarray], count: int) -> list[tuple[str, str]]:
    """`count` requests at once (async gRPC): (status, message) each; status "OK" or the error's code."""
    client = grpcclient.InferenceServerClient(grpc_url)
    results: list[tuple[str, str]] = []
    done = threading.Semaphore(0)
    tensors = grpc_tensors(inputs)

    def callback(result, error):
        results.append(("OK", "") if error is None else (error.status(), error.message()))
        done.release()

    for _ in range(count):
        client.async_infer(model, tensors, callback=callback)
    for _ in range(count):
        assert done.acquire(timeout=120), "a request never answered"
    client.close()
    return results


def one_request_seconds(grpc_client, model: str, inputs: dict[str, np.ndarray]) -> float:
    tensors = grpc_tensors(inputs)
    started = time.monotonic()
    grpc_client.infer(model, tensors)
    return time.monotonic() - started


def test_a_burst_beyond_the_queue_is_refused_fast_and_the_server_recovers(server, grpc_client):
    inputs = {"TEXT": texts(REVIEW)}
    baseline = min(one_request_seconds(grpc_client, "text_embedding", inputs) for _ in range(3))
    results = burst(server.grpc_url, "text_embedding", inputs, 96)
    refused = [message for status, message in results if status != "OK"]
    statuses = {status for status, _ in results}
    assert statuses <= {"OK", "StatusCode.UNAVAILABLE"}, statuses
    assert refused, "96 requests at once fit minilm_encoder's queue of 16: the policy is not in force"
    assert len(refused) < len(results), "nothing was accepted"
    # Refused at once because the queue was full (not only after waiting out the 1.5 s queue timeout):
    # Triton says which, so no clock is needed.
    assert any("Exceeds maximum queue size" in message for message in refused), sorted(set(refused))
    assert server.is_ready()
    # Recovered once what the burst queued is served: at most the encoder's 16 queued requests (the
    # tokenizer in front of it keeps no queue of its own), at the pace measured before the burst (plus
    # slack for a loaded machine).
    deadline = time.monotonic() + 16 * baseline + 10
    while (latest := one_request_seconds(grpc_client, "text_embedding", inputs)) > 3 * baseline + 0.2:
        assert time.monotonic() < deadline, f"still {latest:.2f} s per request (baseline {baseline:.2f} s)"


def test_refusals_behind_bls_are_counted_in_our_metric_and_reach_the_client_as_unavailable(server, grpc_client, admin_key):
    headers = {GRPC_ADMIN_HEADER: admin_key}
    original = grpc_client.get_model_config("credit_aggregate", as_json=True, headers=headers)["config"]
    tight = json.loads(json.dumps(original))
    tight["dynamic_batching"]["default_queue_policy"]["max_queue_size"] = 1
    tight["dynamic_batching"]["max_queue_delay_microseconds"] = 50000  # hold batches so the queue fills
    key = (("caller", "credit_router"), ("model", "credit_default"))
    before = scrape_metrics(server).get("modelrepo_queue_rejections_total", {}).get(key, 0.0)
    grpc_client.load_model("credit_aggregate", config=json.dumps(tight), headers=headers)
    try:
        raw = np.array([[0.0, 1700.0, 30000.0]])
        results = burst(server.grpc_url, "credit_router", request_arrays(raw), 64)
    finally:
        grpc_client.load_model("credit_aggregate", config=json.dumps(original), headers=headers)
    statuses = [status for status, _ in results]
    assert set(statuses) <= {"OK", "StatusCode.UNAVAILABLE"}, set(statuses)
    refused = statuses.count("StatusCode.UNAVAILABLE")
    assert refused > 0
    after = scrape_metrics(server)["modelrepo_queue_rejections_total"][key]
    assert after - before == refused
    assert server.is_ready()
