"""Faults under load on the real server: a Python stub killed, a new version loaded, the canary unloaded.

Each scenario starts its own small server (only the models it needs), sends a fixed-rate gRPC load,
injects the fault and returns what happened as figures (counts of every result, timings). The tests
(tests/integration/test_faults.py) assert on these figures; `python -m modelrepo.perf.chaos` records
them in perf/results/faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY, PERF_RESULTS
from modelrepo.perf.fixed_rate import FixedRateLoad
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.recovery import StubWatch, heal, stub_processes
from modelrepo.triton.server import TritonServer, free_ports

ROW = np.array([[0.0, 1700.0, 30000.0]])
# The fused credit pipeline: 3 Python steps (4 stubs: credit_members_fused has versions 1 and 2).
FUSED_MODELS = ("credit_default_fused", "credit_preprocess", "credit_members_fused", "credit_aggregate")
ROUTER_MODELS = (*FUSED_MODELS, "credit_candidate", "credit_router")


def small_server(repository: Path, load_models: tuple[str, ...], log_path: Path) -> TritonServer:
    http, grpc, metrics = free_ports(3)
    return TritonServer(
        model_repository=repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
        admin_key=secrets.token_urlsafe(12), load_models=load_models, log_path=log_path,
    )


def copy_models(names: tuple[str, ...], destination: Path) -> Path:
    """A temporary repository holding only `names` (copied, so versions can be added to it)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(MODEL_REPOSITORY / name, destination / name)
    return destination


def credit_call(server: TritonServer, model: str, output: str = "DECISION", user_id: str | None = None):
    """A factory for FixedRateLoad: one gRPC client per worker thread."""
    def factory():
        import tritonclient.grpc as grpcclient

        from modelrepo.build.credit import request_arrays
        from modelrepo.triton.client import infer

        client = grpcclient.InferenceServerClient(server.grpc_url)
        counter = iter(range(10**9))

        def call() -> str:
            params = {"user_id": f"{user_id}-{next(counter) % 50}"} if user_id else None
            out = infer(grpcclient, client, model, request_arrays(ROW), [output], parameters=params)
            return out[output][0, 0].decode()
        return call
    return factory


def grpc_admin(server: TritonServer):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url), {GRPC_ADMIN_HEADER: server.admin_key}


def summarise(results, since: float) -> dict:
    after = [r for r in results if r.scheduled >= since]
    return {"requests": len(after), "failed": sum(1 for r in after if r.error),
            "errors": dict(Counter(r.error for r in after if r.error))}


def kill_stub(workdir: Path, victim: str = "credit_preprocess", rate: float = 10.0, observe_s: float = 4.0) -> dict:
    """SIGKILL `victim`'s stub under load; watch what Triton reports; then heal (StubWatch + reload)."""
    server = small_server(MODEL_REPOSITORY, ("credit_default_fused",), workdir / "kill_stub.log")
    figures: dict = {"victim": victim, "rate_per_s": rate, "observe_s": observe_s}
    with server:
        watch = StubWatch(server.process.pid)
        watch.poll()
        with FixedRateLoad({"credit_default_fused": credit_call(server, "credit_default_fused")}, rate) as load:
            time.sleep(2)
            stub = next(s for s in stub_processes(server.process.pid) if s.model == victim)
            killed = time.monotonic()
            os.kill(stub.pid, signal.SIGKILL)
            figures["killed_stub"] = f"{stub.instance} (pid {stub.pid}, version {stub.version})"
            time.sleep(observe_s)
            figures["while_dead"] = {
                "health_ready": server._http("GET", "/v2/health/ready")[0],
                "health_live": server._http("GET", "/v2/health/live")[0],
                "model_ready": server._http("GET", f"/v2/models/{victim}/ready")[0],
                "index_state": server.model_states().get(victim),
                "stub_restarted_by_triton": any(s.model == victim for s in stub_processes(server.process.pid)),
                "server_alive": server.process.poll() is None,
            }
            # the operational answer, as `modelrepo serve` runs it every 0.5 s
            healed_at = time.monotonic()
            reloaded: list[str] = []
            while not reloaded and time.monotonic() - healed_at < 30:
                reloaded = heal(server, watch, log=lambda line: None)
                time.sleep(0.5)
            figures["reloaded"] = reloaded
            figures["heal_seconds"] = round(time.monotonic() - healed_at, 2)
            time.sleep(3)
        results = load.snapshot()
        oks = [r for r in results if r.scheduled >= killed and not r.error]
        first_ok = min((r.scheduled + r.latency for r in oks), default=None)
        figures["outage_seconds"] = round(first_ok - killed, 2) if first_ok else None
        figures["after_kill"] = summarise(results, killed)
        failing = [r.latency for r in results if r.scheduled >= killed and r.error]
        figures["failed_latency_s"] = {"p50": round(float(np.median(failing)), 2), "max": round(max(failing), 2)} if failing else None
        figures["last_3s_failed"] = summarise(results, time.monotonic() - 3)["failed"]
        figures["health_ready_after"] = server._http("GET", "/v2/health/ready")[0]
        stopping = time.monotonic()
    figures["stop_seconds"] = round(time.monotonic() - stopping, 1)
    figures["stop_exit_code"] = server.process.returncode
    return figures


