"""Faults under load on the real server: a Python stub killed, a new version loaded, the canary unloaded;
and tritonserver itself crashed by one request (crash-only serving's recovery time).

Each scenario starts its own small server (only the models it needs), sends a fixed-rate gRPC load,
injects the fault and returns what happened as figures (counts of every result, timings). The tests
(tests/integration/test_faults.py) assert on these figures; `python -m modelrepo.perf.chaos` records
them in perf/results/faults.md. `python -m modelrepo.perf.chaos --crash-recovery 5` instead crashes
`modelrepo serve`'s tritonserver 5 times with the classification-on-BYTES request (SIGFPE) and
records how long until every model is READY and answering again (perf/results/crash_recovery.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from modelrepo.paths import MODEL_REPOSITORY, PERF_RESULTS
from modelrepo.perf.fixed_rate import FixedRateLoad
from modelrepo.perf.serve_process import READY_BANNER, ServeProcess, linked_repository
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


# Classification asked on a BYTES output: tritonserver 2.51's frontend divides by the datatype's byte
# size (0 for BYTES) and dies with SIGFPE before any model code runs (fixed upstream in 2.60 / NGC 25.08).
RECOVERY_GOAL_S = 30
REVIEW = "The tea was wonderful and arrived quickly; I will buy it again."
CLASSIFICATION_ON_BYTES = {
    "inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [REVIEW]}],
    "outputs": [{"name": "LABEL", "parameters": {"classification": 2}}],
}


def classification_on_bytes_http(http_url: str, model: str = "review_sentiment") -> str:
    """POST the SIGFPE reproducer; returns what the client saw (the connection drops)."""
    request = urllib.request.Request(f"http://{http_url}/v2/models/{model}/infer", method="POST",
                                     data=json.dumps(CLASSIFICATION_ON_BYTES).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read()[:200]!r}"
    except (OSError, http.client.HTTPException) as err:
        return f"{type(err).__name__}: {err}"


def classification_on_bytes_grpc(grpc_url: str, model: str = "review_sentiment") -> str:
    """The gRPC form: InferRequestedOutput(class_count=2) on the BYTES output LABEL."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[REVIEW.encode()]], dtype=object))
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        client.infer(model, [text], outputs=[grpcclient.InferRequestedOutput("LABEL", class_count=2)], client_timeout=60)
        return "OK"
    except InferenceServerException as err:
        return f"{err.status()}: {err.message()}"
    finally:
        client.close()


