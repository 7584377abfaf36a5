"""`modelrepo serve` as users run it: READY with endpoints printed, the OpenAI gateway in front (started
again when it dies), clean stop on SIGTERM (the gateway with it), and a fast, explained failure when a
model cannot load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from modelrepo.triton.server import free_ports

pytestmark = pytest.mark.slow

BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt (planted by the test)")
'''


def start_serve(*extra: str) -> tuple[subprocess.Popen, list[int]]:
    ports = free_ports(4)
    cmd = [sys.executable, "-m", "modelrepo.cli", "serve", "--http-port", str(ports[0]),
           "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--openai-port", str(ports[3]), *extra]
    env = dict(os.environ, MODELREPO_ADMIN_KEY="test-key", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), ports


def read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed within {timeout_s} s; got:\n{''.join(seen)}")


def wait_for_json(url: str, timeout_s: float = 60) -> dict:
    """GET `url` until it answers (the gateway starts once the server is ready)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_serve_reaches_ready_and_stops_cleanly_on_sigterm():
    process, ports = start_serve()
    try:
        banner = read_until(process, "Ctrl-C stops the server", timeout_s=180)
        assert "READY in" in banner
        for model in ("text_embedding", "review_sentiment", "minilm_tokenizer", "minilm_encoder", "sentiment_head"):
            assert model in banner
        assert f"127.0.0.1:{ports[0]}" in banner and f"127.0.0.1:{ports[1]}" in banner
        assert "MODELREPO_ADMIN_KEY" in banner
        gateway = f"http://127.0.0.1:{ports[3]}"
        assert f"OpenAI   {gateway}/v1" in banner
        assert "text_embedding" in [model["id"] for model in wait_for_json(f"{gateway}/v1/models")["data"]]
        # A gateway that dies is started again (after 1 s: the first restart's back-off).
        started = read_until(process, "the OpenAI gateway started (pid ", timeout_s=30).splitlines()[-1]
        os.kill(int(started.rsplit("pid ", 1)[1].rstrip(")")), signal.SIGKILL)
        read_until(process, "the OpenAI gateway exited by itself with code -9; starting it again in 1 s (restart 1)", 30)
        read_until(process, "the OpenAI gateway started (pid ", timeout_s=30)
        assert "text_embedding" in [model["id"] for model in wait_for_json(f"{gateway}/v1/models")["data"]]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert "tritonserver stopped" in process.stdout.read()
        with pytest.raises(OSError):  # the gateway stopped with it
            urllib.request.urlopen(f"{gateway}/health", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_fails_fast_naming_the_model_that_cannot_load(tmp_path):
    version = tmp_path / "broken" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(BROKEN_MODEL)
    (tmp_path / "broken" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    started = time.monotonic()
    process, _ = start_serve("--model-repository", str(tmp_path), "--startup-timeout", "120")
    try:
        code = process.wait(timeout=150)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert code == 1
    assert "broken" in stderr and "weights file is corrupt" in stderr
    assert time.monotonic() - started < 120
