"""Faults under load on the real Triton 2.51, each on its own small server (never the session one):
a Python stub killed (what Triton does, and the reload that heals it), a new version loaded and the
canary unloaded under load (zero failed requests), and a model that cannot load."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from modelrepo.perf.chaos import FUSED_MODELS, copy_models, kill_stub, new_version_and_unload_canary, small_server
from modelrepo.triton.server import ModelsFailedToLoad, free_ports

pytestmark = pytest.mark.slow

BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt (planted by the test)")
'''
BROKEN_CONFIG = (
    'backend: "python"\nmax_batch_size: 0\n'
    'input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]\n'
    'output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]\n'
)


def test_killed_stub_is_invisible_to_triton_and_a_reload_heals_it(tmp_path):
    figures = kill_stub(tmp_path)
    dead = figures["while_dead"]
    # Triton 2.51: the stub is not restarted, and nothing reports it: probes and index stay green.
    assert dead["stub_restarted_by_triton"] is False and dead["server_alive"] is True
    assert (dead["health_ready"], dead["health_live"], dead["model_ready"], dead["index_state"]) == (200, 200, 200, "READY")
    errors = figures["after_kill"]["errors"]
    assert any("Stub process 'credit_preprocess_0_0' is not healthy" in e for e in errors), errors
    assert figures["after_kill"]["failed"] > 0
    # modelrepo's answer: the dead stub is noticed and its model reloaded; requests succeed again.
    assert figures["reloaded"] == ["credit_preprocess"]
    assert figures["heal_seconds"] < 20
    assert figures["last_3s_failed"] == 0
    assert figures["health_ready_after"] == 200


@pytest.fixture(scope="module")
def reload_figures(tmp_path_factory):
    return new_version_and_unload_canary(tmp_path_factory.mktemp("faults"))


def test_new_version_loaded_under_load_fails_no_request(reload_figures):
    figures = reload_figures["new_version"]
    assert figures["requests"] > 20
    assert figures["failed"] == 0, figures["errors"]
    assert ("2", "READY") in figures["versions_after"]
    assert ("1", "READY") not in figures["versions_after"]


def test_unloading_the_canary_under_load_falls_back_to_stable(reload_figures):
    figures = reload_figures["unload_canary"]
    assert figures["requests"] > 20
    assert figures["failed"] == 0, figures["errors"]
    assert figures["routes_before"] and set(figures["routes_before"]) == {"candidate"}
    assert figures["routes_after"] and set(figures["routes_after"]) == {"candidate_fallback"}
    assert figures["fallbacks_counted"] == figures["fallback_routes"] > 0
    assert figures["candidate_state"] == "UNAVAILABLE"


@pytest.fixture
def broken_repository(tmp_path):
    repository = copy_models(FUSED_MODELS, tmp_path / "repository")
    version = repository / "broken" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(BROKEN_MODEL)
    (repository / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    return repository


def test_serve_names_the_model_that_failed_to_load_and_why(broken_repository):
    # As shipped (exit-on-error defaults to true), tritonserver loads everything, then exits.
    ports = free_ports(3)
    cmd = [sys.executable, "-m", "modelrepo.cli", "serve", "--model-repository", str(broken_repository),
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
           "--startup-timeout", "120"]
    env = dict(os.environ, MODELREPO_ADMIN_KEY="test-key", PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 1
    summary = done.stderr.split("models that failed to load:\n", 1)[1].splitlines()[0]
    assert summary == "  broken (version 1: Internal: RuntimeError: weights file is corrupt (planted by the test))"


def test_with_exit_on_error_false_the_other_models_serve_and_readiness_is_false(broken_repository, tmp_path):
    # The proposed flag (not in modelrepo.triton.flags yet): the rest serves, readiness reports the failure.
    server = small_server(broken_repository, ("*",), tmp_path / "triton.log")
    server.extra_args = ["--exit-on-error=false"]
    server.start()
    try:
        with pytest.raises(ModelsFailedToLoad) as failed:
            server.wait_until_ready(timeout_s=120)
        assert list(failed.value.failures) == ["broken"]
        assert "weights file is corrupt" in failed.value.failures["broken"]
        assert server.process.poll() is None
        assert server._http("GET", "/v2/health/ready")[0] == 400
        assert server._http("GET", "/v2/health/live")[0] == 200
        import tritonclient.grpc as grpcclient

        from modelrepo.build.credit import request_arrays
        from modelrepo.triton.client import infer

        client = grpcclient.InferenceServerClient(server.grpc_url)
        out = infer(grpcclient, client, "credit_default_fused", request_arrays(np.array([[0.0, 1700.0, 30000.0]])), ["DECISION"])
        assert out["DECISION"][0, 0] in (b"approve", b"review", b"decline")
    finally:
        server.stop()
