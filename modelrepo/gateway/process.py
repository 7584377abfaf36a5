"""The gateway as a child process of `modelrepo serve` (its own event loop, its own crash domain)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from modelrepo.python_backends.llm.chat import TOKENIZER_DIR


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
