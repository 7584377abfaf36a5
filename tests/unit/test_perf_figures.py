"""The benchmarks' pure parts: median and range over repeated runs, streaming figures from a profile
export with tokens counted from the answers, and the served parallelism a baseline must match."""

from __future__ import annotations

import base64

import pytest

from modelrepo.perf.embedding_sessions import Parallelism
from modelrepo.perf.results import Spread, repeat, spread_of
from modelrepo.perf.studies.stream_figures import output_text, streamed_requests, streaming_figures, token_counter
from modelrepo.triton.model_config import ModelConfig, model_config_pb2


# --------------------------------------------------------------------------- median and range

def test_a_spread_is_the_median_and_the_range_of_every_run():
    spread = Spread.of([1.29, 0.83, 0.91])
    assert (spread.median, spread.low, spread.high) == (0.91, 0.83, 1.29)
    assert spread.runs == (1.29, 0.83, 0.91)
    assert spread.text() == "0.91 (0.83–1.29)"
    assert spread.text(0, 1000) == "910 (830–1290)"
    assert Spread.of([2.0, 4.0]).median == 3.0  # an even count: the mean of the middle two
    assert Spread.of([0.5]).text() == "0.50"  # one run: its value, no range pretended
    assert spread.as_dict() == {"median": 0.91, "low": 0.83, "high": 1.29, "runs": [1.29, 0.83, 0.91]}


def test_a_spread_needs_a_run():
    with pytest.raises(ValueError, match="at least one run"):
        Spread.of([])


def test_repeat_runs_each_measurement_once_in_order_and_keeps_every_result():
    calls = []
    lines = []
    results = repeat(3, lambda i: calls.append(i) or {"x": 10 * i}, log=lines.append)
    assert calls == [0, 1, 2] and results == [{"x": 0}, {"x": 10}, {"x": 20}]
    assert lines == ["run 1 of 3 done", "run 2 of 3 done", "run 3 of 3 done"]
    with pytest.raises(ValueError, match="runs: must be at least 1"):
        repeat(0, lambda i: i)


