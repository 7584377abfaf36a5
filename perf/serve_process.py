"""`modelrepo serve` as a child process, its output collected line by line: for the crash-recovery
benchmark (perf/chaos.py) and the tests that crash tritonserver on purpose (they cannot share the
test session's server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.control import RunningServer
from modelrepo.triton.recovery import child_pids
from modelrepo.triton.server import free_ports

# review_sentiment (the SIGFPE reproducer's model) and text_embedding, with the steps they need
TEXT_PIPELINES = ("review_sentiment", "text_embedding", "minilm_tokenizer", "minilm_encoder", "sentiment_head")
READY_BANNER = "Ctrl-C stops the server"


def linked_repository(folder: Path, models: tuple[str, ...] = TEXT_PIPELINES) -> Path:
    """A repository of links to the built models: the artifacts are reused, nothing is copied."""
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        (folder / model).symlink_to(MODEL_REPOSITORY / model, target_is_directory=True)
    return folder


class ServeProcess:
    """`modelrepo serve` started now on free ports with `extra` options; `lines` fills as it prints."""

    def __init__(self, repository: Path, *extra: str, key: str = "crash-test-key"):
        self.ports = free_ports(3)
        self.key = key
        cmd = [sys.executable, "-m", "modelrepo.cli", "serve", "--model-repository", str(repository),
               "--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2]),
               *extra]
        if "--openai-port" not in extra:  # tritonserver is then serve's only child (tritonserver_pid)
            cmd.append("--no-openai")
        env = dict(os.environ, MODELREPO_ADMIN_KEY=key, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        self.control = RunningServer(self.http_url, key)

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, count: int = 1, timeout_s: float = 180) -> str:
        """Block until `text` has appeared in `count` lines; returns the last such line."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = self.process.poll() is not None
            found = [line for line in self.lines if text in line]
            if len(found) >= count:
                return found[count - 1]
            if exited:
                break  # and its output read before the poll: nothing more will come
            time.sleep(0.2)
        raise AssertionError(f"{text!r} (x{count}) not printed within {timeout_s} s; output:\n{self.output()[-4000:]}")

    def tritonserver_pid(self) -> int:
        (pid,) = child_pids(self.process.pid, zombies=False)
        return pid

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
