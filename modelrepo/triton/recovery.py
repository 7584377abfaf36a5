"""Dead Python-backend stubs: detect them and reload their model.

What Triton 2.51 does when a model's stub process dies (SIGKILL, OOM kill): nothing. Every request
to that model (or an ensemble through it) waits ~1 s for the backend's stub health check, one at a
time, and fails with HTTP 500 / gRPC INTERNAL "Stub process '<model>_0_0' is not healthy." (requests
queued behind them may hit the model's queue timeout instead); the stub is not restarted; /v2/health/ready (even with
--strict-readiness), the model's ready endpoint and the repository index all keep saying READY; the
dead stub stays a zombie (Triton does not reap it). So no probe notices, and nothing heals it.

The answer here: the stubs are children of tritonserver whose argv names their model.py
(`<repository>/<model>/<version>/model.py`). `StubWatch` remembers every live stub and reports those
that died while their model is still READY; `TritonServer.reload_model` then reloads the model with its
current config plus a changed marker parameter (an unchanged `load` is a no-op), which starts fresh
stubs. The dead instance's unload never completes, so the next SIGTERM shutdown waits the full exit
timeout (15 s) before tritonserver gives up. `supervise` runs that loop for `modelrepo serve` and for
the image's entrypoint alike. Standard library only, Python 3.10-compatible (the image runs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelrepo.triton.control import ControlError, ServerControl

STUB_BINARY = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    version: str
    instance: str  # e.g. credit_preprocess_0_0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def child_pids(parent_pid: int, zombies: bool = True) -> list[int]:
    """The processes whose parent is `parent_pid` (zombies too unless `zombies` is False)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == parent_pid and (zombies or stat[0] != "Z"):
                children.append(int(entry))
    return children


def stub_processes(server_pid: int) -> list[Stub]:
    """The live (not zombie) Python-backend stubs of one tritonserver."""
    stubs = []
    for pid in child_pids(server_pid, zombies=False):
        try:
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not argv or not argv[0].endswith(STUB_BINARY) or len(argv) < 9:
            continue
        model_py = Path(argv[1])  # <repository>/<model>/<version>/model.py
        stubs.append(Stub(pid, model_py.parent.parent.name, model_py.parent.name, argv[8]))
    return stubs


class StubWatch:
    """Call `poll()` every second or so: it returns the stubs that died since the last call.

    A stub Triton stops on purpose (unload, reload) is reaped by Triton and simply disappears; one that
    was killed stays a zombie, which is what counts as dead here.
    """

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.known: dict[int, Stub] = {}
        self.zombies: set[int] = set()

    def poll(self) -> list[Stub]:
        """Stubs found killed: a zombie in two polls in a row (a stub Triton stops on purpose is
        reaped by Triton and just disappears)."""
        for stub in stub_processes(self.server_pid):
            self.known[stub.pid] = stub
        dead = []
        for pid, stub in list(self.known.items()):
            stat = _stat(pid)
            if stat is not None and stat[0] not in ("Z", "X"):
                continue  # alive
            if stat is not None and pid not in self.zombies:
                self.zombies.add(pid)  # look again next time
                continue
            if stat is not None:
                dead.append(stub)
            del self.known[pid]  # killed, or reaped by Triton (stopped on purpose)
            self.zombies.discard(pid)
        return dead


def heal(server: ServerControl, watch: StubWatch, log=print) -> list[str]:
    """One round: reload every model whose stub was killed while the index still calls it READY
    (not unloaded on purpose). Returns the models reloaded."""
    dead = watch.poll()
    if not dead:
        return []
    states = server.model_states()
    models = sorted({stub.model for stub in dead if states.get(stub.model) == "READY"})
    for model in models:
        log(f"model '{model}': its Python stub process died and Triton does not restart it; reloading ...")
        seconds = server.reload_model(model)
        log(f"model '{model}' reloaded in {seconds:.1f} s")
    return models


def supervise(process: subprocess.Popen, server: ServerControl, stopping: Callable[[], bool], log=print,
              interval_s: float = 0.5) -> None:
    """Until tritonserver exits or `stopping()` is true: reload every model whose stub was killed."""
    watch = StubWatch(process.pid)
    while not stopping() and process.poll() is None:
        time.sleep(interval_s)
        try:
            heal(server, watch, log=log)
        except (OSError, ControlError) as err:  # keep watching: the next death may still be healed
            print(f"error: could not reload a model whose stub died: {err}", file=sys.stderr, flush=True)
