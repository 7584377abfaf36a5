"""The container image's entrypoint: tritonserver with the flags `modelrepo serve` uses, supervised.

Triton 2.51 neither restarts a killed Python stub nor reports it (every probe stays green while the
model fails every request), so by default this process starts tritonserver as its child, forwards
SIGTERM / SIGINT to it, and reloads any model whose stub died (modelrepo.triton.recovery), as
`modelrepo serve` does; it exits with tritonserver's exit code.

Environment:
  MODELREPO_ADMIN_KEY   required: unlocks the restricted model-repository / model-config APIs
  MODEL_REPOSITORY      default /models (baked into the image); s3://bucket/path,
                        gs://… or as://… read with the cloud credentials Triton takes from the
                        environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, …)
  TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT   default 8000 / 8001 / 8002
  TRITONSERVER          default /opt/tritonserver/bin/tritonserver
  TRITON_EXIT_ON_ERROR  true (default): a model that fails to load stops the server (the pod restarts,
                        old pods keep serving); false: the rest serve, /v2/health/ready stays false
  MODELREPO_SUPERVISE   true (default): heal dead stubs as above; false: exec tritonserver directly

`--print` shows the command instead of running it; `--health` is the image's HEALTHCHECK (exit 0 iff
GET /v2/health/ready on the HTTP port answers 200). Standard library only, Python 3.10-compatible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping

from modelrepo.triton.control import RunningServer
from modelrepo.triton.flags import DEFAULT_PORTS, tritonserver_args
from modelrepo.triton.recovery import supervise

ADMIN_KEY_ENV = "MODELREPO_ADMIN_KEY"
DEFAULT_MODEL_REPOSITORY = "/models"  # NGC convention; the image copies the repository here
DEFAULT_TRITONSERVER = "/opt/tritonserver/bin/tritonserver"


class LaunchError(ValueError):
    """The environment cannot start a server; the message names the variable and the rule."""


def _port(env: Mapping[str, str], name: str) -> int:
    variable = f"TRITON_{name.upper()}_PORT"
    raw = env.get(variable, str(DEFAULT_PORTS[name]))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LaunchError(f"{variable}={raw!r}: must be a port number 1..65535")
    return int(raw)


def _flag(env: Mapping[str, str], variable: str, default: bool) -> bool:
    raw = env.get(variable, "true" if default else "false").strip().lower()
    if raw not in ("true", "false"):
        raise LaunchError(f"{variable}={raw!r}: must be true or false")
    return raw == "true"


def command(env: Mapping[str, str]) -> list[str]:
    key = env.get(ADMIN_KEY_ENV, "").strip()
    if not key:
        # Without a key the model-control APIs would be open to anyone who reaches the port.
        raise LaunchError(f"{ADMIN_KEY_ENV} is not set: the model-repository and model-config APIs need a key")
    return [
        env.get("TRITONSERVER", DEFAULT_TRITONSERVER),
        *tritonserver_args(
            env.get("MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY),
            http_port=_port(env, "http"),
            grpc_port=_port(env, "grpc"),
            metrics_port=_port(env, "metrics"),
            admin_key=key,
            exit_on_error=_flag(env, "TRITON_EXIT_ON_ERROR", True),
        ),
    ]


def redacted(argv: list[str], secret: str) -> list[str]:
    return [arg.replace(secret, "***") for arg in argv]


def ready(env: Mapping[str, str], timeout_s: float = 4.0) -> bool:
    import urllib.request

    try:
        url = f"http://127.0.0.1:{_port(env, 'http')}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, LaunchError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--health" in argv:
        return 0 if ready(os.environ) else 1
    try:
        cmd = command(os.environ)
        supervised = _flag(os.environ, "MODELREPO_SUPERVISE", True)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    key = os.environ[ADMIN_KEY_ENV].strip()
    # The key never reaches the log.
    print(("supervise " if supervised else "exec ") + " ".join(redacted(cmd, key)), flush=True)
    if "--print" in argv:
        return 0
    if not supervised:
        os.execv(cmd[0], cmd)
    return run_supervised(cmd, RunningServer(f"127.0.0.1:{_port(os.environ, 'http')}", key))


def run_supervised(cmd: list[str], server: RunningServer) -> int:
    """tritonserver as a child: signals forwarded, dead stubs healed; returns its exit code."""
    process = subprocess.Popen(cmd)
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    supervise(process, server, lambda: stopping, log=lambda line: print(line, flush=True))
    code = process.wait()
    print(f"tritonserver exited with code {code}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