def test_spread_of_takes_each_key_across_runs():
    runs = [{"p99": 3.0, "rate": 10.0}, {"p99": 1.0, "rate": 30.0}, {"p99": 2.0, "rate": 20.0}]
    spreads = spread_of(runs, ["p99", "rate"])
    assert spreads["p99"] == Spread(2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert spreads["rate"].median == 20.0


# --------------------------------------------------------------------------- streaming figures

def request(sent: int, stamps: list[int], texts: list[str]) -> dict:
    return {"timestamp": sent, "response_timestamps": stamps, "response_outputs": [{"text_output": t} for t in texts]}


def test_requests_keep_the_responses_that_carried_text_and_their_answer():
    export = {"experiments": [{"requests": [
        # the stream's final response is empty: not a token's arrival
        request(0, [int(0.5e9), int(0.7e9), int(0.9e9), int(1.0e9)], ["Hello", " wor", "ld", ""]),
    ]}]}
    (only,) = streamed_requests(export)
    assert only.text == "Hello world"
    assert only.token_times_ns == [int(0.5e9), int(0.7e9), int(0.9e9)]


def test_an_export_without_outputs_is_refused_rather_than_guessed():
    export = {"experiments": [{"requests": [{"timestamp": 0, "response_timestamps": [1, 2]}]}]}
    with pytest.raises(ValueError, match="response_outputs"):
        streamed_requests(export)


def test_raw_bytes_outputs_are_decoded():
    assert output_text({"text_output": {"b64": base64.b64encode("héllo".encode()).decode()}}) == "héllo"
    assert output_text({"text_output": ["a", "b"]}) == "ab"
    assert output_text({}) == ""


def test_figures_count_tokens_from_the_answers_not_from_max_tokens():
    export = {"experiments": [{"requests": [
        request(0, [int(1e9), int(2e9), int(3e9), int(3e9)], ["one", " two", " three", ""]),
        request(int(1e9), [int(1.5e9), int(4e9)], ["four five", ""]),  # one chunk may hold several words
    ]}]}
    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer: one token per word
    figures = streaming_figures(streamed_requests(export), words)
    assert figures["requests"] == figures["answered"] == 2
    assert figures["output_tokens"] == 5 and figures["output_tokens_per_request"] == 2.5
    assert figures["span_s"] == 3.0  # first send (0 s) to last token (3 s)
    assert figures["output_tokens_per_s"] == pytest.approx(5 / 3)
    assert figures["ttft_p50_s"] == pytest.approx(0.75)  # 1.0 s and 0.5 s
    assert figures["tpot_mean_s"] == pytest.approx(1.0)  # only the first has later tokens: 2 s over 2 gaps


def test_a_run_where_no_request_got_a_token_is_an_error():
    export = {"experiments": [{"requests": [request(0, [5], [""])]}]}
    with pytest.raises(ValueError, match="no request received a token"):
        streaming_figures(streamed_requests(export), len)


def test_the_token_counter_uses_the_models_tokenizer_without_special_tokens(llm_tokenizer):
    ids = llm_tokenizer.encode("The capital of France is Paris.", add_special_tokens=False)
    text = llm_tokenizer.decode(ids, skip_special_tokens=True)
    assert token_counter(llm_tokenizer)(text) == len(ids)
    assert token_counter(llm_tokenizer)("") == 0


# --------------------------------------------------------------------------- served parallelism

def encoder_config(instances: list[int], threads: str | None) -> ModelConfig:
    config = ModelConfig(name="minilm_encoder", backend="python")
    for count in instances:
        config.instance_group.add(count=count, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    if threads is not None:
        config.parameters["intra_op_threads"].string_value = threads
    return config


def test_the_baseline_gets_the_served_instances_and_threads():
    served = Parallelism.of_config(encoder_config([2], "1"))
    assert (served.sessions, served.threads_per_session, served.total_threads) == (2, 1, 2)
    assert Parallelism.of_config(encoder_config([1, 2], "3")).total_threads == 9
    assert Parallelism.of_config(encoder_config([2], None)).threads_per_session == 1  # the runner's default


def test_a_config_without_counts_or_with_a_bad_thread_count_is_named():
    with pytest.raises(ValueError, match="intra_op_threads: must be a positive integer, got 'two'"):
        Parallelism.of_config(encoder_config([2], "two"))
    with pytest.raises(ValueError, match="instance_group: minilm_encoder's config states no instance count"):
        Parallelism.of_config(encoder_config([], "1"))


def test_genai_perf_figures_are_the_median_and_range_of_each_runs_statistic():
    from modelrepo.perf.studies.genai_perf_check import spreads

    runs = [
        {"time_to_first_token": {"unit": "ms", "avg": 900.0, "p50": 880.0, "p99": 1300.0}, "output_token_throughput": {"avg": 20.0}},
        {"time_to_first_token": {"unit": "ms", "avg": 950.0, "p50": 900.0, "p99": 1100.0}, "output_token_throughput": {"avg": 24.0}},
        {"time_to_first_token": {"unit": "ms", "avg": 1000.0, "p50": 990.0, "p99": 1200.0}},
    ]
    figures = spreads(runs)
    assert figures["time_to_first_token"]["p99"] == Spread(1200.0, 1100.0, 1300.0, (1300.0, 1100.0, 1200.0))
    assert "output_token_throughput" not in figures  # missing from one run: no median pretended


def test_cpu_per_request_divides_each_group_and_counts_what_no_process_used_as_idle(monkeypatch):
    from modelrepo.perf.studies import short_text_hops

    monkeypatch.setattr(short_text_hops.os, "cpu_count", lambda: 2)
    before = {"client": 1.0, "tritonserver": 2.0, "tokenizer_stubs": 0.5, "encoder_stubs": 3.0, "wall": 100.0}
    # 10 requests over 1 s of wall on 2 cores: 200 ms of core time per request, 155 of it used
    after = {"client": 1.1, "tritonserver": 2.2, "tokenizer_stubs": 0.55, "encoder_stubs": 4.2, "wall": 101.0}
    figures = short_text_hops.cpu_per_request(before, after, requests=10)
    assert figures == pytest.approx({"cpu_client": 10.0, "cpu_tritonserver": 20.0, "cpu_tokenizer_stubs": 5.0,
                                     "cpu_encoder_stubs": 120.0, "cpu_idle": 45.0})


def test_a_stub_profile_puts_each_sample_in_one_bucket_by_its_innermost_frame(tmp_path):
    """A metric call by its line; then onnxruntime anywhere on the stack; then our handler; the rest is the adapter."""
    from modelrepo.perf.studies.stub_profile import profile_files

    handler = tmp_path / "python_backends" / "handler.py"
    handler.parent.mkdir()
    handler.write_text("def f(gauge, x):\n    gauge.set(x)\n    return x * 2\n")
    runtime = tmp_path / "site-packages" / "onnxruntime" / "session.py"
    runtime.parent.mkdir(parents=True)
    runtime.write_text("def run(sess):\n    return sess.run()\n")
    adapter = tmp_path / "python_backends" / "triton_adapter.py"
    adapter.write_text("def execute(handler):\n    return handler.f()\n")
    outer = f"execute ({adapter}:2)"
    raw = tmp_path / "stub.txt"
    raw.write_text("\n".join([
        " 50",  # no Python frame: the stub waits for a batch
        f"{outer};f ({handler}:2) 30",  # gauge.set(...): a metric call
        f"{outer};f ({handler}:3) 10",
        f"{outer};f ({handler}:3);run ({runtime}:2) 6",
        f"{outer} 4",
    ]) + "\n")
    buckets, lines = profile_files([raw])
    assert buckets == {"idle": 50, "metric calls": 30, "handler": 10, "onnxruntime": 6, "adapter": 4}
    assert lines[f"{handler}:2"] == 30 and lines[f"{runtime}:2"] == 6


def test_a_stub_profile_counts_a_background_thread_only_while_it_works(tmp_path):
    """The metrics-export thread parked in threading's wait is no sample of the stub; exporting, it is one."""
    from modelrepo.perf.studies.stub_profile import profile_files

    threading_py = tmp_path / "threading.py"
    threading_py.write_text("def _bootstrap(self):\n    self.run()\n    waiter.acquire(True, timeout)\n")
    exporter = tmp_path / "python_backends" / "exported_metrics.py"
    exporter.parent.mkdir()
    exporter.write_text("def _run(self):\n    send(value)\n")
    raw = tmp_path / "stub.txt"
    raw.write_text("\n".join([
        " 40",  # the main thread waits for a batch
        f"Thread._bootstrap ({threading_py}:2);_run ({exporter}:1);wait ({threading_py}:3) 900",  # parked
        f"Thread._bootstrap ({threading_py}:2);_run ({exporter}:2) 5",  # sending what changed
    ]) + "\n")
    buckets, _ = profile_files([raw])
    assert buckets == {"idle": 40, "background threads": 5}


def test_a_stub_profile_samples_an_ensembles_python_steps():
    from modelrepo.paths import MODEL_REPOSITORY
    from modelrepo.perf.studies.stub_profile import python_steps

    assert python_steps(MODEL_REPOSITORY, "text_embedding") == ["minilm_tokenizer", "minilm_encoder"]
    assert python_steps(MODEL_REPOSITORY, "credit_default_onehop") == ["credit_default_onehop"]


def test_the_overload_run_reads_tritons_failure_counter_under_its_exposed_name():
    from modelrepo.perf.overload import failure_deltas

    key = (("model", "minilm_encoder"), ("reason", "REJECTED"), ("version", "1"))
    before = {"nv_inference_request_failure": {key: 2.0}}
    after = {"nv_inference_request_failure": {key: 7.0}}
    assert failure_deltas(before, after) == {"minilm_encoder/REJECTED": 5.0}
    assert failure_deltas(before, before) == {}


def test_int8_over_fp32_is_taken_within_each_round_then_spread_over_rounds():
    from modelrepo.perf.studies.int8_vs_fp32 import int8_over_fp32

    rates = {(1, "fp32"): 10.0, (1, "int8"): 8.0, (2, "fp32"): 20.0, (2, "int8"): 18.0, (3, "fp32"): 10.0, (3, "int8"): 7.0}
    runs = [{"round": number, "precision": precision, "concurrency": 1, "throughput_infer_per_s": rate}
            for (number, precision), rate in rates.items()]
    ratio = int8_over_fp32(runs)[1]
    assert ratio.runs == pytest.approx((0.8, 0.9, 0.7)) and ratio.median == pytest.approx(0.8)  # never the best round's


def test_the_cpu_is_described_from_its_model_name_and_flags(tmp_path):
    from modelrepo.cpu_features import describe_cpu, describe_int8, int8_dot_products

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert int8_dot_products(cpuinfo) == ["avx512_vnni"]
    assert describe_int8(cpuinfo) == "CPU int8 dot-product instructions: avx512_vnni"
    assert describe_cpu(cpuinfo) == "AMD EPYC, avx512f, avx512_vnni"
    cpuinfo.write_text("model name\t: Intel Xeon\nflags\t\t: fpu sse avx avx2 fma\n")
    assert describe_int8(cpuinfo) == "CPU without VNNI or AMX int8"
    assert describe_cpu(cpuinfo) == "Intel Xeon, avx2"
    assert describe_cpu(tmp_path / "missing") == "CPU model unknown" and int8_dot_products(tmp_path / "missing") == []
