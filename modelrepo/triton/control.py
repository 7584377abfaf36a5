"""Health and admin calls to a running tritonserver over HTTP: readiness, the repository index, reloads.

Shared by `TritonServer` (which starts the server) and the image's entrypoint (which supervises one it
started with the same flags). Standard library only, Python 3.10-compatible.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from modelrepo.triton.flags import ADMIN_HEADER


class ControlError(RuntimeError):
    """The server answered an admin call with an error; the message carries its answer."""


class ServerControl:
    """Mixin: needs `http_url` ("host:port") and `admin_key` (None: restricted APIs are refused)."""

    http_url: str
    admin_key: str | None

    def _http(self, method: str, path: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://{self.http_url}{path}", data=body, method=method)
        if self.admin_key:
            request.add_header(ADMIN_HEADER, self.admin_key)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def is_ready(self) -> bool:
        try:
            return self._http("GET", "/v2/health/ready")[0] == 200
        except OSError:
            return False

    def model_index(self) -> list[dict]:
        """The repository index: one entry per model version (name, version, state, reason)."""
        status, body = self._http("POST", "/v2/repository/index", b"{}")
        if status != 200:
            raise ControlError(f"repository index answered HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def model_states(self) -> dict[str, str]:
        """name -> state from the repository index (a restricted API: needs the admin key)."""
        return {entry["name"]: entry.get("state", "") for entry in self.model_index()}

    def load_model(self, name: str, timeout_s: float = 300.0) -> None:
        """(Re)load `name` from the repository as it is on disk (its config.pbtxt and version folders)."""
        status, body = self._http("POST", f"/v2/repository/models/{name}/load", b"{}", timeout=timeout_s)
        if status != 200:
            raise ControlError(f"loading '{name}' answered HTTP {status}: {body[:300].decode(errors='replace')}")

    def reload_model(self, name: str, timeout_s: float = 300.0) -> float:
        """Reload `name` with fresh instances (new stub processes); returns the seconds it took.

        Triton treats a load with nothing changed as a no-op, so the current config is sent back as an
        override with a marker parameter changed. Traffic keeps flowing: Triton swaps to the new
        instances once they are ready (the old ones are unloaded after).
        """
        status, body = self._http("GET", f"/v2/models/{name}/config")
        if status != 200:
            raise ControlError(f"config of '{name}' answered HTTP {status}: {body[:200]!r}")
        config = json.loads(body)
        config.setdefault("parameters", {})["modelrepo_reloaded_at"] = {"string_value": f"{time.time():.6f}"}
        started = time.monotonic()
        payload = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
        status, body = self._http("POST", f"/v2/repository/models/{name}/load", payload, timeout=timeout_s)
        if status != 200:
            raise ControlError(f"reloading '{name}' answered HTTP {status}: {body[:300]!r}")
        return time.monotonic() - started


class RunningServer(ServerControl):
    """A server started elsewhere (the image's entrypoint starts tritonserver itself)."""

    def __init__(self, http_url: str, admin_key: str | None):
        self.http_url, self.admin_key = http_url, admin_key
