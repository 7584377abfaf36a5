"""Crash-only serving on the real tritonserver: killed (SIGKILL), `modelrepo serve` starts it again on
the same repository, every model READY, the same answers; on SIGTERM it stops and does not restart.

(The requests that crash it, classification on a BYTES output over HTTP and gRPC and a huge shape on
a numeric input, are in the hostile corpus: tests/integration/test_input_corpus.py.)
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.crash_only import crash_and_recover

pytestmark = pytest.mark.slow


def test_a_killed_tritonserver_is_restarted_and_serves_the_same_answers(crash_only_server):
    died = crash_and_recover(crash_only_server, lambda: os.kill(crash_only_server.tritonserver_pid(), signal.SIGKILL))
    assert "(killed by SIGKILL); restart" in died


def test_sigterm_stops_serve_without_a_restart(tmp_path):
    from modelrepo.perf.serve_process import READY_BANNER, ServeProcess, linked_repository

    serve = ServeProcess(linked_repository(tmp_path / "repository", ("text_embedding", "minilm_tokenizer", "minilm_encoder")))
    try:
        serve.wait_for(READY_BANNER)
        assert serve.stop() == 0
        assert not any("died by itself" in line for line in serve.lines), serve.output()
        assert "tritonserver stopped" in serve.output()
    finally:
        serve.stop()
