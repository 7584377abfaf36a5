"""k8s/monitoring/prometheus-rules.yaml on a real Prometheus scraping the real server.

Debian's prometheus runs on loopback (scrape and rule evaluation every second) with the production
rule file as tests/deploy extracts it, unchanged, plus one test-only rule file that adds a latency
budget for the test's own model (the production file says budgets are added that way). Then:

1. normal traffic (training-like credit rows, short texts, semantic-cache hits, fast requests to the
   test's model): the recording rules produce values, every rule evaluates without error, and none
   of the alerts whose inputs the test controls is active;
2. drifted and slow traffic: credit rows with balances x2.5 (credit_preprocess's PSI gauge), slow
   requests to the test's model, and LLM requests kept waiting for a batch slot: the drift, the
   p99-over-budget and the TTFT alerts go pending (their `for:` durations are minutes; pending is the
   state Prometheus enters the first evaluation the expression is true).

Nothing here depends on how fast the machine is. Latency comes from what the test sets:
- the p99 alert: `synthetic_latency`, python_backends/synthetic_latency.py loaded into the running
  server through the repository API (a sleep of 100 ms per row: 1-row requests take a third of its
  0.3 s budget, 8-row requests over twice it), its metrics Triton's own like any model's;
- the TTFT alert: llm_engine's slots are held by streams that run until the test cancels them, so
  requests sent meanwhile wait for a slot for at least HOLD_S (set here, over the 1 s threshold)
  before their first token, whatever the machine's speed.
The real models' own latency is the machine's and is not asserted on (a slow machine may put one
over its budget: its alert is not among those the quiet phase checks).

Every raw series the rules and the dashboard read is also checked against the server's real scrape.
The credit drift window (1,000 rows per credit_preprocess) is refilled with training-like rows at the
end, so later tests in the session start from calm PSI values.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml
from google.protobuf import json_format

from modelrepo.build.credit import dataset, request_arrays
from modelrepo.tools import system_tool
from modelrepo.triton.admin import ADMIN_HEADER
from modelrepo.triton.llm_client import generate, grpc_stream, llm_inputs
from modelrepo.triton.model_config import ModelConfig, model_config_pb2
from modelrepo.triton.server import free_ports
from tests.deploy.test_monitoring_assets import (
    LATENCY_BUDGETS_S,
    all_rules,
    exported_series_names,
    exposition_series_names,
    gateway_series_names,
    series_read_by_monitoring,
    write_rule_file,
)
from tests.integration.triton_calls import Caller, input_tensors, texts

JOB = "modelrepo"  # the ServiceMonitor's job name in k8s (the Service's), matched by TritonTargetDown
WATCHED = ("CreditFeatureDrift", "ModelLatencyP99OverBudget", "LLMTimeToFirstTokenHigh")
# Created by the backend at its first event; no traffic here causes one (test_credit_default does).
CREATED_ON_FIRST_EVENT = {"credit_rejected_inputs_total"}
ADDED_MODELS_ONLY = {"modelrepo_model_psi"}  # exported once a model is put in with `modelrepo add`
LLM_SLOTS = 8  # llm_engine's max_active_sequences
# The test's model with a latency it sets: 100 ms per row of a batch (python_backends/synthetic_latency.py).
SYNTHETIC = "synthetic_latency"
SYNTHETIC_BUDGET_S = 0.3  # text_embedding's: a budget as production states them
MS_PER_ROW = 100
FAST_ROWS, SLOW_ROWS = 1, 8  # 0.1 s (a third of the budget) and 0.8 s (over twice it: both severities)
SYNTHETIC_SHIM = """from modelrepo.python_backends.synthetic_latency import SyntheticLatency
from modelrepo.python_backends.triton_adapter import triton_model

