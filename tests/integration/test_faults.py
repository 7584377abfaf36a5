"""Faults under load on the real Triton 2.51, each on its own small server (never the session one):
a Python stub killed (what Triton does, and the reload that heals it), a new version loaded and the
canary unloaded under load (zero failed requests), and a model that cannot load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from modelrepo.perf.chaos import FUSED_MODELS, copy_models, kill_stub, new_version_and_unload_canary
from modelrepo.triton.server import free_ports

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
    import tritonclient.grpc as grpcclient

    from modelrepo.build.credit import request_arrays
    from modelrepo.triton.client import infer
    from modelrepo.triton.control import RunningServer

    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "modelrepo.cli", "serve", "--model-repository", str(broken_repository),
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
           "--startup-timeout", "120", "--exit-on-error", "false"]
    env = dict(os.environ, MODELREPO_ADMIN_KEY="test-key", PYTHONUNBUFFERED="1")
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 150
        while "SERVING (not ready)" not in out.read_text():
            assert process.poll() is None and time.monotonic() < deadline, (out.read_text(), err.read_text())
            time.sleep(0.5)
        summary = err.read_text().split("models that failed to load:\n", 1)[1].splitlines()[0]
        assert summary == "  broken (version 1: Internal: RuntimeError: weights file is corrupt (planted by the test))"
        assert "the other models serve" in err.read_text()
        server = RunningServer(f"127.0.0.1:{http}", "test-key")
        assert server._http("GET", "/v2/health/ready")[0] == 400
        assert server._http("GET", "/v2/health/live")[0] == 200
        assert server.model_states()["credit_default_fused"] == "READY"
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        out_tensors = infer(grpcclient, client, "credit_default_fused", request_arrays(np.array([[0.0, 1700.0, 30000.0]])),
                            ["DECISION"])
        assert out_tensors["DECISION"][0, 0] in (b"approve", b"review", b"decline")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_the_image_entrypoint_supervises_tritonserver_and_heals_a_killed_stub(tmp_path):
    # The image's ENTRYPOINT (modelrepo.triton.launch) on the embedded server: TRITONSERVER is a
    # wrapper adding the wheel's install-specific directories, exec'd so it is tritonserver itself.
    from modelrepo.perf.chaos import credit_call
    from modelrepo.perf.fixed_rate import FixedRateLoad
    from modelrepo.triton.control import RunningServer
    from modelrepo.triton.recovery import child_pids, stub_processes
    from modelrepo.triton.server import TritonServer, prepare_backend_dir

    repository = copy_models(FUSED_MODELS, tmp_path / "repository")
    local = TritonServer(repository, 0, 0, 0, admin_key=None)
    binary, *install_specific = [a for a in local.command(prepare_backend_dir(tmp_path / "backends"))
                                 if not a.startswith("--") or a.startswith(("--backend-directory", "--cache-directory"))]
    wrapper = tmp_path / "tritonserver"
    wrapper.write_text(f'#!/bin/sh\nexec {binary} "$@" {" ".join(install_specific)}\n')
    wrapper.chmod(0o755)
    http, grpc, metrics = free_ports(3)
    key = "entrypoint-test-key"
    env = {**local.environment(), "MODELREPO_ADMIN_KEY": key, "MODEL_REPOSITORY": str(repository),
           "TRITONSERVER": str(wrapper), "TRITON_HTTP_PORT": str(http), "TRITON_GRPC_PORT": str(grpc),
           "TRITON_METRICS_PORT": str(metrics), "TRITON_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
           # tritonserver must be the launcher's only child here; the gateway it also starts is the
           # container rehearsal's subject (tests/deploy/test_container_rehearsal.py)
           "MODELREPO_OPENAI_PORT": "off"}
    log = tmp_path / "launch.log"
    with open(log, "wb") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "modelrepo.triton.launch"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
    try:
        server = RunningServer(f"127.0.0.1:{http}", key)
        deadline = time.monotonic() + 180
        while not server.is_ready():
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        (tritonserver,) = child_pids(launcher.pid)
        server.grpc_url, server.admin_key = f"127.0.0.1:{grpc}", key
        with FixedRateLoad({"credit_default_fused": credit_call(server, "credit_default_fused")}, 10.0) as load:
            time.sleep(2)
            stub = next(s for s in stub_processes(tritonserver) if s.model == "credit_preprocess")
            killed = time.monotonic()
            os.kill(stub.pid, signal.SIGKILL)
            while "model 'credit_preprocess' reloaded" not in log.read_text():
                assert time.monotonic() - killed < 30, log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(3)
        results = load.snapshot()
        assert any(r.error for r in results if r.scheduled >= killed), "the kill went unnoticed by the load"
        recent = [r for r in results if r.scheduled >= time.monotonic() - 2.5]
        assert recent and not [r.error for r in recent if r.error], "still failing after the reload"
        # crash-only: tritonserver itself killed -> the entrypoint starts it again (same repository)
        os.kill(tritonserver, signal.SIGKILL)
        crashed = time.monotonic()
        while "tritonserver serving again (restart 1)" not in log.read_text():
            assert launcher.poll() is None and time.monotonic() - crashed < 120, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "tritonserver died by itself (killed by SIGKILL); restart 1 in 1 s" in log.read_text()
        (restarted,) = child_pids(launcher.pid, zombies=False)
        assert restarted != tritonserver and server.is_ready()
        assert server.model_states()["credit_default_fused"] == "READY"
        assert credit_call(server, "credit_default_fused")()() in ("approve", "review", "decline")
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
        # SIGTERM reached tritonserver through the launcher; the dead instance makes its unload time out.
        assert "tritonserver exited with code" in log.read_text()
        assert code == int(log.read_text().rsplit("tritonserver exited with code ", 1)[1].split()[0])
        assert not child_pids(launcher.pid)
        assert key not in log.read_text().split("\n", 1)[0]  # the command line is logged redacted
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in child_pids(launcher.pid):
            os.kill(pid, signal.SIGKILL)
