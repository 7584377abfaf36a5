"""`modelrepo tune` on a model whose latency curve is known: it must find the known optimum.

The synthetic model sleeps 20 ms + 2 ms per row for each batch (instances run truly in parallel).
At concurrency 8 under a 100 ms p99 budget the model-based search predicts, and perf_analyzer
confirms, that 2 instances each running batches of 4 give the most throughput (≈ 8 / 28 ms):
1 instance batching 8 takes 36 ms per round, 2 instances with batches of 2 need two rounds (48 ms).
"""

from __future__ import annotations

import csv
import secrets
from pathlib import Path

import pytest

from modelrepo.perf.tune import Load, LiveModels, Tuner, TuneResult
from modelrepo.perf.tune_command import run_tune
from modelrepo.perf.tune_search import service_ms
from modelrepo.triton.model_config import ModelConfig, format_config, model_config_pb2, read_config

pytestmark = pytest.mark.slow
SHIM = """from modelrepo.python_backends.synthetic_latency import SyntheticLatency
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(SyntheticLatency)
"""


def synthetic_repository(repository: Path, ragged: bool = False) -> Path:
    (repository / "synthetic" / "1").mkdir(parents=True)
    (repository / "synthetic" / "1" / "model.py").write_text(SHIM)
    config = ModelConfig(name="synthetic", backend="python", max_batch_size=8)
    config.input.add(name="INPUT", data_type=model_config_pb2.TYPE_FP32, dims=[1], allow_ragged_batch=ragged)
    config.output.add(name="OUTPUT", data_type=model_config_pb2.TYPE_FP32, dims=[1])
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    config.parameters["base_ms"].string_value = "20"
    config.parameters["per_row_ms"].string_value = "2"
    (repository / "synthetic" / "config.pbtxt").write_text("# synthetic model for the tuner test\n" + format_config(config))
    return repository


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    repository = synthetic_repository(tmp_path_factory.mktemp("tune") / "repository")
    report = repository.parent / "report"
    lines = []
    result = run_tune(repository, "synthetic", 100.0, Load(concurrency=8), apply=True, output=report,
                      instance_options=(1, 2), command="test", log=lines.append)
    return repository, report, result, lines


def test_the_curve_matches_the_known_latency(tuned):
    _, _, result, _ = tuned
    for rows, measured in result.curve.items():
        assert 20 + 2 * rows <= measured <= 20 + 2 * rows + 8, (rows, measured)  # plus transport overhead
    for point in (m for m in result.measurements if m.phase == "curve"):  # one request of b rows: a batch of b
        assert point.rows_per_batch == point.batch_rows and "--concurrency-range 1 " in point.command
    assert service_ms(result.curve, 3) == pytest.approx((result.curve[2] + result.curve[4]) / 2)


def test_it_finds_the_known_optimum_within_budget(tuned):
    _, _, result, _ = tuned
    assert result.winner is not None and result.winner.instances == 2
    assert next(p.batch for p in result.predictions if p.candidate == result.winner) == 4
    decided = [m for m in result.measurements if m.candidate == result.winner]
    assert len(decided) >= 2 and all(m.p99_ms <= 100 for m in decided)
    verified = {(m.candidate.instances, m.candidate.preferred_batch): m.throughput_per_s
                for m in result.measurements if m.phase == "verify"}
    assert (1, 8) in verified  # the best 1-instance config was shortlisted and measured ...
    assert min(m.throughput_per_s for m in decided) > verified[(1, 8)]  # ... and lost, as the curve says
    assert result.confidence.split(":")[0] in ("high", "low")


def test_report_has_every_measurement_plots_and_the_commands(tuned):
    _, report, result, _ = tuned
    with open(report / "measurements.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.measurements) and {r["phase"] for r in rows} >= {"baseline", "curve", "verify", "decide"}
    # Triton's statistics: every request is charged its batch's sleep (≥ 22 ms) as compute
    assert all(float(r["compute_ms"]) >= 20 for r in rows if r["phase"] != "curve")
    for plot in ("throughput_vs_p99.png", "latency_split.png"):
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (report / "summary.md").read_text()
    assert "Chosen: 2 inst" in summary
    assert "modelrepo perf-analyzer -m synthetic -i grpc -u localhost:8001 --input-data random --concurrency-range 8" in summary


def test_apply_writes_the_winner_through_the_protobuf_and_keeps_the_header(tuned):
    repository, _, result, lines = tuned
    text = (repository / "synthetic" / "config.pbtxt").read_text()
    assert text.startswith("# synthetic model for the tuner test\n")
    config = read_config(repository / "synthetic")
    assert config.instance_group[0].count == 2
    assert list(config.dynamic_batching.preferred_batch_size) == [result.winner.preferred_batch]
    assert config.dynamic_batching.max_queue_delay_microseconds == result.winner.queue_delay_us
    assert config.parameters["base_ms"].string_value == "20"  # everything else untouched
    assert any(line.startswith("--- a/synthetic/config.pbtxt") for line in "\n".join(lines).splitlines())
    remeasured = [line for line in lines if line.startswith("applied config re-measured")]
    assert len(remeasured) == 2 and all("(budget 100 ms)" in line for line in remeasured)


def test_a_model_batching_ragged_requests_is_measured_on_gathered_one_row_requests(tmp_path):
    """allow_ragged_batch: its batches keep each request's own shape (a text encoder splits them by length),
    so the curve sends b one-row requests at once and the batcher gathers them, instead of one request of
    b rows (which a tokenizer pads to its longest text). The known curve must come out the same."""
    import tritonclient.grpc as grpcclient

    from modelrepo.triton.admin import GRPC_ADMIN_HEADER
    from modelrepo.triton.server import TritonServer, free_ports

    repository = synthetic_repository(tmp_path / "repository", ragged=True)
    admin_key = secrets.token_urlsafe(16)
    with TritonServer(repository, *free_ports(3), admin_key=admin_key, load_models=("synthetic",),
                      log_path=tmp_path / "tritonserver.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        live = LiveModels(client, {GRPC_ADMIN_HEADER: admin_key})
        tuner = Tuner(server, live, "synthetic", 100.0, Load(concurrency=4), "random", tmp_path, admin_key,
                      (1,), progress=lambda line: None)
        result = TuneResult("synthetic", 100.0, tuner.load, tuner.tuned_models, tuner.bottleneck, {}, [])
        curve = tuner.measure_curve(result)
        client.close()
    assert tuner.curve_gathers and sorted(curve) == [1, 2, 4]
    for point in result.measurements:
        rows = point.batch_rows
        assert point.rows_per_batch == rows, point  # Triton's statistics: every executed batch held b rows
        assert f"--concurrency-range {rows} " in point.command and " -b " not in point.command
        # the batch's sleep, plus transport and the wait for the last of the b requests to arrive
        assert 20 + 2 * rows <= point.p50_ms <= 20 + 2 * rows + 12, point
        assert point.throughput_per_s == pytest.approx(rows * 1000 / point.p50_ms, rel=0.35)