TritonPythonModel = triton_model(SyntheticLatency)
"""
# LLM: streams that hold every slot until released; they could not finish on their own before then
# (max_new_tokens = min_length = 512 tokens, seconds of decoding at batch 8 even on a fast CPU).
HOLD_TOKENS = 512
HOLD_S = 1.5  # how long the waiting requests wait for a slot at least: their TTFT is over 1 s
WAITING_STREAMS = LLM_SLOTS


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple, float]:
        """Instant query: {sorted label items (without __name__): value}."""
        result = self.api("query", query=expr)["result"]
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1]) for r in result}

    def active_alerts(self, names=WATCHED) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] in names and a["state"] in ("pending", "firing")]

    def wait_for(self, what: str, condition, timeout_s: float, while_waiting=lambda: None):
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout_s:.0f} s; Prometheus log tail:\n{self.log.read_text()[-2000:]}")
            while_waiting()
            time.sleep(0.5)


def synthetic_budget_rule_file(directory: Path) -> Path:
    """The test model's latency budget, as one more rule of the production budgets' form."""
    path = directory / "test-budgets.yaml"
    rule = {"record": "modelrepo:latency_p99_budget_seconds", "expr": f"vector({SYNTHETIC_BUDGET_S})", "labels": {"model": SYNTHETIC}}
    path.write_text(yaml.safe_dump({"groups": [{"name": "test.latency-budgets", "rules": [rule]}]}, sort_keys=False))
    return path


@contextmanager
def running_prometheus(tmp_path: Path, metrics_port: int, extra_rule_files: tuple[Path, ...] = ()):
    rules = write_rule_file(tmp_path)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules), *map(str, extra_rule_files)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_ports(1)[0]
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [system_tool("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        def ready():
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        prometheus.wait_for("prometheus ready", ready, 30)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def credit_rows(rows: int, seed: int, balance_factor: float = 1.0) -> np.ndarray:
    data = dataset()["x_test"]
    picked = data[np.random.default_rng(seed).choice(len(data), rows)].copy()
    picked[:, 1] *= balance_factor
    return picked


def send_credit(caller: Caller, rows: np.ndarray, batch: int = 200) -> None:
    for start in range(0, len(rows), batch):
        caller.infer("credit_default", request_arrays(rows[start:start + batch]), ["DECISION"])


def synthetic_config() -> str:
    config = ModelConfig(name=SYNTHETIC, backend="python", max_batch_size=SLOW_ROWS)
    config.input.add(name="INPUT", data_type=model_config_pb2.TYPE_FP32, dims=[1])
    config.output.add(name="OUTPUT", data_type=model_config_pb2.TYPE_FP32, dims=[1])
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["base_ms"].string_value = "0"
    config.parameters["per_row_ms"].string_value = str(MS_PER_ROW)
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


@contextmanager
def synthetic_latency_model(http_client, admin_key: str):
    """SYNTHETIC loaded into the running server (explicit model control: config and model.py sent with
    the load request, nothing written to the repository). It stays loaded: an unloaded model stays in
    Triton 2.51's index as UNAVAILABLE, and with --strict-readiness the whole server would answer
    not ready to every later test of the session."""
    headers = {ADMIN_HEADER: admin_key}
    http_client.load_model(SYNTHETIC, headers=headers, config=synthetic_config(),
                           files={"file:1/model.py": SYNTHETIC_SHIM.encode()})
    yield lambda rows: http_client.infer(SYNTHETIC, rows_input(rows))


def rows_input(rows: int) -> list:
    import tritonclient.http as httpclient

    return input_tensors(httpclient, {"INPUT": np.zeros((rows, 1), dtype=np.float32)})


class HeldStream:
    """A gRPC stream to llm_bls generating HOLD_TOKENS tokens: it holds an engine slot until `release`
    cancels it. `ended_by_itself` tells whether it finished (or failed) before being released."""

    def __init__(self, grpc_url: str, prompt: str):
        import tritonclient.grpc as grpcclient

        self.ended_by_itself = threading.Event()
        self.released = False
        self.client = grpcclient.InferenceServerClient(grpc_url)
        self.client.start_stream(callback=self._on_response)
        inputs = llm_inputs(prompt, HOLD_TOKENS, min_length=HOLD_TOKENS, stream=True)
        self.client.async_stream_infer("llm_bls", input_tensors(grpcclient, inputs), enable_empty_final_response=True)

    def _on_response(self, result, error) -> None:
        if self.released:
            return
        if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
            self.ended_by_itself.set()

    def release(self) -> None:
        self.released = True
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


def engine_gauge(server, name: str) -> float:
    return server.metrics()[name][(("model", "llm_engine"),)]


def wait_for_engine(server, active: int, waiting: int, timeout_s: float = 60) -> None:
    """Until llm_engine runs `active` sequences and `waiting` wait for a slot."""
    deadline = time.monotonic() + timeout_s
    while (now := (engine_gauge(server, "llm_active_sequences"), engine_gauge(server, "llm_queue_size"))) != (active, waiting):
        assert time.monotonic() < deadline, f"llm_engine: (active, waiting) is {now}, not {(active, waiting)}, after {timeout_s:.0f} s"
        time.sleep(0.2)


def controlled(alert: dict) -> bool:
    """An alert whose inputs only this test sets: drift, TTFT, and latency of the test's own model."""
    name = alert["labels"]["alertname"]
    return name != "ModelLatencyP99OverBudget" or alert["labels"].get("model") == SYNTHETIC