def new_version_and_unload_canary(workdir: Path, rate: float = 10.0) -> dict:
    """One server on a temporary copy: (1) credit_preprocess gets version 2 (a copy of 1), loaded under
    load; (2) credit_router sends every user to the canary, which is unloaded under load."""
    repository = copy_models(ROUTER_MODELS, workdir / "repository")
    server = small_server(repository, ("credit_default_fused", "credit_candidate", "credit_router"), workdir / "reload.log")
    figures: dict = {}
    with server:
        client, admin = grpc_admin(server)
        # -- a new version under load
        calls = {"credit_default_fused": credit_call(server, "credit_default_fused")}
        with FixedRateLoad(calls, rate) as load:
            time.sleep(2)
            shutil.copytree(repository / "credit_preprocess" / "1", repository / "credit_preprocess" / "2")
            started = time.monotonic()
            client.load_model("credit_preprocess", headers=admin)
            load_seconds = time.monotonic() - started
            time.sleep(2)
        versions = [(e["version"], e["state"]) for e in server.model_index() if e["name"] == "credit_preprocess"]
        figures["new_version"] = {"load_seconds": round(load_seconds, 2), "versions_after": versions, **summarise(load.snapshot(), 0)}
        # -- unload the canary under load
        config = client.get_model_config("credit_router", as_json=True, headers=admin)["config"]
        config["parameters"].update({"mode": {"string_value": "canary"}, "canary_percent": {"string_value": "100"},
                                     "primary_model": {"string_value": "credit_default_fused"}})
        client.load_model("credit_router", config=json.dumps(config), headers=admin)
        before = fallbacks(server)
        calls = {"credit_router": credit_call(server, "credit_router", output="ROUTE", user_id="user")}
        with FixedRateLoad(calls, rate) as load:
            time.sleep(2)
            started = time.monotonic()
            client.unload_model("credit_candidate", headers=admin)
            unload_seconds = time.monotonic() - started
            time.sleep(3)
        results = load.snapshot()
        figures["unload_canary"] = {
            "unload_seconds": round(unload_seconds, 2),
            "routes_before": dict(Counter(r.detail for r in results if r.scheduled < started and not r.error)),
            "routes_after": dict(Counter(r.detail for r in results if r.scheduled > started + unload_seconds and not r.error)),
            "fallbacks_counted": fallbacks(server) - before,
            "fallback_routes": sum(1 for r in results if r.detail == "candidate_fallback"),
            "candidate_state": server.model_states().get("credit_candidate"),
            **summarise(results, 0),
        }
    return figures


def fallbacks(server: TritonServer) -> float:
    return sum(server.metrics().get("credit_router_fallbacks_total", {}).values())


