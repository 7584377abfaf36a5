"""Crash-only serving on the real tritonserver: killed (SIGKILL), `modelrepo serve` starts it again on
the same repository, every model READY, the same answers; on SIGTERM it stops and does not restart.

(The crashing requests themselves, classification on a BYTES output over HTTP and gRPC, are in the
hostile corpus: tests/integration/test_input_corpus.py.) The timeout is generous on purpose: the
recovery time is measured by perf/chaos.py (perf/results/crash_recovery.md), not asserted here.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from modelrepo.perf.serve_process import TEXT_PIPELINES

pytestmark = pytest.mark.slow
RECOVERY_TIMEOUT_S = 120
REVIEW = "The tea was wonderful and arrived quickly; I will buy it again."


def sentiment(serve) -> tuple[bytes, np.ndarray]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(serve.http_url)
    text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[REVIEW.encode()]], dtype=object))
    result = client.infer("review_sentiment", [text])
    return result.as_numpy("LABEL")[0, 0], result.as_numpy("PROBABILITIES")[0]


def crash_and_recover(serve, crash) -> str:
    """Run `crash()`, then wait until `modelrepo serve` reports the death and the restart; returns the
    line naming the exit. Asserts every model is READY again and the answer is unchanged."""
    before = sentiment(serve)
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
    label, probabilities = sentiment(serve)
    assert label == before[0]
    np.testing.assert_allclose(probabilities, before[1], rtol=0, atol=1e-6)
    return died


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
