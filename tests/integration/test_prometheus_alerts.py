"""k8s/monitoring/prometheus-rules.yaml on a real Prometheus scraping the real server.

Debian's prometheus runs on loopback (scrape and rule evaluation every second) with the production
rule file as tests/deploy extracts it, unchanged, and nothing else. Then:

1. normal traffic (training-like credit rows, short texts, semantic-cache hits): the recording rules
   produce values, every rule evaluates without error, and no drift, latency or TTFT alert is active.
   No LLM generation here: on this shared 2-core machine a lone 4-token request has taken 11 s to its
   first token under load (load average 12), so "TTFT under 1 s" is not a property of the code here;
   the TTFT alert's quiet case is covered by promtool (rules-tests.yaml);
2. drifted and slow traffic: credit rows with balances x2.5 (credit_preprocess's PSI gauge), two
   text_embedding requests of three 256-token texts (about a second each on CPU against the model's
   0.3 s production budget)
   and more concurrent LLM streams than llm_engine has batch slots (TTFT over 1 s): the drift, the
   p99-over-budget and the TTFT alerts go pending (their `for:` durations are minutes; pending is the
   state Prometheus enters the first evaluation the expression is true).

Every raw series the rules and the dashboard read is also checked against the server's real scrape.
The credit drift window (1,000 rows per credit_preprocess) is refilled with training-like rows at the
end, so later tests in the session start from calm PSI values.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelrepo.build.credit import dataset, request_arrays
from modelrepo.tools import system_tool
from modelrepo.triton.llm_client import generate, grpc_stream, llm_inputs
from modelrepo.triton.server import free_ports
from tests.deploy.test_monitoring_assets import (
    LATENCY_BUDGETS_S,
    all_rules,
    dashboard_exprs,
    exported_series_names,
    promql_metric_names,
    write_rule_file,
)
from tests.integration.triton_calls import Caller, scrape_metrics, texts

JOB = "modelrepo"  # the ServiceMonitor's job name in k8s (the Service's), matched by TritonTargetDown
WATCHED = ("CreditFeatureDrift", "ModelLatencyP99OverBudget", "LLMTimeToFirstTokenHigh")
# Created by the backend at its first event; no traffic here causes one (test_credit_default does).
CREATED_ON_FIRST_EVENT = {"credit_rejected_inputs_total"}
ADDED_MODELS_ONLY = {"modelrepo_model_psi"}  # exported once a model is put in with `modelrepo add`
LLM_SLOTS = 8  # llm_engine's max_active_sequences


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


@contextmanager
def running_prometheus(tmp_path: Path, metrics_port: int):
    rules = write_rule_file(tmp_path)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
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


def wait_until_latencies_are_calm(server, budgets_s: dict[str, float], timeout_s: float = 150) -> None:
    """Triton's p99 summary covers the last minute: let slow requests of earlier tests in the session
    (an overload burst, a fault test) leave it for every model with a budget, so "normal traffic" below
    is normal in the window the rules read."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape_metrics(server).get("nv_inference_request_summary_us", {})
        over = {dict(labels)["model"]: value / 1e6 for labels, value in samples.items()
                if dict(labels).get("model") in budgets_s and dict(labels).get("quantile") == "0.99"
                and not math.isnan(value) and value / 1e6 >= budgets_s[dict(labels)["model"]]}
        if not over:
            return
        assert time.monotonic() < deadline, f"one-minute p99 still over budget: {over}"
        time.sleep(2)


