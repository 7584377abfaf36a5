"""Shared fixtures: the real embedded Triton server, started once per test session on free ports."""

from __future__ import annotations

import secrets

import pytest

from modelrepo.build.artifacts import read_stamp
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.server import TritonServer, free_ports

BUILT_VERSION_DIRS = (
    "minilm_tokenizer/1", "minilm_encoder/1", "sentiment_head/1", "llm_engine/1", "llm_preprocessing/1", "llm_postprocessing/1",
)


def require_built_repository() -> None:
    missing = [d for d in BUILT_VERSION_DIRS if read_stamp(MODEL_REPOSITORY / d) is None]
    if missing:
        pytest.fail(f"artifacts missing in {missing}: run `make test` (or `modelrepo build`) first", pytrace=False)


@pytest.fixture(scope="session")
def admin_key() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def server(admin_key: str, tmp_path_factory) -> TritonServer:
    require_built_repository()
    http_port, grpc_port, metrics_port = free_ports(3)
    triton = TritonServer(
        model_repository=MODEL_REPOSITORY,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        admin_key=admin_key,
        log_path=tmp_path_factory.mktemp("triton") / "tritonserver.log",
    )
    with triton:
        yield triton


@pytest.fixture(scope="session")
def http_client(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, concurrency=4)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def int8_encoder():
    """The calibrated INT8 encoder (default method and budget), built once into the build cache.

    Not part of `modelrepo build` (make serve does not need it): the first test session builds it in
    about 3 minutes on 2 cores, later ones reuse it while its inputs are unchanged.
    """
    from modelrepo.build.model_build import BuildRequest
    from modelrepo.build.shipped import int8_encoder_step

    require_built_repository()
    return int8_encoder_step(MODEL_REPOSITORY, BuildRequest("minilm_encoder", precision="int8"))


@pytest.fixture(scope="session")
def llm_tokenizer():
    from modelrepo.python_backends.llm.chat import TOKENIZER_DIR, load_tokenizer

    require_built_repository()
    return load_tokenizer(MODEL_REPOSITORY / "llm_preprocessing" / "1" / TOKENIZER_DIR)


@pytest.fixture(scope="session")
def llm_model():
    """SmolLM2 as `modelrepo build` saved it for llm_engine (fp32, ~0.5 GB), loaded once."""
    from modelrepo.python_backends.llm.engine import WEIGHTS_DIR, load_model

    require_built_repository()
    return load_model(MODEL_REPOSITORY / "llm_engine" / "1" / WEIGHTS_DIR)


@pytest.fixture(scope="session")
def llm_reference(llm_model, llm_tokenizer):
    """Greedy answers from transformers' own `generate` for a user prompt: the reference the
    engine (in-process and served) must equal token for token."""
    import torch

    from modelrepo.python_backends.llm.chat import ChatPreprocessor

    chat = ChatPreprocessor(llm_tokenizer)

    def reference(prompt: str, max_tokens: int) -> list[int]:
        ids = chat.prompt_ids(prompt)
        with torch.no_grad():
            out = llm_model.generate(
                torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=chat.end_id, pad_token_id=chat.pad_id
            )
        answer = out[0, len(ids):].tolist()
        return answer[: answer.index(chat.end_id)] if chat.end_id in answer else answer

    return reference
