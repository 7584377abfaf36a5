"""How `modelrepo tune` picks between measured candidates (no server): throughput in a closed loop,
the lower p99 in an open loop, where every candidate that keeps up serves the offered rate."""

from __future__ import annotations

from modelrepo.perf.tune import Candidate, Load, Measurement, Objective, Target, confidence

ONE, TWO = Candidate(1, 1, 0), Candidate(2, 4, 0)


def run(throughput: float, p99_ms: float) -> Measurement:
    return Measurement("decide", None, 1, throughput, p99_ms / 2, p99_ms, 0.0, 0.0, "")


def test_a_closed_loop_scores_throughput_and_an_open_loop_the_lower_p99():
    closed, open_loop = Objective.for_load(Load(concurrency=8)), Objective.for_load(Load(request_rate=20))
    fast_but_slow_tail, steady = run(60, 200), run(20, 30)
    assert closed.score(fast_but_slow_tail) > closed.score(steady)
    assert open_loop.score(steady) > open_loop.score(fast_but_slow_tail)


def test_only_a_close_runner_up_is_worth_measuring_again():
    closed, open_loop = Objective(open_loop=False), Objective(open_loop=True)
    assert closed.close(80, 100) and not closed.close(70, 100)  # within 25 % of the leader's throughput
    assert open_loop.close(-30, -25) and not open_loop.close(-40, -25)  # p99 within 25 % of the leader's


def test_confidence_compares_the_winners_worst_run_with_the_runner_ups_best():
    open_loop, at_20 = Objective(open_loop=True), Target(250, request_rate=20)
    assert confidence({ONE: [run(20, 25), run(20, 26)], TWO: [run(20, 40), run(20, 41)]}, ONE, at_20, open_loop).startswith("high")
    assert confidence({ONE: [run(20, 25), run(20, 36)], TWO: [run(20, 30)]}, ONE, at_20, open_loop).startswith("low: within noise")
    assert confidence({ONE: [run(50, 90)], TWO: [run(49, 300)]}, ONE, Target(250)) == (
        "high: the runner-up (2 inst, batch 4, delay 0 us) missed in a repeat (over budget)")
    assert confidence({ONE: [run(50, 90), run(51, 260)]}, ONE, Target(250)) == "low: the winner missed in a repeat (over budget)"
    assert confidence({ONE: [run(20, 25), run(17, 24)], TWO: [run(20, 30)]}, ONE, at_20, open_loop) == (
        "low: the winner missed in a repeat (fell behind: 17.0 of 20/s)")


def test_an_open_loop_measurement_that_served_less_than_the_offered_rate_does_not_meet_the_target():
    # perf_analyzer's p99 is of the requests it managed to send: short of the rate, it was not taken at the load
    at_200 = Target(250, request_rate=200)
    assert at_200.miss(148.9, 45.6) == "fell behind: 148.9 of 200/s"
    assert at_200.miss(193.3, 54.0) is None  # within KEEP_UP (0.95) of the rate: measurement noise
    assert at_200.miss(199.0, 251.0) == "over budget"
    assert Target(250).miss(3.0, 45.6) is None  # a closed loop serves what it serves; throughput is the score
    assert not at_200.met_by(run(148.9, 45.6)) and at_200.met_by(run(195.0, 59.4))
    assert at_200.verdict(148.9, 45.6) == "no: fell behind: 148.9 of 200/s" and at_200.verdict(195.0, 59.4) == "yes"
    assert Target.of(250, Load(request_rate=200)) == at_200 and Target.of(250, Load(concurrency=8)) == Target(250)


