"""The embedded tritonserver 2.51.0 from the nvidia-pytriton wheel: prepare, start, wait, stop.

`modelrepo serve` and the integration tests both go through `TritonServer`, so what the tests
exercise is what users run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.paths import cache_dir
from modelrepo.triton.control import ControlError, ServerControl
from modelrepo.triton.metrics_scrape import scrape_metrics
from modelrepo.triton.recovery import kill_process_group
from modelrepo.triton.flags import DEFAULT_CACHE_BYTES, EXIT_TIMEOUT_S, LOOPBACK, client_host, tritonserver_args


class ServerStartError(RuntimeError):
    """tritonserver did not become ready; the message carries the relevant log lines."""


class ModelsFailedToLoad(ServerStartError):
    """The server is up but some models failed to load (tritonserver run with --exit-on-error=false)."""

    def __init__(self, message: str, failures: dict[str, str]):
        super().__init__(message)
        self.failures = failures


class StartupCancelled(ServerStartError):
    """A signal asked us to stop while the models were still loading."""


def tritonserver_home() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("nvidia-pytriton is not installed in this environment (run `make serve`).")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def prepare_backend_dir(destination: Path) -> Path:
    """A backend directory whose python/ holds the wheel's backend and the stub for this Python."""
    home = tritonserver_home()
    python_dir = destination / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": home / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": home / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": home / f"python_backend_stubs/{minor}/triton_python_backend_stub",
    }
    for name, source in sources.items():
        if not source.exists():
            raise ServerStartError(f"{source} is missing from the nvidia-pytriton wheel (Python {minor}).")
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return destination


def stub_python_bin() -> Path:
    """The folder whose `python3` the Python-backend stubs take their stdlib and site-packages from.

    The 3.11 stub links the system's libpython (Debian 12: 3.11.2). When this environment's Python
    is another patch release (pyenv's 3.11.7 here), the stub would load that release's stdlib, whose
    `_ssl` needs a symbol 3.11.2 lacks: every import of `ssl` fails in the stub (transformers, via
    huggingface_hub, needs it). So the stubs get a venv of the system Python that sees this
    environment's site-packages (one `.pth` line), created once.
    """
    ours = Path(sys.executable).parent
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = Path(f"/usr/bin/python{minor}")
    if Path(sys.base_prefix) == Path("/usr") or not system.exists():
        return ours
    site_packages = Path(sys.prefix) / "lib" / f"python{minor}" / "site-packages"
    venv = cache_dir() / "triton" / f"stub-python{minor}"
    pth = venv / "lib" / f"python{minor}" / "site-packages" / "modelrepo-environment.pth"
    line = f"import site; site.addsitedir({str(site_packages)!r})\n"
    if not (pth.exists() and pth.read_text() == line):
        subprocess.run([str(system), "-m", "venv", "--without-pip", "--clear", str(venv)], check=True)
        pth.write_text(line)
    return venv / "bin"


def free_ports(count: int) -> list[int]:
    """Ports free on loopback right now (kept open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def failure_lines(log_text: str, limit: int = 40) -> list[str]:
    """The log lines that explain a failed start: load failures, error-level lines, status table."""
    pattern = re.compile(r"failed to load|UNAVAILABLE|error|Error|^E\d{4}")
    lines = [line for line in log_text.splitlines() if pattern.search(line)]
    return lines[-limit:]


LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version (\d+): (.*)")


def load_failures(log_text: str) -> dict[str, str]:
    """model -> first line of the reason, from tritonserver's "failed to load 'M' version N: ..." lines."""
    failures = {}
    for match in LOAD_FAILURE.finditer(log_text):
        reason = match.group(3).rstrip('"').replace("\\n", "\n").strip().splitlines()[0]
        failures.setdefault(match.group(1), f"version {match.group(2)}: {reason}")
    return failures


def describe_failures(failures: dict[str, str]) -> str:
    return "models that failed to load:\n" + "\n".join(f"  {model} ({why})" for model, why in sorted(failures.items()))


