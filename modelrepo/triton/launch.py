"""The container image's entrypoint: exec tritonserver with the flags `modelrepo serve` uses.

Environment:
  MODELREPO_ADMIN_KEY   required: unlocks the restricted model-repository / model-config APIs
  MODEL_REPOSITORY      default /models (baked into the image); s3://bucket/path,
                        gs://… or as://… read with the cloud credentials Triton takes from the
                        environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, …)
  TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT   default 8000 / 8001 / 8002
  TRITONSERVER          default /opt/tritonserver/bin/tritonserver

`--print` shows the command instead of running it; `--health` is the image's HEALTHCHECK (exit 0 iff
GET /v2/health/ready on the HTTP port answers 200). Standard library only, Python 3.10-compatible.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from modelrepo.triton.flags import DEFAULT_PORTS, tritonserver_args

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
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    key = os.environ[ADMIN_KEY_ENV].strip()
    print("exec " + " ".join(redacted(cmd, key)), flush=True)  # the key never reaches the log
    if "--print" in argv:
        return 0
    os.execv(cmd[0], cmd)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
