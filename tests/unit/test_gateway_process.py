"""keep_running: the image's launcher starts the gateway once Triton is ready and again if it exits."""

from __future__ import annotations

import sys
import threading

from modelrepo.gateway.process import GatewayProcess, keep_running
from modelrepo.triton.recovery import RestartPolicy

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
EXITS = [sys.executable, "-c", "raise SystemExit(3)"]


def run_until(gateway: GatewayProcess, ready: threading.Event, done, backoff: RestartPolicy = RestartPolicy()) -> list[str]:
    """keep_running in a thread until `done(lines)` holds; the lines it logged."""
    lines: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=keep_running, args=(gateway, ready.is_set, stop.is_set, lines.append),
                               kwargs={"interval_s": 0.01, "backoff": backoff})
    watcher.start()
    try:
        while not done(lines):
            assert watcher.is_alive()
            stop.wait(0.01)
    finally:
        stop.set()
        watcher.join()
    return lines


def test_the_gateway_starts_only_once_triton_is_ready():
    gateway, ready = GatewayProcess(SLEEPER), threading.Event()
    checks = []
    lines = run_until(gateway, ready, lambda lines: checks.append(gateway.process) or len(checks) > 20)
    assert gateway.process is None and lines == []  # never ready: never started
    ready.set()
    lines = run_until(gateway, ready, lambda lines: bool(lines))
    try:
        assert gateway.process.poll() is None
        assert lines == [f"the OpenAI gateway started (pid {gateway.process.pid})"]
    finally:
        assert gateway.stop() is not None
    assert gateway.process.poll() is not None


def test_a_gateway_that_exits_by_itself_is_started_again():
    gateway, ready = GatewayProcess(EXITS), threading.Event()
    ready.set()
    lines = run_until(gateway, ready, lambda lines: len(lines) >= 3)
    gateway.stop()
    assert lines[1] == "the OpenAI gateway exited by itself with code 3; starting it again in 1 s (restart 1)", lines
    assert lines[2].startswith("the OpenAI gateway started (pid "), lines


def test_a_crash_looping_gateway_is_restarted_with_a_growing_delay_and_never_given_up():
    gateway, ready = GatewayProcess(EXITS), threading.Event()
    ready.set()
    backoff = RestartPolicy(max_restarts=1, first_delay_s=0.02, max_delay_s=0.08)  # max_restarts: not a limit here
    lines = run_until(gateway, ready, lambda lines: len(lines) >= 10, backoff)
    gateway.stop()
    exits = [line for line in lines if "exited by itself" in line]
    assert [line.split(" in ")[1] for line in exits] == [
        "0.02 s (restart 1)", "0.04 s (restart 2)", "0.08 s (restart 3)", "0.08 s (restart 4)", "0.08 s (restart 5)"]