def test_recording_rules_have_values_and_alerts_follow_drift_and_latency(server, grpc_client, http_client, admin_key, tmp_path):
    started = time.monotonic()
    caller = Caller("grpc", grpc_client)
    seeds = iter(range(100, 10_000))
    # The drift window holds the last 1,000 rows whatever earlier tests sent: make it training-like
    # before Prometheus first scrapes it.
    send_credit(caller, credit_rows(1000, next(seeds)))
    # llm_cached creates each result's lookup counter at its first lookup: a miss and a hit now (the
    # series exist at the first scrape), another hit once scraped (an increase to rate).
    cache_prompt = {"text_input": "Spell the word monitoring.", "max_tokens": 4}
    for _ in range(2):
        status, body = generate(server.http_url, "llm_cached", cache_prompt)
        assert status == 200, body

    def normal_traffic():
        send_credit(caller, credit_rows(50, next(seeds)), batch=50)

    budgets = {**LATENCY_BUDGETS_S, SYNTHETIC: SYNTHETIC_BUDGET_S}
    try:
        with synthetic_latency_model(http_client, admin_key) as synthetic, \
                running_prometheus(tmp_path, server.metrics_port, (synthetic_budget_rule_file(tmp_path),)) as prometheus:
            prometheus.wait_for("first scrape", lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), 20)
            # ---------------------------------------------------------------- normal traffic
            normal_traffic()
            for _ in range(3):
                caller.infer("text_embedding", {"TEXT": texts("fresh coffee", "a quiet street")}, ["EMBEDDING"])
                synthetic(FAST_ROWS)
            status, body = generate(server.http_url, "llm_cached", cache_prompt)
            assert status == 200 and body["cache_hit"], body
            recorded = {
                "model:nv_inference_request:rate5m": 'model:nv_inference_request:rate5m{model="credit_default"} > 0',
                "model:nv_inference_request_error:ratio_rate5m": 'model:nv_inference_request_error:ratio_rate5m{model="credit_default"}',
                "model:nv_inference_request_duration_seconds:p99_1m": f'model:nv_inference_request_duration_seconds:p99_1m{{model="{SYNTHETIC}"}}',
                "model:nv_inference_queue_duration_seconds:mean_rate5m": 'model:nv_inference_queue_duration_seconds:mean_rate5m{model="credit_preprocess"}',
                "model:nv_inference_pending_request_count:sum": 'model:nv_inference_pending_request_count:sum{model="credit_default"}',
                "model:nv_inference_batch_size:mean_rate5m": 'model:nv_inference_batch_size:mean_rate5m{model="credit_preprocess"}',
                "feature:credit_feature_psi:max": "feature:credit_feature_psi:max",
                "decision:credit_decisions:rate5m": "decision:credit_decisions:rate5m",
                "model:llm_cache_hit:ratio_rate5m": 'model:llm_cache_hit:ratio_rate5m{model="llm_cached"} >= 0',
                "modelrepo:latency_p99_budget_seconds": "modelrepo:latency_p99_budget_seconds",
            }
            values = {}
            for name, expr in recorded.items():
                values[name] = prometheus.wait_for(f"recording rule {name}", lambda expr=expr: prometheus.query(expr), 30, normal_traffic)
            assert {dict(k)["feature"] for k in values["feature:credit_feature_psi:max"]} == {"student", "balance", "income"}
            assert max(values["feature:credit_feature_psi:max"].values()) < 0.25
            assert {dict(k)["model"]: v for k, v in values["modelrepo:latency_p99_budget_seconds"].items()} == budgets
            # The sleeps are lower bounds: 0.1 s per request, a third of the budget.
            assert MS_PER_ROW / 1000 <= next(iter(values["model:nv_inference_request_duration_seconds:p99_1m"].values())) < SYNTHETIC_BUDGET_S

            groups = prometheus.api("rules")["groups"]
            evaluated = [rule for group in groups for rule in group["rules"]]
            assert len(evaluated) == len(all_rules()) + 1  # and the test's budget
            assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []
            # Quiet under normal traffic, over several evaluations.
            for _ in range(4):
                assert [a for a in prometheus.active_alerts() if controlled(a)] == [], "alerts under normal traffic"
                normal_traffic()
                time.sleep(1)

            # ---------------------------------------------------------------- drifted and slow traffic
            # Every llm_engine slot is taken by a stream that runs until released; requests sent then
            # wait for a slot at least HOLD_S before their first token.
            holders = [HeldStream(server.grpc_url, f"Count from {k} to {k + 600}.") for k in range(LLM_SLOTS)]
            waiting = [None] * WAITING_STREAMS
            try:
                wait_for_engine(server, active=LLM_SLOTS, waiting=0)  # every slot is a holder's

                def stream(k):
                    waiting[k] = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(f"Name the colour number {k}.", 4, stream=True))

                threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(WAITING_STREAMS)]
                for thread in threads:
                    thread.start()
                wait_for_engine(server, active=LLM_SLOTS, waiting=WAITING_STREAMS)
                time.sleep(HOLD_S)
                assert not any(h.ended_by_itself.is_set() for h in holders), "a holding stream ended before it was released"
            finally:
                for holder in holders:
                    holder.release()

            send_credit(caller, credit_rows(1200, next(seeds), balance_factor=2.5))
            for _ in range(3):
                synthetic(SLOW_ROWS)
            expected = {
                ("CreditFeatureDrift", "feature", "balance", "warning"),
                ("ModelLatencyP99OverBudget", "model", SYNTHETIC, "warning"),
                ("ModelLatencyP99OverBudget", "model", SYNTHETIC, "critical"),  # 0.8 s: over twice the budget
                ("LLMTimeToFirstTokenHigh", "model", "llm_engine", "warning"),
            }

            seen = set()  # each one went pending at some evaluation (Triton's p99 window is one minute)

            def all_expected_seen():
                seen.update((a["labels"]["alertname"], key, a["labels"].get(key), a["labels"]["severity"])
                            for a in prometheus.active_alerts() for key in ("feature", "model"))
                return expected <= seen

            try:
                prometheus.wait_for("drift, latency and TTFT alerts pending", all_expected_seen, 90)
            except AssertionError as err:
                raise AssertionError(f"{err}\nseen active: {sorted(expected & seen)}; missing: {sorted(expected - seen)}") from None
            for thread in threads:
                thread.join(120)
            assert all(s is not None and s.error is None and s.ttft >= HOLD_S for s in waiting), waiting
            ttft = prometheus.query('model:llm_time_to_first_token_seconds:p99_5m{model="llm_engine"}')
            assert list(ttft.values())[0] > 1.0
            assert prometheus.query('model:llm_decode_batch_size:mean_rate5m{model="llm_engine"} > 1')  # batched decode
            print(f"TTFT of the {len(waiting)} waiting streams: {sorted(round(s.ttft, 2) for s in waiting)} s; "
                  f"recorded p99 {list(ttft.values())[0]:.2f} s")
            drift = [a for a in prometheus.active_alerts(["CreditFeatureDrift"])]
            assert {a["labels"]["feature"] for a in drift} == {"balance"}  # income and student did not move
            assert all(a["labels"]["severity"] == "warning" for a in drift)
            assert float(drift[0]["value"]) > 0.25
            # The drift and TTFT windows outlast the test (1,000 rows, 5 minutes); Triton's p99 window
            # (one minute) may already have let the latency alert go.
            rule_states = {(r["name"], r["labels"].get("severity")): r["state"] for g in prometheus.api("rules")["groups"]
                           for r in g["rules"] if r["type"] == "alerting"}
            assert rule_states[("CreditFeatureDrift", "warning")] in ("pending", "firing")
            assert rule_states[("LLMTimeToFirstTokenHigh", "warning")] in ("pending", "firing")
            assert rule_states[("TritonTargetDown", "critical")] == "inactive"
    finally:
        send_credit(caller, credit_rows(1000, 7))  # calm drift windows for whatever runs next

    # Every raw series the rules and the dashboard read exists on the real server.
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        exposition = response.read().decode()
    scraped = exposition_series_names(exposition) | {"up", "ALERTS"}  # and Prometheus's own
    # The OpenAI gateway's series come from its own process (a scrape job of its own), not from Triton's
    # metrics port: test_openai_gateway.py checks those against the gateway's real /metrics.
    used = series_read_by_monitoring(exported_series_names() - gateway_series_names())
    assert used - scraped <= CREATED_ON_FIRST_EVENT | ADDED_MODELS_ONLY, sorted(used - scraped)
    print(f"monitoring round trip: {time.monotonic() - started:.1f} s")
