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
the image's entrypoint alike.

Crash-only serving: tritonserver itself can die from one request (2.51: `classification` asked on a
BYTES output ends it with SIGFPE). `CrashOnly` runs `supervise` and, when tritonserver exits by
itself (not on our SIGTERM), logs the exit (signal name or exit code), cleans up its process group
and starts it again on the same repository (the built artifacts are reused), with exponential
backoff; after `max_restarts` restarts within `window_s` it gives up and returns a non-zero exit
status (a crash loop is for a person, or Kubernetes' CrashLoopBackOff, to see).
Standard library only, Python 3.10-compatible (the image runs it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
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


def describe_exit(returncode: int) -> str:
    """'killed by SIGFPE' for a signal (Popen's negative return codes), else 'exit code N'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def exit_status(returncode: int) -> int:
    """What a shell reports for it: 128 + N for signal N, never 0 (we only give up on failures)."""
    return 128 - returncode if returncode < 0 else returncode or 1


def kill_process_group(pid: int) -> None:
    """SIGKILL what is left of tritonserver's process group (its Python stubs)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts (first_delay_s, doubling, at most max_delay_s); after
    `max_restarts` restarts within `window_s` the next death is final."""

    max_restarts: int = 5
    window_s: float = 300.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_s(self, recent_restarts: int) -> float:
        return min(self.first_delay_s * 2**recent_restarts, self.max_delay_s)


class CrashOnly:
    """tritonserver kept serving: stubs healed (`supervise`), the server restarted when it dies.

    `start()` launches tritonserver in its own process group and returns it. `run()` returns None
    once `stopping()` is true (stopping the live `self.process` is then the caller's job), or the exit
    status to exit with when it gives up. `restarts` counts the restarts so far.
    """

    def __init__(self, start: Callable[[], subprocess.Popen], server: ServerControl, stopping: Callable[[], bool],
                 policy: RestartPolicy = RestartPolicy(), log=print, interval_s: float = 0.5):
        self.start, self.server, self.stopping = start, server, stopping
        self.policy, self.log, self.interval_s = policy, log, interval_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def run(self, process: subprocess.Popen | None = None) -> int | None:
        self.process = process or self.start()
        recent: deque[float] = deque()  # when the restarts within the window happened
        while True:
            supervise(self.process, self.server, self.stopping, log=self.log, interval_s=self.interval_s)
            if self.stopping():
                return None
            died_at = time.monotonic()
            code = self.process.wait()
            kill_process_group(self.process.pid)
            while recent and died_at - recent[0] > self.policy.window_s:
                recent.popleft()
            if len(recent) >= self.policy.max_restarts:
                self.log(f"error: tritonserver died by itself ({describe_exit(code)}) after {len(recent)} restarts "
                         f"within {self.policy.window_s:g} s: giving up (crash loop)")
                return exit_status(code)
            delay = self.policy.delay_s(len(recent))
            self.restarts += 1
            self.log(f"tritonserver died by itself ({describe_exit(code)}); restart {self.restarts} in {delay:g} s "
                     f"({len(recent) + 1} of at most {self.policy.max_restarts} within {self.policy.window_s:g} s)")
            if self._sleep(delay):
                return None
            recent.append(time.monotonic())
            self.process = self.start()
            self._report_ready(died_at)

    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless asked to stop; True if asked."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping():
                return True
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.stopping()

    def _report_ready(self, died_at: float) -> None:
        """Log once every model is READY again (strict readiness), or return early if it dies or we stop."""
        while self.process.poll() is None and not self.stopping():
            if self.server.is_ready():
                self.log(f"tritonserver serving again (restart {self.restarts}): every model READY "
                         f"{time.monotonic() - died_at:.1f} s after it died")
                return
            time.sleep(0.2)
