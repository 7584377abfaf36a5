"""The container image, rehearsed: the Dockerfile's runtime stage carried out on this host
(tests/deploy/container_rehearsal.py), its entrypoint run as uid 1000 with the checkout on no path.
Every model loads, every public model answers over HTTP and gRPC exactly as the checkout's server
does, the OpenAI gateway the entrypoint starts answers, nothing is written outside HOME and the temp
dir, and SIGTERM ends it (tritonserver and the gateway) cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelrepo.paths import REPO_ROOT
from modelrepo.triton.control import RunningServer
from modelrepo.triton.llm_client import generate, grpc_stream, llm_inputs
from modelrepo.triton.recovery import child_pids
from modelrepo.triton.server import describe_failures, failure_lines, free_ports, load_failures
from tests.deploy.container_rehearsal import GID, UID, rehearse
from tests.integration.triton_calls import Caller, texts

pytestmark = [pytest.mark.server, pytest.mark.slow]
ADMIN_KEY = "rehearsal-admin-key-0123456789"
OPENAI_KEY = "rehearsal-openai-key"  # the gateway's API key, given by the environment as `docker run -e`
READY_TIMEOUT_S = 600  # model loading on a busy 2-core machine; the test asserts readiness, not speed

CREDIT_ROWS = {
    "STUDENT": np.array([[b"No"], [b"Yes"]], dtype=object),
    "BALANCE": np.array([[800.0], [1900.0]], dtype=np.float32),
    "INCOME": np.array([[40000.0], [12000.0]], dtype=np.float32),
}
CREDIT_OUTPUTS = ["DEFAULT_PROBABILITY", "UNCERTAINTY", "INTERVAL", "DECISION", "CLASS_PROBABILITIES"]
# public model -> (inputs, outputs, request parameters)
TENSOR_CALLS = {
    "text_embedding": ({"TEXT": texts("Green tea, brewed for three minutes.", "A second query")}, ["EMBEDDING"], None),
    "review_sentiment": ({"TEXT": texts("The best purchase I made this year.")}, ["LABEL", "PROBABILITIES"], None),
    "credit_default": (CREDIT_ROWS, CREDIT_OUTPUTS, None),
    "credit_default_fused": (CREDIT_ROWS, CREDIT_OUTPUTS, None),
    "credit_default_onehop": (CREDIT_ROWS, CREDIT_OUTPUTS, None),
    "credit_router": (CREDIT_ROWS, [*CREDIT_OUTPUTS, "ROUTE"], {"user_id": "rehearsal-user"}),
}
LLM_MODELS = ("llm", "llm_bls", "llm_cached")
PROMPT = "Name one colour of the sky."


@pytest.fixture(scope="module")
def image():
    """The rehearsed image filesystem and its entrypoint, running as uid 1000."""
    rehearsal = rehearse(Path(sys.prefix))
    http, grpc, metrics, openai_port = free_ports(4)
    env = rehearsal.entrypoint_env({
        "MODELREPO_ADMIN_KEY": ADMIN_KEY, "TRITON_HTTP_PORT": str(http), "TRITON_GRPC_PORT": str(grpc),
        "TRITON_METRICS_PORT": str(metrics), "MODELREPO_OPENAI_PORT": str(openai_port),
        "MODELREPO_OPENAI_API_KEYS": OPENAI_KEY, "PYTHONUNBUFFERED": "1",
    })
    before = snapshot(rehearsal.root, writable=(env["HOME"], env["TMPDIR"]))
    log = rehearsal.root / "entrypoint.log"
    as_user = {"user": UID, "group": GID, "extra_groups": []} if os.geteuid() == 0 else {}
    with open(log, "wb") as out:
        process = subprocess.Popen(rehearsal.entrypoint, cwd=rehearsal.host(rehearsal.workdir), env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, **as_user)
    server = RunningServer(f"127.0.0.1:{http}", ADMIN_KEY)
    server.grpc_url = f"127.0.0.1:{grpc}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server.is_ready():
            assert process.poll() is None, f"the entrypoint exited with {process.returncode}:\n{why(log)}"
            assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT_S} s:\n{why(log)}"
            time.sleep(1)
        yield rehearsal, process, server, env, before, log
    finally:
        if process.poll() is None:  # a test stopped early: no SIGTERM test ran
            # the launcher starts tritonserver in a session of its own (its stubs stop with it): kill both groups
            for group in (process.pid, *child_pids(process.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            process.wait()
        shutil.rmtree(rehearsal.root, ignore_errors=True)


def why(log: Path) -> str:
    text = log.read_text(errors="replace")
    return describe_failures(load_failures(text)) + "\n" + "\n".join(failure_lines(text, limit=25))


def snapshot(root: Path, writable: tuple[str, ...]) -> set[str]:
    """Every path under the image root, except the folders the image lets its user write."""
    return {str(p) for p in root.rglob("*") if not str(p).startswith(writable) and p.name != "entrypoint.log"}


def test_the_rehearsal_followed_every_runtime_instruction(image):
    rehearsal, *_ = image
    assert rehearsal.user == str(UID) and rehearsal.entrypoint == ["python3", "-m", "modelrepo.triton.launch"]
    assert "modelrepo.triton.launch" in rehearsal.healthcheck and "--health" in rehearsal.healthcheck
    assert any(line.startswith("COPY --from=build /out/wheels") for line in rehearsal.done), rehearsal.done
    wheels = list(rehearsal.host("/opt/modelrepo/wheels").glob("modelrepo-*.whl"))
    assert len(wheels) == 1, wheels


def test_every_model_is_ready_in_the_image(image):
    _, process, server, *_ = image
    states = server.model_states()
    local = {path.name for path in (REPO_ROOT / "model_repository").iterdir() if (path / "config.pbtxt").exists()}
    assert set(states) >= local and all(state == "READY" for state in states.values()), states


def test_the_image_runs_the_wheel_from_its_venv_with_the_checkout_on_no_path(image):
    rehearsal, process, _, env, *_ = image
    checkout = str(REPO_ROOT)
    assert not [k for k, v in env.items() if checkout in v], env
    assert checkout not in str(rehearsal.host(rehearsal.workdir))
    as_user = {"user": UID, "group": GID, "extra_groups": []} if os.geteuid() == 0 else {}
    probe = subprocess.run(
        ["python3", "-c", "import sys, modelrepo, modelrepo.python_backends.credit_router as r; "
                          "from modelrepo.paths import cache_dir; print(modelrepo.__file__); print(cache_dir()); print(sys.path)"],
        env=env, cwd=rehearsal.host(rehearsal.workdir), capture_output=True, text=True, **as_user,
    )
    assert probe.returncode == 0, probe.stderr
    module, cache, path = probe.stdout.splitlines()
    assert module.startswith(str(rehearsal.host("/opt/modelrepo/venv"))), module
    assert cache.startswith(env["HOME"]), cache  # caches, logs and keys under HOME, not the install
    assert checkout not in path
    # the Python stubs run the venv's python (PATH), not the checkout's
    stubs = [pid for child in child_pids(process.pid) for pid in child_pids(child)]
    assert stubs
    for pid in stubs:
        assert checkout not in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", list(TENSOR_CALLS))
def test_every_public_model_answers_as_the_checkouts_server_does(image, model, protocol, http_client, grpc_client):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    _, _, server, *_ = image
    inputs, outputs, parameters = TENSOR_CALLS[model]
    ours = Caller(protocol, http_client if protocol == "http" else grpc_client)
    theirs = Caller(protocol, httpclient.InferenceServerClient(server.http_url) if protocol == "http"
                    else grpcclient.InferenceServerClient(server.grpc_url))
    expected = ours.infer(model, inputs, outputs, parameters=parameters)
    answered = theirs.infer(model, inputs, outputs, parameters=parameters)
    for name in outputs:
        if expected[name].dtype == object:
            assert answered[name].tolist() == expected[name].tolist(), name
        else:
            np.testing.assert_allclose(answered[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("model", LLM_MODELS)
def test_every_llm_model_answers_over_http_and_a_grpc_stream_as_the_checkouts_server_does(image, model, server):
    _, _, rehearsed, *_ = image
    status, expected = generate(server.http_url, model, {"text_input": PROMPT, "max_tokens": 8}, timeout_s=300)
    assert status == 200, expected
    status, answered = generate(rehearsed.http_url, model, {"text_input": PROMPT, "max_tokens": 8}, timeout_s=300)
    assert status == 200 and answered["text_output"] == expected["text_output"], answered
    streamed = grpc_stream(rehearsed.grpc_url, model, llm_inputs(PROMPT, 8), timeout_s=300)
    assert streamed.error is None and streamed.text == expected["text_output"]


@pytest.fixture(scope="module")
def gateway(image):
    """An HTTP client of the gateway the entrypoint started once Triton was ready, with the API key."""
    _, process, _, env, _, log = image
    url = f"http://127.0.0.1:{env['MODELREPO_OPENAI_PORT']}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {OPENAI_KEY}"}) as client:
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"the entrypoint exited with {process.returncode}:\n{why(log)}"
            assert time.monotonic() < deadline, f"the gateway was not healthy after {READY_TIMEOUT_S} s:\n{why(log)}"
            time.sleep(1)
        yield client


def gateway_pids(launcher_pid: int) -> list[int]:
    return [pid for pid in child_pids(launcher_pid, zombies=False)
            if b"modelrepo.gateway" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_the_gateway_runs_from_the_venv_and_lists_the_models_with_the_key_only(image, gateway):
    rehearsal, process, server, *_ = image
    (pid,) = gateway_pids(process.pid)
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[0].decode().startswith(str(rehearsal.host("/opt/modelrepo/venv"))), command
    assert ADMIN_KEY.encode() not in b" ".join(command)  # the admin key reaches it by the environment only
    assert httpx.get(gateway.base_url.join("/v1/models"), timeout=60).status_code == 401  # no key
    answer = gateway.get("/v1/models")
    assert answer.status_code == 200, answer.text
    listed = {model["id"] for model in answer.json()["data"]}
    assert {"text_embedding", "llm_bls"} <= listed <= set(server.model_states()), listed


def test_the_images_healthcheck_passes_with_triton_and_the_gateway_up(image, gateway):
    rehearsal, _, _, env, *_ = image
    command = rehearsal.healthcheck_command()
    as_user = {"user": UID, "group": GID, "extra_groups": []} if os.geteuid() == 0 else {}
    check = subprocess.run(command, env=env, cwd=rehearsal.host(rehearsal.workdir), capture_output=True, text=True,
                           timeout=60, **as_user)
    assert check.returncode == 0, check.stderr
    stopped = subprocess.run(command, env={**env, "MODELREPO_OPENAI_PORT": str(free_ports(1)[0])},
                             cwd=rehearsal.host(rehearsal.workdir), capture_output=True, text=True, timeout=60, **as_user)
    assert stopped.returncode == 1, stopped.stderr  # no gateway where it should be: unhealthy


def test_the_gateways_embeddings_equal_text_embedding(gateway, grpc_client):
    import tritonclient.grpc as grpcclient

    sentences = ["Green tea, brewed for three minutes.", "A second query"]
    answer = gateway.post("/v1/embeddings", json={"model": "text_embedding", "input": sentences})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert [item["index"] for item in data] == [0, 1]
    tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    tensor.set_data_from_numpy(texts(*sentences))
    expected = grpc_client.infer("text_embedding", [tensor]).as_numpy("EMBEDDING")
    got = np.array([item["embedding"] for item in data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_image_writes_only_under_home_and_the_temp_dir(image):
    rehearsal, _, _, env, before, _ = image
    after = snapshot(rehearsal.root, writable=(env["HOME"], env["TMPDIR"]))
    assert after == before, sorted(after ^ before)[:20]


def test_sigterm_stops_the_image_cleanly(image, gateway):
    _, process, _, _, _, log = image
    (gateway_pid,) = gateway_pids(process.pid)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=120)  # Triton's --exit-timeout-secs (15 s) bounds the unload
    text = log.read_text(errors="replace")
    assert f"tritonserver exited with code {code}\n" in text  # the launcher forwards tritonserver's code
    assert not child_pids(process.pid)
    assert not Path(f"/proc/{gateway_pid}").exists(), "the gateway outlived the entrypoint"
    # uvicorn shuts down on SIGTERM, then ends by that signal; never the SIGKILL after the grace time
    assert re.search(r"^the OpenAI gateway stopped \((exit code 0|killed by SIGTERM)\)$", text, re.MULTILINE), text[-3000:]
    # 0, or Triton's own verdict that a model's unload outlasted the exit timeout (stubs still finishing
    # on a busy 2-core machine): a stop either way, never a crash.
    assert code == 0 or "Exit timeout expired. Exiting immediately." in text, text[-3000:]
