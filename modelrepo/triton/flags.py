"""The tritonserver command line: one definition for `modelrepo serve`, the tests and the container.

`modelrepo serve` (modelrepo.triton.server) and the image's entrypoint (modelrepo.triton.launch)
both build their argv here, so what runs locally is what the image runs. Standard library only,
Python 3.10-compatible: the NGC 24.10 image runs it with its own python3.
"""

from __future__ import annotations

from collections.abc import Sequence

# Every API but health, metadata and inference needs the admin key header: model control
# (load/unload/index), configs, shared-memory registration, statistics, trace and log settings.
# (tritonserver 2.51's categories; it refuses to start on an unknown one.)
RESTRICTED_APIS = "model-repository,model-config,shared-memory,statistics,trace,logging"
# HTTP clients send this header as-is; gRPC clients send it as "triton-grpc-protocol-admin-key".
ADMIN_HEADER = "admin-key"
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# How long Triton lets in-flight requests finish after SIGTERM (k8s grace periods must exceed it).
EXIT_TIMEOUT_S = 15
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# `modelrepo serve` listens on loopback unless told otherwise; the image on every interface.
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
MODEL_LOAD_THREADS = 16


def tritonserver_args(
    model_repository: str,
    *,
    host: str,
    http_port: int = DEFAULT_PORTS["http"],
    grpc_port: int = DEFAULT_PORTS["grpc"],
    metrics_port: int = DEFAULT_PORTS["metrics"],
    admin_key: str | None,
    model_control_mode: str = "explicit",
    load_models: Sequence[str] = ("*",),
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    exit_on_error: bool = True,
) -> list[str]:
    """Every tritonserver flag but the binary and the install-specific directories (backends, caches)."""
    args = [
        f"--model-repository={model_repository}",
        *address_args(host),
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        f"--model-control-mode={model_control_mode}",
        *([f"--load-model={m}" for m in load_models] if model_control_mode == "explicit" else []),
        f"--cache-config=local,size={cache_bytes}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        "--strict-readiness=true",
        # 16 models load at once (Triton's default: 4): a Python stub mostly waits on
        # its own start-up, so a start, and a crash restart, take the slowest load, not the sum.
        f"--model-load-thread-count={MODEL_LOAD_THREADS}",
        # Our configs are complete (written through the protobuf, `modelrepo check`ed). With auto-complete
        # on, the Python backend starts one extra stub per model, importing its model.py (torch for
        # llm_engine), only to ask it for a config: that doubled the start (and a crash restart).
        "--disable-auto-complete-config",
        # true: a model that fails to load ends the server (a crash loop in k8s, old pods keep serving);
        # false: the rest serve and /v2/health/ready stays false until it loads.
        f"--exit-on-error={'true' if exit_on_error else 'false'}",
        # p50..p99 summaries per model (the alert rules' latency quantiles) and the decoupled models'
        # time-to-first-response histogram.
        "--metrics-config=summary_latencies=true",
        "--metrics-config=histogram_latencies=true",
    ]
    if admin_key:
        restriction = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={admin_key}"
        args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return args


def address_args(host: str) -> list[str]:
    """The interface every endpoint (HTTP, gRPC, metrics) binds to."""
    return [f"--{endpoint}-address={host}" for endpoint in ("http", "grpc", "metrics")]


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (any-address: loopback)."""
    return LOOPBACK if host in (ALL_INTERFACES, "::", "") else host
