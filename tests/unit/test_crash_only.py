"""Crash-only serving's restart loop (modelrepo.triton.recovery.CrashOnly) on real child processes that
die the way tritonserver does (a signal, an exit code); the server's HTTP control is a stand-in here
(tests/integration/test_crash_recovery.py runs the loop on the real tritonserver)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from modelrepo.triton.recovery import CrashOnly, RestartPolicy, describe_exit, exit_status

FAST = dict(first_delay_s=0.01, max_delay_s=0.04, window_s=60.0)
# Counts its starts in argv[1]; dies with SIGFPE on the first `argv[2]` starts, then stays up.
CHILD = """
import os, signal, sys, time
path, deaths = sys.argv[1], int(sys.argv[2])
starts = int(open(path).read() or 0) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(starts))
if starts <= deaths:
    os.kill(os.getpid(), signal.SIGFPE)
time.sleep(60)
"""


class ReadyServer:
    """Every model READY, no stubs to heal."""

    def is_ready(self) -> bool:
        return True

    def model_states(self) -> dict[str, str]:
        return {}


def starter(counter: Path, deaths: int):
    return lambda: subprocess.Popen([sys.executable, "-c", CHILD, str(counter), str(deaths)], start_new_session=True)


def starts(counter: Path) -> int:
    return int(counter.read_text() or 0) if counter.exists() else 0


def test_a_server_that_dies_by_itself_is_restarted_and_each_exit_is_named(tmp_path):
    counter, lines = tmp_path / "starts", []
    keeper = CrashOnly(starter(counter, deaths=2), ReadyServer(), lambda: starts(counter) == 3,
                       RestartPolicy(max_restarts=5, **FAST), log=lines.append, interval_s=0.05)
    try:
        assert keeper.run() is None  # stopped on request, not given up
        assert keeper.restarts == 2 and keeper.process.poll() is None
    finally:
        keeper.process.kill()
    died = [line for line in lines if "died by itself" in line]
    assert died == ["tritonserver died by itself (killed by SIGFPE); restart 1 in 0.01 s (1 of at most 5 within 60 s)",
                    "tritonserver died by itself (killed by SIGFPE); restart 2 in 0.02 s (2 of at most 5 within 60 s)"]
    assert any(line.startswith("tritonserver serving again (restart 2): every model READY") for line in lines)


def test_a_crash_loop_backs_off_exponentially_then_gives_up_non_zero(tmp_path):
    counter, lines = tmp_path / "starts", []
    keeper = CrashOnly(starter(counter, deaths=100), ReadyServer(), lambda: False,
                       RestartPolicy(max_restarts=3, **FAST), log=lines.append, interval_s=0.05)
    assert keeper.run() == 128 + signal.SIGFPE
    assert keeper.restarts == 3 and starts(counter) == 4
    delays = [line.split(" in ")[1].split(" s ")[0] for line in lines if "restart" in line and " in " in line]
    assert delays == ["0.01", "0.02", "0.04"]  # doubling, capped at max_delay_s
    assert lines[-1] == "error: tritonserver died by itself (killed by SIGFPE) after 3 restarts within 60 s: giving up (crash loop)"


def test_no_restart_after_our_own_stop_or_with_restarts_off(tmp_path):
    counter, lines = tmp_path / "starts", []
    stopping = False
    keeper = CrashOnly(starter(counter, deaths=0), ReadyServer(), lambda: stopping, RestartPolicy(**FAST),
                       log=lines.append, interval_s=0.05)
    process = keeper.start()
    stopping = True
    process.terminate()
    assert keeper.run(process) is None and keeper.restarts == 0 and not lines
    off = CrashOnly(starter(tmp_path / "other", deaths=1), ReadyServer(), lambda: False,
                    RestartPolicy(max_restarts=0, **FAST), log=lines.append, interval_s=0.05)
    assert off.run() == 128 + signal.SIGFPE and off.restarts == 0


def test_exits_are_named_and_mapped_to_a_shell_status():
    assert describe_exit(-signal.SIGFPE) == "killed by SIGFPE"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
    assert (exit_status(-signal.SIGSEGV), exit_status(3), exit_status(0)) == (139, 3, 1)
