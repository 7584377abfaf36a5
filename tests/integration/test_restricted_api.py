"""Every non-inference API needs the admin header (model repository, model config, shared memory,
statistics, trace, logging), over HTTP and gRPC; health, metadata, inference and metrics stay open."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from modelrepo.triton.admin import ADMIN_HEADER, GRPC_ADMIN_HEADER
from tests.integration.triton_calls import texts


def http_call(server, method, path, headers=None, body=None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_status(server, method, path, headers=None, body=None) -> int:
    return http_call(server, method, path, headers, body)[0]


# surface: (method, path, body); each answers 200 with the key
HTTP_RESTRICTED = {
    "model-repository index": ("POST", "/v2/repository/index", b"{}"),
    "model-config": ("GET", "/v2/models/text_embedding/config", None),
    "statistics (all models)": ("GET", "/v2/models/stats", None),
    "statistics (one model)": ("GET", "/v2/models/text_embedding/stats", None),
    "logging (read)": ("GET", "/v2/logging", None),
    "trace (read)": ("GET", "/v2/trace/setting", None),
    "trace (one model)": ("GET", "/v2/models/text_embedding/trace/setting", None),
    "system shared memory": ("GET", "/v2/systemsharedmemory/status", None),
}


@pytest.mark.parametrize("surface", HTTP_RESTRICTED)
def test_http_admin_surface_needs_the_admin_key(server, admin_key, surface):
    method, path, body = HTTP_RESTRICTED[surface]
    status, answer = http_call(server, method, path, body=body)
    assert status == 403, answer
    assert b"admin-key" in answer  # Triton names the header it wants
    assert http_status(server, method, path, {ADMIN_HEADER: "wrong"}, body) == 403
    assert http_status(server, method, path, {ADMIN_HEADER: admin_key}, body) == 200


def test_http_changing_log_settings_or_registering_shared_memory_needs_the_key(server, admin_key):
    """The writes that were open before: log verbosity (log volume) and shared-memory registration."""
    settings = json.loads(http_call(server, "GET", "/v2/logging", {ADMIN_HEADER: admin_key})[1])
    body = json.dumps({"log_verbose_level": settings["log_verbose_level"]}).encode()
    assert http_status(server, "POST", "/v2/logging", body=body) == 403
    assert http_status(server, "POST", "/v2/logging", {ADMIN_HEADER: admin_key}, body) == 200
    register = json.dumps({"key": "/modelrepo-test-absent", "offset": 0, "byte_size": 16}).encode()
    assert http_status(server, "POST", "/v2/systemsharedmemory/region/r/register", body=register) == 403
    # with the key the request reaches Triton, which cannot open a region that does not exist (its 500)
    status, answer = http_call(server, "POST", "/v2/systemsharedmemory/region/r/register", {ADMIN_HEADER: admin_key}, register)
    assert (status, json.loads(answer)["error"]) == (500, "Unable to open shared memory region: '/modelrepo-test-absent'")
    assert http_status(server, "POST", "/v2/cudasharedmemory/region/r/unregister", body=b"{}") == 403


def test_health_metadata_inference_and_metrics_stay_open(server, http_client):
    assert http_status(server, "GET", "/v2/health/ready") == 200
    assert http_status(server, "GET", "/v2/health/live") == 200
    assert http_status(server, "GET", "/v2") == 200
    assert http_status(server, "GET", "/v2/models/review_sentiment") == 200
    assert http_status(server, "GET", "/v2/models/review_sentiment/ready") == 200
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert response.status == 200
    import tritonclient.http as httpclient

    text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(texts("open for inference"))
    assert http_client.infer("text_embedding", [text]).as_numpy("EMBEDDING").shape == (1, 384)


# surface: a call with the client and the metadata headers; each succeeds with the key
GRPC_RESTRICTED = {
    "model-repository index": lambda client, h: client.get_model_repository_index(headers=h),
    "model-config": lambda client, h: client.get_model_config("text_embedding", headers=h),
    "statistics": lambda client, h: client.get_inference_statistics("text_embedding", headers=h),
    "logging (read)": lambda client, h: client.get_log_settings(headers=h),
    "logging (write)": lambda client, h: client.update_log_settings({"log_verbose_level": 0}, headers=h),  # the default
    "trace": lambda client, h: client.get_trace_settings(headers=h),
    "system shared memory": lambda client, h: client.get_system_shared_memory_status(headers=h),
}


@pytest.mark.parametrize("surface", GRPC_RESTRICTED)
def test_grpc_admin_surface_needs_the_admin_key(server, grpc_client, admin_key, surface):
    """Triton (2.51, and upstream still) refuses with UNAVAILABLE, not PERMISSION_DENIED: asserted
    exactly, with its message naming the header (README "Restricted APIs")."""
    call = GRPC_RESTRICTED[surface]
    for headers in (None, {GRPC_ADMIN_HEADER: "wrong"}):
        with pytest.raises(InferenceServerException) as refused:
            call(grpc_client, headers)
        assert (refused.value.status(), refused.value.message()) == (
            str(grpc.StatusCode.UNAVAILABLE), f"This protocol is restricted, expecting header '{GRPC_ADMIN_HEADER}'")
    call(grpc_client, {GRPC_ADMIN_HEADER: admin_key})


def test_grpc_inference_and_health_stay_open(server, grpc_client):
    import tritonclient.grpc as grpcclient

    assert grpc_client.is_server_ready() and grpc_client.is_model_ready("text_embedding")
    assert grpc_client.get_model_metadata("text_embedding").name == "text_embedding"
    text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"open for inference"]], dtype=object))
    assert grpc_client.infer("text_embedding", [text]).as_numpy("EMBEDDING").shape == (1, 384)
