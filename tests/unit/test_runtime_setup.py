"""Server command line, backend folder and perf_analyzer libraries, checked without starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelrepo.perf import analyzer
from modelrepo.triton import launch
from modelrepo.pins import pins
from modelrepo.triton.server import TritonServer, failure_lines, prepare_backend_dir


ADMIN_APIS = "model-repository,model-config,shared-memory,statistics,trace,logging"


def test_command_restricts_every_admin_api_and_uses_the_given_ports(tmp_path):
    server = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3, admin_key="k")
    cmd = server.command(tmp_path / "backends")
    assert cmd[0].endswith("bin/tritonserver") and Path(cmd[0]).exists()
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3"} <= set(cmd)
    assert f"--http-restricted-api={ADMIN_APIS}:admin-key=k" in cmd
    assert f"--grpc-restricted-protocol={ADMIN_APIS}:admin-key=k" in cmd
    assert any(arg.startswith("--cache-config=local,size=") for arg in cmd)


def test_the_server_binds_loopback_unless_told_otherwise(tmp_path):
    local = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3).command(tmp_path)
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(local)
    everywhere = TritonServer(tmp_path, http_port=1, grpc_port=2, metrics_port=3, host="0.0.0.0")
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0", "--metrics-address=0.0.0.0"} <= set(everywhere.command(tmp_path))
    assert everywhere.http_url == "127.0.0.1:1"  # clients on this machine go through loopback
    assert TritonServer(tmp_path, http_port=1, host="10.1.2.3").http_url == "10.1.2.3:1"


def test_serve_binds_loopback_by_default_and_takes_host():
    from modelrepo.cli import parser

    assert parser().parse_args(["serve"]).host == "127.0.0.1"
    assert parser().parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_the_image_launcher_binds_every_interface_unless_told_otherwise():
    key = {launch.ADMIN_KEY_ENV: "k"}
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0", "--metrics-address=0.0.0.0"} <= set(launch.command(key))
    assert "--grpc-address=127.0.0.1" in launch.command({**key, "TRITON_HOST": "127.0.0.1"})
    with pytest.raises(launch.LaunchError, match="TRITON_HOST='': must be an address"):
        launch.command({**key, "TRITON_HOST": " "})
    assert f"--http-restricted-api={ADMIN_APIS}:admin-key=k" in launch.command(key)
    assert launch.restart_policy({}).max_restarts == 5
    assert launch.restart_policy({"MODELREPO_MAX_RESTARTS": "0"}).max_restarts == 0
    with pytest.raises(launch.LaunchError, match="MODELREPO_MAX_RESTARTS='-1': must be a whole number >= 0"):
        launch.restart_policy({"MODELREPO_MAX_RESTARTS": "-1"})


class _Health:
    """A local HTTP server answering GET with a status the test sets (Triton's or the gateway's health)."""

    def __init__(self, status: int):
        import http.server
        import threading

        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_image_healthcheck_needs_triton_ready_and_the_gateway_healthy():
    triton, gateway = _Health(200), _Health(200)
    try:
        env = {"TRITON_HOST": "127.0.0.1", "TRITON_HTTP_PORT": str(triton.port),
               launch.OPENAI_PORT_ENV: str(gateway.port)}
        assert launch.ready(env)
        gateway.status = 503  # the gateway is up but cannot reach Triton
        assert not launch.ready(env)
        assert launch.ready({**env, launch.OPENAI_PORT_ENV: "off"})  # no gateway: Triton alone decides
        triton.status = 503
        assert not launch.ready({**env, launch.OPENAI_PORT_ENV: "off"})
        gateway.status, triton.status = 200, 200
        gateway.close()  # the gateway's port refuses (it is restarting)
        assert not launch.ready(env)
        assert not launch.ready({**env, launch.OPENAI_PORT_ENV: "nine"})  # a bad setting is never healthy
    finally:
        triton.close()


def test_backend_dir_links_the_stub_for_this_python(tmp_path):
    python_dir = prepare_backend_dir(tmp_path) / "python"
    stub = python_dir / "triton_python_backend_stub"
    assert stub.resolve().parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert (python_dir / "libtriton_python.so").resolve().exists()
    prepare_backend_dir(tmp_path)  # idempotent


def test_failure_lines_pick_the_load_errors():
    log = "I1122 fine\nE1122 model_lifecycle.cc:1] failed to load 'x' version 1: boom\nI1122 more\n"
    assert failure_lines(log) == ["E1122 model_lifecycle.cc:1] failed to load 'x' version 1: boom"]


def test_perf_analyzer_runs_with_its_libraries_found():
    out = subprocess.run(
        analyzer.command(["--version"]), capture_output=True, text=True, env=analyzer.environment(), timeout=60
    )
    assert "error while loading shared libraries" not in out.stderr
    assert out.returncode == 0
    assert f"Perf Analyzer Version {pins().triton_server}" in out.stdout + out.stderr


def test_perf_analyzer_gets_the_admin_header_for_its_protocol():
    assert analyzer.with_admin_header(["-m", "m", "-i", "grpc"], "k")[-2:] == ["-H", "triton-grpc-protocol-admin-key:k"]
    assert analyzer.with_admin_header(["-m", "m"], "k")[-2:] == ["-H", "admin-key:k"]
    assert analyzer.with_admin_header(["-m", "m", "-H", "x:y"], "k") == ["-m", "m", "-H", "x:y"]
    assert analyzer.with_admin_header(["-m", "m"], None) == ["-m", "m"]


def test_admin_key_from_env_or_a_private_generated_file(tmp_path, monkeypatch):
    from modelrepo.triton import admin

    monkeypatch.setenv("MODELREPO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(admin.ADMIN_KEY_ENV, raising=False)
    assert admin.admin_key()[0] is None  # tools never invent a key
    key, source = admin.admin_key(create=True)
    assert len(key) >= 24 and str(tmp_path) in source
    assert (tmp_path / "admin-key").stat().st_mode & 0o777 == 0o600
    assert admin.admin_key() == (key, source)
    monkeypatch.setenv(admin.ADMIN_KEY_ENV, "chosen")
    assert admin.admin_key(create=True) == ("chosen", "$MODELREPO_ADMIN_KEY")
