"""Model-repository and model-config APIs need the admin header; health and inference stay open."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from tritonclient.utils import InferenceServerException

from modelrepo.triton.admin import ADMIN_HEADER, GRPC_ADMIN_HEADER


def http_status(server, method, path, headers=None, body=None):
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_http_repository_index_needs_the_admin_key(server, admin_key):
    assert http_status(server, "POST", "/v2/repository/index", body=b"{}") == 403
    assert http_status(server, "POST", "/v2/repository/index", {ADMIN_HEADER: "wrong"}, b"{}") == 403
    assert http_status(server, "POST", "/v2/repository/index", {ADMIN_HEADER: admin_key}, b"{}") == 200


def test_http_model_config_needs_the_admin_key(server, admin_key):
    assert http_status(server, "GET", "/v2/models/text_embedding/config") == 403
    assert http_status(server, "GET", "/v2/models/text_embedding/config", {ADMIN_HEADER: admin_key}) == 200


def test_health_and_metadata_stay_open(server):
    assert http_status(server, "GET", "/v2/health/ready") == 200
    assert http_status(server, "GET", "/v2/models/review_sentiment") == 200
    assert http_status(server, "GET", "/v2/models/review_sentiment/ready") == 200


def test_grpc_repository_and_config_need_the_admin_key(server, grpc_client, admin_key):
    with pytest.raises(InferenceServerException):
        grpc_client.get_model_repository_index()
    with pytest.raises(InferenceServerException):
        grpc_client.get_model_config("text_embedding")
    headers = {GRPC_ADMIN_HEADER: admin_key}
    names = {model.name for model in grpc_client.get_model_repository_index(headers=headers).models}
    assert {"text_embedding", "review_sentiment"} <= names
    config = grpc_client.get_model_config("review_sentiment", headers=headers).config
    assert config.platform == "ensemble"