def review_answer(http_url: str) -> tuple[str, list[float]] | None:
    """review_sentiment's LABEL and PROBABILITIES for REVIEW, or None if it cannot answer now."""
    body = {"inputs": CLASSIFICATION_ON_BYTES["inputs"], "outputs": [{"name": "LABEL"}, {"name": "PROBABILITIES"}]}
    request = urllib.request.Request(f"http://{http_url}/v2/models/review_sentiment/infer", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
    except (OSError, http.client.HTTPException):
        return None
    return outputs["LABEL"][0], [round(p, 6) for p in outputs["PROBABILITIES"]]


def crash_recovery(runs: int, models: tuple[str, ...] = (), workdir: Path = Path(".cache/chaos"), poll_s: float = 0.1) -> dict:
    """`modelrepo serve` on the repository (or only `models`, linked); `runs` times: the SIGFPE
    reproducer (HTTP and gRPC in turn), then seconds until /v2/health/ready (strict: every model READY)
    and the same review answer again."""
    shutil.rmtree(workdir / "crash-repository", ignore_errors=True)
    repository = linked_repository(workdir / "crash-repository", models) if models else MODEL_REPOSITORY
    # a restart window shorter than one run: each crash is a first crash (1 s backoff), as in production
    # after 5 quiet minutes; the doubling backoff is for crash loops (tests/unit/test_crash_only.py)
    serve = ServeProcess(repository, "--max-restarts", str(runs), "--restart-window", "5")
    figures: dict = {"runs": [], "models": list(models) or "all", "load_average_before": os.getloadavg()}
    try:
        serve.wait_for(READY_BANNER, timeout_s=600)
        figures["startup_line"] = serve.wait_for("READY in")
        expected = review_answer(serve.http_url)
        for run in range(runs):
            protocol = "http" if run % 2 == 0 else "grpc"
            crash = classification_on_bytes_http if protocol == "http" else classification_on_bytes_grpc
            crashed = time.monotonic()
            client_saw = crash(serve.http_url if protocol == "http" else serve.grpc_url)
            died = serve.wait_for("died by itself", run + 1, timeout_s=120)
            while not (serve.control.is_ready() and review_answer(serve.http_url) == expected):
                assert serve.process.poll() is None and time.monotonic() - crashed < 300, serve.output()[-3000:]
                time.sleep(poll_s)
            seconds = time.monotonic() - crashed
            states = serve.control.model_states()
            figures["runs"].append({
                "protocol": protocol, "client_saw": client_saw, "logged": died, "recovery_s": round(seconds, 2),
                "serving_again_line": serve.wait_for("tritonserver serving again", run + 1),
                "models_ready": sum(state == "READY" for state in states.values()), "models": len(states),
            })
            print(json.dumps(figures["runs"][-1]), flush=True)
    finally:
        figures["stop_exit_code"] = serve.stop()
    figures["load_average_after"] = os.getloadavg()
    times = [r["recovery_s"] for r in figures["runs"]]
    figures |= {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    return figures


def crash_recovery_report(figures: dict, command: str) -> str:
    rows = "\n".join(
        f"| {i + 1} | {r['protocol']} | {r['client_saw'][:70]} | `{r['logged'].split('; ')[0]}` | "
        f"{r['logged'].split('; ')[1].split(' (')[0]} | {r['recovery_s']:.1f} | {r['models_ready']}/{r['models']} |"
        for i, r in enumerate(figures["runs"])
    )
    within = sum(r["recovery_s"] <= RECOVERY_GOAL_S for r in figures["runs"])
    verdict = f"{'met' if within == len(figures['runs']) else 'not met'} ({within} of {len(figures['runs'])} runs within it)"
    served = "the whole repository" if figures["models"] == "all" else f"only {', '.join(figures['models'])}"
    load = lambda key: ", ".join(f"{v:.1f}" for v in figures[key])  # noqa: E731
    return f"""# Crash-only serving: recovery time after tritonserver dies (Triton 2.51, CPU, 2 cores shared)

Command: `{command}`

`modelrepo serve` on {served} (cold start: {figures['startup_line'].split(':')[0].strip()}; load average 1/5/15 min before the
run {load('load_average_before')}, after {load('load_average_after')}: other sessions share the 2 cores).
Each run sends the request
that ends tritonserver 2.51 with SIGFPE (`classification` asked on review_sentiment's BYTES output `LABEL`;
HTTP and gRPC in turn) and measures, from the request, until `/v2/health/ready` answers 200 (strict
readiness: every model READY) and review_sentiment answers the same label and probabilities as before the
crash. The restart reuses the built artifacts (no rebuild). `--restart-window 5` forgets restarts after
5 s, so a run is a first crash (1 s backoff) unless the previous one recovered within 5 s (then 2 s: the
backoff column).

**Recovery: median {figures['median_s']:.1f} s, range {figures['min_s']:.1f}–{figures['max_s']:.1f} s over
{len(figures['runs'])} crashes**; goal (serving again within {RECOVERY_GOAL_S} s): **{verdict}**. A restart is a cold start of
every served model (each Python stub imports its libraries again), so the recovery time follows the
start-up time above and the machine's load.

| run | protocol | what the client saw | logged | backoff | recovery (s) | models READY |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

`modelrepo serve` exited {figures['stop_exit_code']} on SIGTERM afterwards.
"""


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
    parser.add_argument("--output", type=Path, default=None, help="default perf/results/faults.md (crash_recovery.md)")
    parser.add_argument("--crash-recovery", type=int, metavar="RUNS", default=0,
                        help="instead: crash tritonserver RUNS times under `modelrepo serve`, time each recovery")
    parser.add_argument("--models", default="", help="with --crash-recovery: serve only these (comma-separated; "
                        "review_sentiment and its steps must be among them)")
    args = parser.parse_args()
    if args.crash_recovery:
        models = tuple(m for m in args.models.split(",") if m)
        output = args.output or PERF_RESULTS / f"crash_recovery{'-' + models[0] if models else ''}.md"
        figures = crash_recovery(args.crash_recovery, models, args.workdir)
        command = f"python -m modelrepo.perf.chaos --crash-recovery {args.crash_recovery}" + (f" --models {args.models}" if models else "")
        output.write_text(crash_recovery_report(figures, command))
        output.with_suffix(".json").write_text(json.dumps(figures, indent=1))
        print(f"wrote {output}")
        return
    args.output = args.output or PERF_RESULTS / "faults.md"
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
