"""`modelrepo serve`: the embedded Triton on model_repository/, until Ctrl-C or SIGTERM, and the
OpenAI-compatible gateway (modelrepo.gateway) in front of it once it is ready (`openai_port`; None: not).

Crash-only: a tritonserver that dies by itself is started again (modelrepo.triton.recovery.CrashOnly,
the same loop as the image's entrypoint)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from modelrepo.gateway.process import GatewayProcess, gateway_command, keep_running
from modelrepo.gateway.settings import DEFAULT_PORT as OPENAI_PORT
from modelrepo.triton.admin import ADMIN_HEADER, ADMIN_KEY_ENV, admin_key
from modelrepo.triton.control import ControlError
from modelrepo.triton.flags import LOOPBACK, RESTRICTED_APIS
from modelrepo.triton.recovery import CrashOnly, RestartPolicy
from modelrepo.triton.server import ModelsFailedToLoad, ServerStartError, StartupCancelled, TritonServer


def serve(
    model_repository: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    model_control_mode: str,
    startup_timeout_s: float,
    exit_on_error: bool = True,
    host: str = LOOPBACK,
    policy: RestartPolicy = RestartPolicy(),
    openai_port: int | None = OPENAI_PORT,
) -> int:
    key, key_source = admin_key(create=True)
    os.environ[ADMIN_KEY_ENV] = key  # the gateway (a child) reads the model configs with it
    server = TritonServer(
        model_repository=model_repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        admin_key=key,
        host=host,
        model_control_mode=model_control_mode,
        exit_on_error=exit_on_error,
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
    try:
        return _serve_started(server, started, startup_timeout_s, host, key_source, policy, lambda: stopping,
                              openai_port)
    except BaseException:
        server.stop()  # never leave tritonserver behind (e.g. our stdout closed under us: BrokenPipeError)
        raise


def _serve_started(server: TritonServer, started: float, startup_timeout_s: float, host: str, key_source: str,
                   policy: RestartPolicy, stopping: Callable[[], bool], openai_port: int | None = None) -> int:
    """From a started tritonserver to the end of serving: wait for READY, print where, keep serving."""
    model_repository = server.model_repository
    print(f"tritonserver starting on {model_repository} (log: {server.log_path})", flush=True)
    try:
        server.wait_until_ready(startup_timeout_s, cancelled=stopping)
    except StartupCancelled:
        print("tritonserver stopped before it was ready.")
        return 0
    except ModelsFailedToLoad as err:  # only with --exit-on-error false: the other models serve
        print(f"error: {err}\nthe other models serve; /v2/health/ready stays false until these load", file=sys.stderr,
              flush=True)
    except (ServerStartError, ControlError) as err:
        server.stop()
        print(f"error: {err}", file=sys.stderr)
        return 1
    states = server.model_states()
    ready = ", ".join(sorted(name for name, state in states.items() if state == "READY"))
    print(
        f"{'READY' if server.is_ready() else 'SERVING (not ready)'} in {time.monotonic() - started:.1f} s: {ready}\n"
        f"  HTTP     http://{server.http_url}   (e.g. curl {server.http_url}/v2/health/ready)\n"
        f"  gRPC     {server.grpc_url}\n"
        f"  metrics  {server.metrics_url}\n"
        f"  listening on {host}; the {RESTRICTED_APIS} APIs need header '{ADMIN_HEADER}', key from {key_source}\n"
        + (f"  OpenAI   http://{host}:{openai_port}/v1   (gateway; its metrics on /metrics)\n" if openai_port else "")
        + "Ctrl-C stops the server.",
        flush=True,
    )
    gateway, watcher, served = None, None, threading.Event()
    if openai_port:
        # Started now and again whenever it exits by itself, with a back-off (as the image's entrypoint does).
        gateway = GatewayProcess(gateway_command(server.grpc_url, host, openai_port, model_repository))
        gateway.start()
        print(f"the OpenAI gateway started (pid {gateway.process.pid})", flush=True)
        watcher = threading.Thread(target=keep_running, name="gateway", daemon=True,
                                   args=(gateway, server.is_ready, lambda: stopping() or served.is_set(),
                                         lambda line: print(line, flush=True)))
        watcher.start()
    try:
        return _keep_serving(server, policy, stopping)
    finally:
        served.set()
        if watcher is not None:
            watcher.join()
            gateway.stop()


def _keep_serving(server: TritonServer, policy: RestartPolicy, stopping: Callable[[], bool]) -> int:
    # Triton restarts neither a dead Python stub (we reload its model) nor itself (we start it again).
    keeper = CrashOnly(lambda: server.start(append_log=True), server, stopping, policy,
                       log=lambda line: print(line, flush=True))
    given_up = keeper.run(server.process)
    if given_up is not None:
        print(f"tritonserver log: {server.log_path}", file=sys.stderr)
        return given_up
    code = server.stop()
    print(f"tritonserver stopped (exit code {code}).")
    return 0
