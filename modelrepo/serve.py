"""`modelrepo serve`: the embedded Triton on model_repository/, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from modelrepo.paths import cache_dir
from modelrepo.triton.server import ADMIN_HEADER, ADMIN_KEY_ENV, ServerStartError, TritonServer


def admin_key() -> tuple[str, str]:
    """The key for the restricted APIs and where it came from (env var, or a generated key file)."""
    key = os.environ.get(ADMIN_KEY_ENV)
    if key:
        return key, f"${ADMIN_KEY_ENV}"
    path = cache_dir() / "admin-key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip(), f"{path} (set ${ADMIN_KEY_ENV} to choose your own)"


def serve(
    model_repository: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    model_control_mode: str,
    startup_timeout_s: float,
) -> int:
    key, key_source = admin_key()
    server = TritonServer(
        model_repository=model_repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        admin_key=key,
        model_control_mode=model_control_mode,
    )
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            print(f"\n{signal.Signals(signum).name}: stopping tritonserver ...", flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    server.start()
    print(f"tritonserver starting on {model_repository} (log: {server.log_path})", flush=True)
    try:
        server.wait_until_ready(startup_timeout_s)
    except ServerStartError as err:
        server.stop()
        print(f"error: {err}", file=sys.stderr)
        return 1
    models = ", ".join(sorted(server.model_states()))
    print(
        f"READY in {time.monotonic() - started:.1f} s: {models}\n"
        f"  HTTP     http://{server.http_url}   (e.g. curl {server.http_url}/v2/health/ready)\n"
        f"  gRPC     {server.grpc_url}\n"
        f"  metrics  {server.metrics_url}\n"
        f"  model-repository / model-config APIs need header '{ADMIN_HEADER}', key from {key_source}\n"
        "Ctrl-C stops the server.",
        flush=True,
    )
    while not stopping and server.process.poll() is None:
        time.sleep(0.5)
    if not stopping:
        print(f"tritonserver exited by itself with code {server.process.returncode} (log: {server.log_path})")
        return server.process.returncode or 1
    code = server.stop()
    print(f"tritonserver stopped (exit code {code}).")
    return 0