def test_recording_rules_have_values_and_alerts_follow_drift_and_latency(server, grpc_client, tmp_path):
    wait_until_latencies_are_calm(server, LATENCY_BUDGETS_S)
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

    try:
        with running_prometheus(tmp_path, server.metrics_port) as prometheus:
            prometheus.wait_for("first scrape", lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), 20)
            # ---------------------------------------------------------------- normal traffic
            normal_traffic()
            # A few short texts only: p99 is a quantile, so the slow requests below must be more than
            # 1 % of text_embedding's requests in Triton's one-minute window to move it.
            for _ in range(3):
                caller.infer("text_embedding", {"TEXT": texts("fresh coffee", "a quiet street")}, ["EMBEDDING"])
            status, body = generate(server.http_url, "llm_cached", cache_prompt)
            assert status == 200 and body["cache_hit"], body
            recorded = {
                "model:nv_inference_request:rate5m": 'model:nv_inference_request:rate5m{model="credit_default"} > 0',
                "model:nv_inference_request_error:ratio_rate5m": 'model:nv_inference_request_error:ratio_rate5m{model="credit_default"}',
                "model:nv_inference_request_duration_seconds:p99_1m": 'model:nv_inference_request_duration_seconds:p99_1m{model="text_embedding"}',
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
            assert {dict(k)["model"]: v for k, v in values["modelrepo:latency_p99_budget_seconds"].items()} == LATENCY_BUDGETS_S
            assert next(iter(values["model:nv_inference_request_duration_seconds:p99_1m"].values())) < LATENCY_BUDGETS_S["text_embedding"]

            groups = prometheus.api("rules")["groups"]
            evaluated = [rule for group in groups for rule in group["rules"]]
            assert len(evaluated) == len(all_rules())
            assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []
            # Quiet under normal traffic, over several evaluations.
            for _ in range(4):
                assert prometheus.active_alerts() == [], "alerts under normal traffic"
                normal_traffic()
                time.sleep(1)

            # ---------------------------------------------------------------- drifted and slow traffic
            # One stream more than llm_engine has batch slots: the last waits for a slot, so its first
            # token comes after the others' prefill and decode (over 1 s even on an idle machine).
            streams = [None] * (LLM_SLOTS + 1)

            def stream(k):
                streams[k] = grpc_stream(server.grpc_url, "llm_bls", llm_inputs(f"Count from {k} to {k + 20}.", 4, stream=True))

            threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(len(streams))]
            for thread in threads:
                thread.start()

            send_credit(caller, credit_rows(1200, next(seeds), balance_factor=2.5))
            long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 35)
            for request in range(2):
                caller.infer("text_embedding", {"TEXT": texts(*[f"{long_text} {request} {i}" for i in range(3)])}, ["EMBEDDING"])
            expected = {
                ("CreditFeatureDrift", "feature", "balance"),
                ("ModelLatencyP99OverBudget", "model", "text_embedding"),
                ("LLMTimeToFirstTokenHigh", "model", "llm_engine"),
            }

            seen = set()  # each one went pending at some evaluation (Triton's p99 window is one minute)

            def all_expected_seen():
                seen.update((a["labels"]["alertname"], key, a["labels"].get(key)) for a in prometheus.active_alerts()
                            for key in ("feature", "model"))
                return expected <= seen

            try:
                prometheus.wait_for("drift, latency and TTFT alerts pending", all_expected_seen, 90)
            except AssertionError as err:
                raise AssertionError(f"{err}\nseen active: {sorted(expected & seen)}; missing: {sorted(expected - seen)}") from None
            for thread in threads:
                thread.join(120)
            assert all(s is not None and s.error is None for s in streams)
            ttft = prometheus.query('model:llm_time_to_first_token_seconds:p99_5m{model="llm_engine"}')
            assert list(ttft.values())[0] > 1.0
            assert prometheus.query('model:llm_decode_batch_size:mean_rate5m{model="llm_engine"} > 1')  # batched decode
            print(f"TTFT of the {len(streams)} streams: {sorted(round(s.ttft, 2) for s in streams)} s; recorded p99 {list(ttft.values())[0]:.2f} s")
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
    # (Raw exposition text: prometheus_client's parser renames counters that lack the _total suffix.)
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        exposition = response.read().decode()
    scraped = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0) for line in exposition.splitlines() if line and not line.startswith("#")}
    scraped |= {"up", "ALERTS"}  # Prometheus's own
    used = set()
    for expr in [rule["expr"] for rule in all_rules()] + [expr for _, expr in dashboard_exprs()]:
        used |= promql_metric_names(expr) & exported_series_names()
    assert used - scraped <= CREATED_ON_FIRST_EVENT | ADDED_MODELS_ONLY, sorted(used - scraped)
    print(f"monitoring round trip: {time.monotonic() - started:.1f} s")
