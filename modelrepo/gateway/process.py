"""The gateway as a child process of `modelrepo serve` and of the image's entrypoint (its own event
loop, its own crash domain). Standard library only, Python 3.10-compatible: modelrepo.triton.launch
imports it before anything else is known to be installed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path

from modelrepo.python_backends.llm.layout import TOKENIZER_DIR
from modelrepo.triton.recovery import RestartPolicy

GATEWAY_BACKOFF = RestartPolicy()  # its max_restarts is not used: the gateway is always started again


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
                 log=print, interval_s: float = 1.0, backoff: RestartPolicy = GATEWAY_BACKOFF) -> None:
    """Start the gateway once Triton is ready, and again whenever it exits by itself, until `stopping()`
    (stopping it is then the caller's job). Run in a thread beside the Triton supervisor.

    Restarts back off like tritonserver's (1 s, doubling, at most 30 s; restarts older than the window
    forgotten) but never give up: Triton keeps serving its own clients while the gateway crash-loops,
    and OpenAIGatewayDown says so."""
    recent: deque[float] = deque()  # when the restarts within the window happened
    restarts, due = 0, None  # due: when an exited gateway may start again
    while not stopping():
        process = gateway.process
        exited = process is not None and process.poll() is not None
        now = time.monotonic()
        if exited and due is None:
            while recent and now - recent[0] > backoff.window_s:
                recent.popleft()
            delay = backoff.delay_s(len(recent))
            due = now + delay
            log(f"the OpenAI gateway exited by itself with code {process.returncode}; starting it again in {delay:g} s "
                f"(restart {restarts + 1})")
        if (process is None or (exited and now >= due)) and triton_ready() and not stopping():
            if exited:
                restarts += 1
                recent.append(now)
            gateway.start()
            due = None
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
