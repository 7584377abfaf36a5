"""Metrics kept in the stub and exported every so often: what reaches the server's registry, and when."""

import threading
import time

import numpy as np
import pytest

from modelrepo.python_backends.ensemble_stats import PROBABILITY_BUCKETS, UNCERTAINTY_BUCKETS, DecisionPolicy, EnsembleAggregate
from modelrepo.python_backends.exported_metrics import ExportingRegistry, bucket_label
from modelrepo.python_backends.metrics import COUNTER, GAUGE, HISTOGRAM, InMemoryRegistry


def exporting() -> tuple[ExportingRegistry, InMemoryRegistry]:
    server = InMemoryRegistry()
    return ExportingRegistry(server, interval_s=60, start=False), server


def test_nothing_reaches_the_server_until_an_export_then_only_what_changed():
    registry, server = exporting()
    served = registry.family("served_total", "h", COUNTER).metric({"route": "a"})
    depth = registry.family("depth", "h", GAUGE).metric({})
    served.increment(2)
    served.increment(3)
    depth.set(7)
    depth.set(4)
    assert server.value("served_total", route="a") == 0 and server.value("depth") == 0
    registry.export()
    assert server.value("served_total", route="a") == 5
    assert server.value("depth") == 4  # a gauge sends its last value
    server.families["depth"].metric({}).set(99)  # another instance set it meanwhile: not overwritten by a stale value
    registry.export()
    assert server.value("served_total", route="a") == 5 and server.value("depth") == 99


def test_a_histogram_becomes_cumulative_bucket_sum_and_count_counters_prometheus_reads_as_one():
    registry, server = exporting()
    histogram = registry.family("credit_uncertainty", "spread", HISTOGRAM).metric({"model": "m"}, [0.1, 0.5, 1.0])
    for value in (0.05, 0.1, 0.3, 0.7, 2.0):  # 0.1 lies in le="0.1": the bounds are inclusive
        histogram.observe(value)
    registry.export()
    buckets = {bound: server.value("credit_uncertainty_bucket", model="m", le=bound) for bound in ("0.1", "0.5", "1", "+Inf")}
    assert buckets == {"0.1": 2, "0.5": 3, "1": 4, "+Inf": 5}
    assert server.value("credit_uncertainty_count", model="m") == 5
    assert server.value("credit_uncertainty_sum", model="m") == pytest.approx(3.15)
    histogram.observe(0.2)
    registry.export()
    assert server.value("credit_uncertainty_bucket", model="m", le="0.1") == 2
    assert server.value("credit_uncertainty_bucket", model="m", le="0.5") == 4
    assert server.value("credit_uncertainty_count", model="m") == 6
    assert server.families["credit_uncertainty_bucket"].kind == COUNTER


def test_every_bucket_series_exists_from_the_start():
    registry, server = exporting()
    registry.family("latency_seconds", "h", HISTOGRAM).metric({}, [0.5, 0.01])
    assert {key for key in server.families["latency_seconds_bucket"].metrics} == {
        (("le", "0.01"),), (("le", "0.5"),), (("le", "+Inf"),)
    }
    assert bucket_label(0.001) == "0.001" and bucket_label(float("inf")) == "+Inf"


def test_the_aggregate_exports_the_same_totals_a_per_call_registry_records():
    rows = np.random.default_rng(3).uniform(0, 1, size=(40, 3)).astype(np.float32)
    requests = [{f"MEMBER_{i}": rows[start:start + 8, i:i + 1] for i in range(3)} for start in range(0, 40, 8)]
    per_call = InMemoryRegistry()
    registry, server = exporting()
    for metrics in (per_call, registry):
        aggregate = EnsembleAggregate([f"MEMBER_{i}" for i in range(3)], DecisionPolicy(), metrics=metrics)
        aggregate.execute_batch(requests)
    registry.export()
    for name, bounds in (("credit_default_probability", PROBABILITY_BUCKETS), ("credit_uncertainty", UNCERTAINTY_BUCKETS)):
        observed = np.array(per_call.families[name].metric({}).observations)
        assert server.value(f"{name}_count") == len(observed) == 40
        assert server.value(f"{name}_sum") == pytest.approx(observed.sum())
        for bound in bounds:
            assert server.value(f"{name}_bucket", le=bucket_label(bound)) == (observed <= bound).sum()
    for decision in ("approve", "review", "decline"):
        assert server.value("credit_decisions_total", decision=decision) == per_call.value("credit_decisions_total", decision=decision)


def test_concurrent_calls_and_exports_lose_nothing():
    registry, server = exporting()
    counter = registry.family("calls_total", "h", COUNTER).metric({})
    histogram = registry.family("values", "h", HISTOGRAM).metric({}, [0.5])
    stop = threading.Event()

    def export_often():
        while not stop.is_set():
            registry.export()

    exporter = threading.Thread(target=export_often)
    exporter.start()
    for _ in range(20_000):
        counter.increment(1)
        histogram.observe(0.25)
    stop.set()
    exporter.join()
    registry.close()
    assert server.value("calls_total") == 20_000
    assert server.value("values_count") == 20_000 and server.value("values_bucket", le="0.5") == 20_000


def test_the_thread_exports_every_interval_and_close_sends_the_rest():
    server = InMemoryRegistry()
    registry = ExportingRegistry(server, interval_s=0.05)
    counter = registry.family("ticks_total", "h", COUNTER).metric({})
    counter.increment(1)
    deadline = time.monotonic() + 10
    while server.value("ticks_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.value("ticks_total") == 1
    registry.close()
    counter.increment(2)
    registry.export()  # after close the thread is gone; an explicit export still sends
    assert server.value("ticks_total") == 3


def test_a_scrape_reads_every_series_under_its_exposed_name():
    from modelrepo.triton.metrics_scrape import parse_samples

    text = "\n".join([
        "# TYPE credit_decisions_total counter", 'credit_decisions_total{decision="approve"} 3',
        "# TYPE nv_inference_request_success counter", 'nv_inference_request_success{model="m"} 5',
        "# TYPE credit_uncertainty_count counter", "credit_uncertainty_count 2",
        "# TYPE credit_feature_psi gauge", 'credit_feature_psi{feature="income"} 0.1',
        "# TYPE latency histogram", 'latency_bucket{le="+Inf"} 2', "latency_sum 0.3", "latency_count 2", "",
    ])
    assert parse_samples(text) == {
        "credit_decisions_total": {(("decision", "approve"),): 3},
        "nv_inference_request_success": {(("model", "m"),): 5},
        "credit_uncertainty_count": {(): 2},
        "credit_feature_psi": {(("feature", "income"),): 0.1},
        "latency_bucket": {(("le", "+Inf"),): 2}, "latency_sum": {(): 0.3}, "latency_count": {(): 2},
    }


def test_a_failing_call_loses_only_its_own_change():
    registry, server = exporting()
    broken = registry.family("broken_total", "h", COUNTER).metric({})
    fine = registry.family("fine_total", "h", COUNTER).metric({})

    def refuse(amount):
        raise RuntimeError("the server refused it")

    server.families["broken_total"].metric({}).increment = refuse
    broken.increment(1)
    fine.increment(2)
    registry.export()
    assert server.value("fine_total") == 2
