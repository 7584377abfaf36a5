"""The gateway as a child process of `modelrepo serve` and of the image's entrypoint (its own event
loop, its own crash domain). Standard library only, Python 3.10-compatible: modelrepo.triton.launch
imports it before anything else is known to be installed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from modelrepo.python_backends.llm.layout import TOKENIZER_DIR


def tokenizer_dir(model_repository: Path) -> Path | None:
    """llm_preprocessing's tokenizer (its highest version) in a local repository, for usage counts."""
    versions = sorted((p for p in (Path(model_repository) / "llm_preprocessing").glob("*") if p.name.isdigit()),
                      key=lambda p: int(p.name))
    found = [v / TOKENIZER_DIR for v in versions if (v / TOKENIZER_DIR).is_dir()]
    return found[-1] if found else None


def gateway_command(grpc_url: str, host: str, port: int, model_repository: Path) -> list[str]:
    cmd = [sys.executable, "-m", "modelrepo.gateway", "--triton-grpc", grpc_url, "--host", host, "--port", str(port)]
    tokenizer = tokenizer_dir(model_repository)
    return cmd + (["--tokenizer-dir", str(tokenizer)] if tokenizer else [])


class GatewayProcess:
    """Started with `start`; `stop` ends it (SIGTERM, then SIGKILL after `grace_s`)."""

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.cmd)  # the admin key reaches it by the environment, never argv

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def keep_running(gateway: GatewayProcess, triton_ready: Callable[[], bool], stopping: Callable[[], bool],
                 log=print, interval_s: float = 1.0) -> None:
    """Start the gateway once Triton is ready, and again whenever it exits by itself, until `stopping()`
    (stopping it is then the caller's job). Run in a thread beside the Triton supervisor."""
    while not stopping():
        process = gateway.process
        if (process is None or process.poll() is not None) and triton_ready() and not stopping():
            if process is not None:
                log(f"the OpenAI gateway exited by itself with code {process.returncode}; starting it again")
            gateway.start()
            log(f"the OpenAI gateway started (pid {gateway.process.pid})")
        time.sleep(interval_s)


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until the gateway at `url` answers /health 200 (Triton ready); raise if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {process.returncode} before it was healthy")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway at {url} was not healthy within {timeout_s:.0f} s")
        time.sleep(0.25)