@dataclass
class TritonServer(ServerControl):
    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    admin_key: str | None = None
    host: str = LOOPBACK  # the interface every endpoint binds to (0.0.0.0: all)
    # explicit + every model loaded at start: what is served is the whole repository, and configs can
    # be reloaded (load_model with a config override) without a restart.
    model_control_mode: str = "explicit"
    load_models: tuple[str, ...] = ("*",)  # explicit mode: what to load at start (an ensemble brings its steps)
    cache_bytes: int = DEFAULT_CACHE_BYTES
    # False: a model that fails to load leaves the rest serving (readiness false) instead of ending the server.
    exit_on_error: bool = True
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"{client_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{client_host(self.host)}:{self.metrics_port}/metrics"

    def command(self, backend_dir: Path) -> list[str]:
        home = tritonserver_home()
        return [
            str(home / "bin/tritonserver"),
            *tritonserver_args(
                str(Path(self.model_repository).resolve()),
                host=self.host,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                metrics_port=self.metrics_port,
                admin_key=self.admin_key,
                model_control_mode=self.model_control_mode,
                load_models=self.load_models,
                cache_bytes=self.cache_bytes,
                exit_on_error=self.exit_on_error,
            ),
            # The wheel's layout, not the image's (/opt/tritonserver/{backends,caches} are defaults there).
            f"--backend-directory={backend_dir}",
            f"--cache-directory={home / 'caches'}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        # The Python-backend stub takes its stdlib and site-packages from the first python3 on PATH.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(stub_python_bin()), env.get("PATH", "")])
        return env

    def start(self, append_log: bool = False) -> subprocess.Popen:
        """Launch tritonserver (not waiting for it); `append_log` keeps an earlier run's log (a restart)."""
        runtime = cache_dir() / "triton"
        backend_dir = prepare_backend_dir(runtime / "backends")
        if self.log_path is None:
            self.log_path = runtime / f"tritonserver-{self.http_port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if append_log else "wb") as log:
            self.process = subprocess.Popen(
                self.command(backend_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its own process group: stubs are stopped with it
            )
        return self.process

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """Every sample on the metrics port: name -> {sorted label items: value}."""
        return scrape_metrics(self.metrics_url)

    def wait_until_ready(self, timeout_s: float = 300.0, cancelled: Callable[[], bool] = lambda: False) -> float:
        """Block until every model is READY; returns the seconds it took. Fails fast on a dead server."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if cancelled():
                self.stop()
                raise StartupCancelled("stopped before the server was ready")
            if self.process.poll() is not None:
                log = self.log_text()
                failures = load_failures(log)
                summary = describe_failures(failures) + "\n" if failures else ""
                lines = "\n".join(failure_lines(log))
                raise ServerStartError(
                    f"tritonserver exited with code {self.process.returncode} before it was ready "
                    f"(full log: {self.log_path}):\n{summary}{lines}"
                )
            if self.is_ready():
                if self.admin_key and self.model_control_mode != "poll":
                    everything = self.load_models == ("*",)  # else models never asked for have no state
                    not_ready = {n: s for n, s in self.model_states().items() if s != "READY" and (everything or s)}
                    if not_ready:
                        raise ServerStartError(f"models not READY: {not_ready}")
                return time.monotonic() - started
            failures = self._failed_loads()
            if failures:  # up, but not ready: only with --exit-on-error=false (else tritonserver exits)
                raise ModelsFailedToLoad(
                    f"tritonserver is up but not ready (full log: {self.log_path}):\n{describe_failures(failures)}", failures
                )
            time.sleep(0.2)
        self.stop()
        lines = "\n".join(failure_lines(self.log_text()) or self.log_text().splitlines()[-40:])
        raise ServerStartError(
            f"tritonserver was not ready within {timeout_s:.0f} s (a Python stub that cannot start "
            f"hangs model loading; full log: {self.log_path}):\n{lines}"
        )

    def _failed_loads(self) -> dict[str, str]:
        """Models the index reports UNAVAILABLE with a reason, once the server is live (else {})."""
        if not self.admin_key or self.model_control_mode == "poll":
            return {}
        try:
            if self._http("GET", "/v2/health/live")[0] != 200:
                return {}
            index = self.model_index()
        except (OSError, ControlError):
            return {}
        return {
            e["name"]: f"version {e.get('version', '?')}: {e['reason'].strip().splitlines()[0]}"
            for e in index if e.get("state") == "UNAVAILABLE" and e.get("reason")
        }

    def stop(self) -> int | None:
        """SIGTERM, wait for Triton's own exit timeout, then SIGKILL the whole process group."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            self._kill_group()  # a server that died on its own can leave its stubs behind
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=EXIT_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            code = None
        self._kill_group()  # a stub left behind by a hung unload must not outlive the server
        return code if code is not None else self.process.wait()

    def _kill_group(self) -> None:
        kill_process_group(self.process.pid)

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