def report(kill: dict, reload: dict, command: str) -> str:
    dead = kill["while_dead"]
    nv, uc = reload["new_version"], reload["unload_canary"]
    return f"""# Faults under load (Triton 2.51, CPU, 2 cores shared)

Command: `{command}` (every figure below counts every client result; gRPC, fixed rate {kill['rate_per_s']:.0f} requests/s).
The same scenarios are asserted by `tests/integration/test_faults.py`.

## 1. kill -9 of a Python stub (`{kill['victim']}`, in `credit_default_fused`)

Killed: {kill['killed_stub']}. What Triton 2.51 does, measured {kill['observe_s']:g} s after the kill:

| observed | value |
| --- | --- |
| requests from the kill to the end (3 s after healing) | {kill['after_kill']['requests']} sent, {kill['after_kill']['failed']} failed |
| errors | {'; '.join(f"`{e}` × {n}" for e, n in kill['after_kill']['errors'].items())} |
| latency of the failed requests (from their scheduled time) | p50 {kill['failed_latency_s']['p50']} s, max {kill['failed_latency_s']['max']} s |
| `/v2/health/ready` (strict readiness) | {dead['health_ready']} |
| `/v2/health/live` | {dead['health_live']} |
| `/v2/models/{kill['victim']}/ready` | {dead['model_ready']} |
| repository index state | {dead['index_state']} |
| stub restarted by Triton | {dead['stub_restarted_by_triton']} |
| tritonserver still running | {dead['server_alive']} |

Nothing in Triton notices: every probe stays green and the model stays READY while every request
through it fails. The answer (`modelrepo.triton.recovery`, run by `modelrepo serve` every 0.5 s):
`StubWatch` sees the stub become a zombie (Triton does not reap it), and `TritonServer.reload_model`
reloads the model with its current config plus a changed marker parameter (an unchanged load is a
no-op). Reloaded: {kill['reloaded']}; detection + reload took {kill['heal_seconds']} s; requests
succeeded again {kill['outage_seconds']} s after the kill (including the {kill['observe_s']:g} s this run
waited on purpose before healing); failed in the last 3 s: {kill['last_3s_failed']}; `/v2/health/ready`
afterwards: {kill['health_ready_after']}.
Side effect: the dead instance's unload never completes, so the SIGTERM stop afterwards took
{kill['stop_seconds']} s (tritonserver's 15 s exit timeout, exit code {kill['stop_exit_code']}).

## 2. A new version loaded under load

`credit_preprocess/1` copied to `credit_preprocess/2` in a temporary copy of the repository, then
`load_model("credit_preprocess")` (admin key) while `credit_default_fused` was called:
{nv['requests']} requests, **{nv['failed']} failed**; the load call took {nv['load_seconds']} s; index
afterwards: {nv['versions_after']}.

## 3. The canary unloaded under load

`credit_router` in `canary` mode at 100 % (primary `credit_default_fused`), `unload_model("credit_candidate")`
under load: {uc['requests']} requests, **{uc['failed']} failed**; the unload call took
{uc['unload_seconds']} s. Routes before: {uc['routes_before']}; after: {uc['routes_after']}.
`credit_router_fallbacks_total` grew by {uc['fallbacks_counted']:.0f} for {uc['fallback_routes']} answers
routed `candidate_fallback`. Candidate state afterwards: {uc['candidate_state']}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".cache/chaos"))
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=PERF_RESULTS / "faults.md")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    kill = kill_stub(args.workdir, rate=args.rate)
    print(json.dumps(kill, indent=1))
    reload = new_version_and_unload_canary(args.workdir, rate=args.rate)
    print(json.dumps(reload, indent=1))
    args.output.write_text(report(kill, reload, f"python -m modelrepo.perf.chaos --rate {args.rate:g}"))
    (args.output.with_suffix(".json")).write_text(json.dumps({"kill_stub": kill, **reload}, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
