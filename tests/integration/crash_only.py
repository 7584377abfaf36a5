"""Crash a `modelrepo serve` (modelrepo.perf.serve_process.ServeProcess) on purpose and check it serves
again: every model READY, review_sentiment answering exactly as before. Shared by the crash-recovery
tests and the hostile corpus's crashers."""

from __future__ import annotations

from collections.abc import Callable

from modelrepo.perf.chaos import review_answer
from modelrepo.perf.serve_process import TEXT_PIPELINES, ServeProcess

# Generous on purpose: a test must not depend on the machine's speed. The recovery time is measured
# by `python -m modelrepo.perf.chaos --crash-recovery 5` (perf/results/crash_recovery.md).
RECOVERY_TIMEOUT_S = 120


def crash_and_recover(serve: ServeProcess, crash: Callable[[], object]) -> str:
    """Run `crash()`, wait until `modelrepo serve` logs the death and serves again; returns the line
    naming the exit."""
    before = review_answer(serve.http_url)
    assert before is not None
    deaths = sum("died by itself" in line for line in serve.lines)
    old_pid = serve.tritonserver_pid()
    crash()
    died = serve.wait_for("died by itself", deaths + 1, timeout_s=RECOVERY_TIMEOUT_S)
    serve.wait_for("tritonserver serving again", deaths + 1, timeout_s=RECOVERY_TIMEOUT_S)
    assert serve.process.poll() is None
    assert serve.tritonserver_pid() != old_pid
    assert serve.control.is_ready()
    states = serve.control.model_states()
    assert {model: states.get(model) for model in TEXT_PIPELINES} == {model: "READY" for model in TEXT_PIPELINES}
    assert review_answer(serve.http_url) == before
    return died