def test_the_curve_config_drops_the_batcher_stall_triggers_and_candidates_keep_the_queue_guards():
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.tune import with_knobs
    from modelrepo.triton.model_config import read_config

    shipped = read_config(MODEL_REPOSITORY / "minilm_encoder")
    assert shipped.dynamic_batching.priority_levels and shipped.dynamic_batching.HasField("default_queue_policy")
    neutral = with_knobs(shipped, None, 1).dynamic_batching
    assert not neutral.priority_levels and not neutral.default_priority_level
    assert not neutral.HasField("default_queue_policy") and not neutral.priority_queue_policy
    assert not neutral.preferred_batch_size and neutral.max_queue_delay_microseconds == 0
    tuned = with_knobs(shipped, TWO, 2)
    assert tuned.dynamic_batching.default_queue_policy == shipped.dynamic_batching.default_queue_policy
    assert tuned.dynamic_batching.priority_levels == shipped.dynamic_batching.priority_levels
    assert list(tuned.dynamic_batching.preferred_batch_size) == [4] and tuned.instance_group[0].count == 2


def test_tune_refuses_what_perf_analyzer_windows_cannot_measure_before_starting_a_server(capsys):
    import pytest

    from modelrepo.cli import main
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.tune_command import check_tunable

    with pytest.raises(ValueError, match="llm_bls is decoupled"):
        check_tunable(MODEL_REPOSITORY, "llm_bls")
    with pytest.raises(ValueError, match="llm_engine is decoupled"):  # an ensemble with a streaming step
        check_tunable(MODEL_REPOSITORY, "llm")
    check_tunable(MODEL_REPOSITORY, "text_embedding")  # an ensemble of request/response steps
    check_tunable(MODEL_REPOSITORY, "credit_default_onehop")
    assert main(["tune", "no_such_model", "--p99-ms", "50"]) == 2
    assert "no_such_model: no such model" in capsys.readouterr().err


def test_a_refusal_is_measured_once_more_and_a_second_one_counts_as_over_budget():
    from modelrepo.perf.analyzer import RequestsRefused
    from modelrepo.perf.tune import measured_or_refused

    figures, notes = {"p99_ms": 7.0}, []
    outcomes = iter([RequestsRefused("stall"), figures])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert measured_or_refused(flaky, notes.append) is figures
    assert notes == ["the server refused requests (queue policy timeout or size); measuring once more"]

    def always_refused():
        raise RequestsRefused("over")

    notes.clear()
    assert measured_or_refused(always_refused, notes.append) is None
    assert notes[-1].endswith("counted as over budget") and len(notes) == 2

    def broken():
        raise RuntimeError("perf_analyzer failed (99): no such model")

    import pytest

    with pytest.raises(RuntimeError, match="no such model"):  # any other failure is not a refusal
        measured_or_refused(broken, notes.append)


def test_the_curve_gathers_one_row_requests_only_where_a_step_batches_requests_of_their_own_lengths():
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.tune import CURVE_GATHER_US, curve_config, gathers_batches, with_knobs
    from modelrepo.triton.model_config import read_config

    tokenizer, encoder = (read_config(MODEL_REPOSITORY / name) for name in ("minilm_tokenizer", "minilm_encoder"))
    assert gathers_batches([tokenizer, encoder])  # the encoder's token inputs: allow_ragged_batch
    assert not gathers_batches([tokenizer]) and not gathers_batches([read_config(MODEL_REPOSITORY / "credit_default_fused")])
    assert curve_config(encoder, 1) == with_knobs(encoder, None, 1)  # one request: the neutral config
    gathering = curve_config(encoder, 4)
    assert list(gathering.dynamic_batching.preferred_batch_size) == [4]
    assert gathering.dynamic_batching.max_queue_delay_microseconds == CURVE_GATHER_US
    assert not gathering.dynamic_batching.priority_levels and not gathering.dynamic_batching.HasField("default_queue_policy")
    assert gathering.instance_group[0].count == 1
    assert list(curve_config(encoder, 10_000).dynamic_batching.preferred_batch_size) == [encoder.max_batch_size]


def test_an_open_loop_is_measured_async_so_perf_analyzer_never_waits_for_answers_before_sending():
    from modelrepo.perf.analyzer import load_args

    # sync with a request rate: 4 threads, at most 4 requests outstanding, then it sends late
    assert load_args(None, 230.0) == ["--request-rate-range", "230.0", "--async"]
    assert load_args(8, None) == ["--concurrency-range", "8"]  # closed loop: sync, one thread per client
