"""The container image's entrypoint: tritonserver with the flags `modelrepo serve` uses, supervised.

Triton 2.51 neither restarts a killed Python stub nor reports it (every probe stays green while the
model fails every request), nor survives every request (classification on a BYTES output: SIGFPE).
So by default this process starts tritonserver as its child, forwards SIGTERM / SIGINT to it, reloads
any model whose stub died and starts tritonserver again when it dies by itself, with backoff
(modelrepo.triton.recovery.CrashOnly), as `modelrepo serve` does. It exits with tritonserver's exit
code once stopped, or 128+signal after MODELREPO_MAX_RESTARTS restarts within the window (a crash loop).
Once tritonserver is ready it also starts the OpenAI-compatible gateway (`python -m modelrepo.gateway`,
with this process's python: the image's venv) on MODELREPO_OPENAI_PORT, bound to TRITON_HOST and
reaching Triton over gRPC; it starts the gateway again if it exits by itself, and stops it on SIGTERM.

Environment:
  MODELREPO_ADMIN_KEY   required: unlocks the restricted APIs (flags.RESTRICTED_APIS: model control,
                        config, shared memory, statistics, trace, logging)
  TRITON_HOST           default 0.0.0.0 (every interface: the container's port is what is exposed)
  MODEL_REPOSITORY      default /models (baked into the image); s3://bucket/path,
                        gs://… or as://… read with the cloud credentials Triton takes from the
                        environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, …)
  TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT   default 8000 / 8001 / 8002
  TRITONSERVER          default /opt/tritonserver/bin/tritonserver
  TRITON_EXIT_ON_ERROR  true (default): a model that fails to load stops the server (the pod restarts,
                        old pods keep serving); false: the rest serve, /v2/health/ready stays false
  MODELREPO_SUPERVISE   true (default): heal dead stubs and restart tritonserver as above; false: exec
                        tritonserver directly
  MODELREPO_MAX_RESTARTS default 5: restarts within the window before giving up (0: never restart)
  MODELREPO_RESTART_WINDOW_S  default 300: restarts older than this are forgotten (the backoff,
                        1 s doubling, starts again)
  MODELREPO_OPENAI_PORT default 9000: the OpenAI gateway's port (/v1/models, /v1/chat/completions,
                        /v1/completions, /v1/embeddings, /health, /metrics); 0 or off: no gateway. It
                        runs only supervised (MODELREPO_SUPERVISE=false execs tritonserver alone). It
                        reads MODELREPO_ADMIN_KEY from the environment (never argv) and its API keys
                        from MODELREPO_OPENAI_API_KEYS (comma-separated) or MODELREPO_OPENAI_API_KEYS_FILE
                        (one per line); without either it is open to whoever reaches the port

`--print` shows the commands (tritonserver's, then the gateway's) instead of running them; `--health`
is the image's HEALTHCHECK (exit 0 iff GET /v2/health/ready on the HTTP port answers 200 and, when the
gateway is on, its GET /health does). Standard library only, Python 3.10-compatible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from modelrepo.gateway.process import GatewayProcess, gateway_command, keep_running
from modelrepo.gateway.settings import DEFAULT_PORT as DEFAULT_OPENAI_PORT
from modelrepo.triton.control import RunningServer
from modelrepo.triton.flags import ALL_INTERFACES, DEFAULT_PORTS, RESTRICTED_APIS, client_host, tritonserver_args
from modelrepo.triton.recovery import CrashOnly, RestartPolicy, describe_exit

ADMIN_KEY_ENV = "MODELREPO_ADMIN_KEY"
DEFAULT_MODEL_REPOSITORY = "/models"  # NGC convention; the image copies the repository here
DEFAULT_TRITONSERVER = "/opt/tritonserver/bin/tritonserver"
OPENAI_PORT_ENV = "MODELREPO_OPENAI_PORT"
NO_GATEWAY = ("0", "off")


class LaunchError(ValueError):
    """The environment cannot start a server; the message names the variable and the rule."""


def _port(env: Mapping[str, str], name: str) -> int:
    variable = f"TRITON_{name.upper()}_PORT"
    raw = env.get(variable, str(DEFAULT_PORTS[name]))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LaunchError(f"{variable}={raw!r}: must be a port number 1..65535")
    return int(raw)


def openai_port(env: Mapping[str, str]) -> int | None:
    """The gateway's port, or None when MODELREPO_OPENAI_PORT turns it off."""
    raw = env.get(OPENAI_PORT_ENV, str(DEFAULT_OPENAI_PORT)).strip().lower()
    if raw in NO_GATEWAY:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LaunchError(f"{OPENAI_PORT_ENV}={raw!r}: must be a port number 1..65535, or 0 / off (no gateway)")
    taken = {name: _port(env, name) for name in DEFAULT_PORTS}
    clash = [name for name, port in taken.items() if port == int(raw)]
    if clash:
        raise LaunchError(f"{OPENAI_PORT_ENV}={raw}: Triton's {clash[0]} port already uses it")
    return int(raw)


def gateway(env: Mapping[str, str]) -> list[str] | None:
    """The gateway's command (no secret in it: the admin key reaches it by the environment), or None."""
    port = openai_port(env)
    if port is None:
        return None
    grpc_url = f"{client_host(_host(env))}:{_port(env, 'grpc')}"
    return gateway_command(grpc_url, _host(env), port, Path(env.get("MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY)))


def _flag(env: Mapping[str, str], variable: str, default: bool) -> bool:
    raw = env.get(variable, "true" if default else "false").strip().lower()
    if raw not in ("true", "false"):
        raise LaunchError(f"{variable}={raw!r}: must be true or false")
    return raw == "true"


def _host(env: Mapping[str, str]) -> str:
    host = env.get("TRITON_HOST", ALL_INTERFACES).strip()
    if not host or any(c.isspace() for c in host):
        raise LaunchError(f"TRITON_HOST={host!r}: must be an address to bind (e.g. 0.0.0.0 or 127.0.0.1)")
    return host


def _count(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable, str(default)).strip()
    if not raw.isdigit():
        raise LaunchError(f"{variable}={raw!r}: must be a whole number >= 0")
    return int(raw)


def restart_policy(env: Mapping[str, str]) -> RestartPolicy:
    return RestartPolicy(max_restarts=_count(env, "MODELREPO_MAX_RESTARTS", RestartPolicy.max_restarts),
                         window_s=_count(env, "MODELREPO_RESTART_WINDOW_S", int(RestartPolicy.window_s)))


def command(env: Mapping[str, str]) -> list[str]:
    key = env.get(ADMIN_KEY_ENV, "").strip()
    if not key:
        # Without a key the admin APIs would be open to anyone who reaches the port.
        raise LaunchError(f"{ADMIN_KEY_ENV} is not set: the {RESTRICTED_APIS} APIs need a key")
    return [
        env.get("TRITONSERVER", DEFAULT_TRITONSERVER),
        *tritonserver_args(
            env.get("MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY),
            host=_host(env),
            http_port=_port(env, "http"),
            grpc_port=_port(env, "grpc"),
            metrics_port=_port(env, "metrics"),
            admin_key=key,
            exit_on_error=_flag(env, "TRITON_EXIT_ON_ERROR", True),
        ),
    ]


def redacted(argv: list[str], secret: str) -> list[str]:
    return [arg.replace(secret, "***") for arg in argv]


def _http_address(env: Mapping[str, str]) -> str:
    return f"{client_host(_host(env))}:{_port(env, 'http')}"


def ready(env: Mapping[str, str], timeout_s: float = 2.0) -> bool:  # two calls within Docker's 5 s
    """The image's health: Triton ready (every model loaded) and, unless MODELREPO_OPENAI_PORT turns it
    off, the gateway's /health answering 200 (it answers 503 when it cannot reach Triton)."""
    import urllib.request

    try:
        urls = [f"http://{_http_address(env)}/v2/health/ready"]
        port = openai_port(env)
        if port is not None:
            urls.append(f"http://{client_host(_host(env))}:{port}/health")
        for url in urls:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    return False
        return True
    except (OSError, LaunchError):  # refused, timed out, or an HTTPError (4xx / 5xx)
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--health" in argv:
        return 0 if ready(os.environ) else 1
    try:
        cmd = command(os.environ)
        supervised = _flag(os.environ, "MODELREPO_SUPERVISE", True)
        policy = restart_policy(os.environ)
        gateway_cmd = gateway(os.environ) if supervised else None
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    key = os.environ[ADMIN_KEY_ENV].strip()
    # The key never reaches the log.
    print(("supervise " if supervised else "exec ") + " ".join(redacted(cmd, key)), flush=True)
    if gateway_cmd:
        print("gateway (once tritonserver is ready) " + " ".join(gateway_cmd), flush=True)
    if "--print" in argv:
        return 0
    if not supervised:
        os.execv(cmd[0], cmd)
    return run_supervised(cmd, RunningServer(_http_address(os.environ), key), policy, gateway_cmd)


def run_supervised(cmd: list[str], server: RunningServer, policy: RestartPolicy,
                   gateway_cmd: list[str] | None = None) -> int:
    """tritonserver as a child: signals forwarded, dead stubs healed, restarted when it dies by itself;
    the gateway (if any) started once it is ready and stopped with it; returns tritonserver's exit code
    once stopped, or non-zero when the restarts run out."""
    stopping = False
    signalled: set[int] = set()  # the tritonserver pids a signal was forwarded to
    # its own process group, so the stubs of a server that died can be killed with it
    keeper = CrashOnly(lambda: subprocess.Popen(cmd, start_new_session=True), server, lambda: stopping, policy,
                       log=lambda line: print(line, flush=True))

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        if keeper.process is not None and keeper.process.poll() is None:
            signalled.add(keeper.process.pid)
            keeper.process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    front = GatewayProcess(gateway_cmd) if gateway_cmd else None
    watcher = None
    if front is not None:
        watcher = threading.Thread(target=keep_running, name="gateway", daemon=True,
                                   args=(front, server.is_ready, lambda: stopping, lambda line: print(line, flush=True)))
        watcher.start()
    try:
        given_up = keeper.run()
    finally:
        stopping = True  # also when the restarts ran out: the gateway goes with tritonserver
        if watcher is not None:
            watcher.join()
            code = front.stop()
            if code is not None:  # uvicorn ends by the SIGTERM it was sent once it has shut down
                print(f"the OpenAI gateway stopped ({describe_exit(code)})", flush=True)
    if given_up is not None:
        return given_up
    if keeper.process.pid not in signalled and keeper.process.poll() is None:  # started as the signal came
        keeper.process.terminate()
    code = keeper.process.wait()
    print(f"tritonserver exited with code {code}", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
