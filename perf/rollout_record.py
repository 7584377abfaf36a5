"""A rollout session on the real server under a fixed-rate load, recorded as a timeline.

    .venv/bin/python -m modelrepo.perf.rollout_record [--rate 10] [--bake 10]

One small server on a temporary repository: `modelrepo add` writes a scikit-learn regressor `score`
(version 1), a close retrain (2) and a disagreeing one (3) with --version; version 4 is a corrupt copy.
Requests go through score_rollout at a fixed rate (open loop, 40 sticky users). Then: a canary of
version 2 (50 %, 100 %) promoted on its gates; a shadow of version 3 rolled back by its disagreement
gate; version 4, which cannot load; a canary of version 1 against a p99 budget of 1 µs (no call is that
fast, so the latency gate rolls it back whatever the machine's speed). A sampler scrapes the metrics every second: each version's share
of calls, p99 and errors (from the router's per-version counters and histogram). The integration test
(tests/integration/test_rollout.py) runs the same session without the sampler and asserts on it.
Writes perf/results/rollout.{json,md,csv,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from modelrepo.build.add.command import add_model
from modelrepo.build.add.recipes import AddRequest
from modelrepo.paths import PERF_RESULTS
from modelrepo.perf.chaos import small_server
from modelrepo.perf.fixed_rate import FixedRateLoad
from modelrepo.perf.results import Spread, record, repeat
from modelrepo.rollout.controller import RolloutError, Rollouts, RolloutSpec
from modelrepo.rollout.gates import GateLimits, version_figures
from modelrepo.rollout.router_model import router_name
from modelrepo.rollout.store import RolloutStore

MODEL = "score"
USERS = 40
SHARE_WINDOW_S = 5
VERSIONS = (1, 2, 3, 4)
# Neither latency nor capacity is what the session is about: a budget no healthy call on a loaded 2-core
# machine reaches, and an error ratio that tolerates a version call timing out in its queue (1 s) while
# the machine is starved (the client is still answered, by the serving version).
LOOSE = dict(p99_budget_ms=30_000, max_error_ratio=0.5, min_calls=5)


def versioned_repository(folder: Path) -> tuple[Path, np.ndarray]:
    """`score` versions 1-3 written by `modelrepo add` (3 disagrees), 4 a corrupt copy; and sample rows."""
    from tests import added_models  # the small models the tests make (sklearn data sets, no downloads)

    repository = folder / "repository"
    repository.mkdir()
    v1 = added_models.sklearn_regressor(folder)
    later = added_models.sklearn_regressor_versions(folder)
    for version, source in ((None, v1.source), (2, later["close"]), (3, later["disagreeing"])):
        add_model(AddRequest(MODEL, source, sample=v1.sample, version=version), repository, log=lambda *_: None)
    shutil.copytree(repository / MODEL / "1", repository / MODEL / "4")
    (repository / MODEL / "4" / "model.onnx").write_bytes(b"not an onnx graph (planted on purpose)")
    return repository, v1.rows


def router_call(server, rows: np.ndarray):
    """A FixedRateLoad factory: one gRPC client per worker; each call answers `user:route`. The users
    take turns across all workers (one shared counter), so any second of load holds `rate` distinct users;
    a counter per worker had the eight workers on the same few users at a time."""
    counter = itertools.count()  # next() on it is atomic under the GIL

    def factory():
        import tritonclient.grpc as grpcclient

        from modelrepo.triton.client import infer

        client = grpcclient.InferenceServerClient(server.grpc_url)

        def call() -> str:
            n = next(counter)
            user = f"user-{n % USERS}"
            out = infer(grpcclient, client, router_name(MODEL), {"INPUT": rows[n % len(rows)][None, :]}, ["ROUTE"],
                        parameters={"user_id": user})
            return f"{user}:{out['ROUTE'][0, 0].decode()}"
        return call
    return factory


def specs(bake_s: float) -> dict[str, RolloutSpec]:
    return {
        "promote": RolloutSpec(MODEL, 2, "canary", (50.0, 100.0), bake_s=bake_s,
                               limits=GateLimits(max_disagreement=1.0, max_psi=100.0, **LOOSE)),
        "rollback": RolloutSpec(MODEL, 3, "shadow", (100.0,), bake_s=bake_s, tolerance=1.0,
                                limits=GateLimits(max_disagreement=0.05, max_psi=100.0, **LOOSE)),
        "broken": RolloutSpec(MODEL, 4, "canary", (50.0,), bake_s=bake_s, limits=GateLimits(**LOOSE)),
        # version 1 again (version 2 serves by now) against a budget no call meets: the latency gate's rollback
        "over_budget": RolloutSpec(MODEL, 1, "canary", (50.0,), bake_s=bake_s,
                                   limits=GateLimits(max_psi=100.0, **{**LOOSE, "p99_budget_ms": 0.001})),
    }


class Sampler:
    """Scrapes the metrics every `interval` s in a thread: per version, the interval's calls, errors, p99."""

    def __init__(self, metrics, origin: float, interval: float = 1.0):
        self.metrics, self.origin, self.interval, self.rows = metrics, origin, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        before = self.metrics()
        while not self._stop.wait(self.interval):
            after = self.metrics()
            at = round(time.monotonic() - self.origin, 2)
            for version in VERSIONS:
                self.rows.append({"t_s": at, "version": version, **version_figures(before, after, MODEL, version)})
            before = after


def session(folder: Path, rate: float, bake_s: float, sample_every: float | None = None) -> dict:
    """The three rollouts under load; figures for the tests and the record (timeline with a sampler)."""
    repository, rows = versioned_repository(folder)
    server = small_server(repository, (MODEL,), folder / "triton.log")
    store = RolloutStore(folder / "rollouts", who="rollout_record")
    figures: dict = {"rate_per_s": rate, "bake_s": bake_s, "phases": {}, "states": {}}
    with server:
        rollouts = Rollouts(server, server.metrics, repository, store, log=lambda *_: None)
        rollouts.prepare(MODEL)
        figures["origin"], figures["unix_origin"] = time.monotonic(), time.time()  # the timeline's zero
        sampler = Sampler(server.metrics, figures["origin"], sample_every or 1.0)
        with FixedRateLoad({"router": router_call(server, rows)}, rate) as load:
            with sampler if sample_every else contextlib.nullcontext():
                time.sleep(1)
                for name, spec in specs(bake_s).items():
                    started = time.monotonic()
                    try:
                        figures[name] = rollouts.start(spec)
                    except RolloutError as err:  # an earlier phase ended otherwise: say so, go on
                        figures[name] = {"phase": "refused", "candidate": spec.version, "serving": None, "reason": str(err)}
                    figures["phases"][name] = (started, time.monotonic())
                    figures["states"][name] = {e["version"]: e.get("state", "") for e in server.model_index()
                                               if e["name"] == MODEL and "version" in e}
                time.sleep(1)
        figures["results"] = load.snapshot()
        figures["unsent"] = load.unsent
    figures["timeline"] = sampler.rows
    figures["history"] = store.history(MODEL)
    return figures


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    rows = figures["timeline"]
    times = sorted({row["t_s"] for row in rows})
    calls = {v: np.array([next(r["calls"] for r in rows if r["t_s"] == t and r["version"] == v) for t in times])
             for v in VERSIONS}
    # shares over a moving SHARE_WINDOW_S: at 10 requests/s one second holds a handful of (sticky) users
    kernel = np.ones(SHARE_WINDOW_S)
    totals = np.convolve(sum(calls.values()), kernel, "same")
    for version in VERSIONS:
        if not calls[version].any():
            continue
        share = 100 * np.convolve(calls[version], kernel, "same") / np.maximum(totals, 1)
        axes[0].plot(times, share, label=f"version {version}")
        mine = {r["t_s"]: r for r in rows if r["version"] == version}
        axes[1].plot(times, [mine[t]["p99_ms"] if mine[t]["p99_ms"] is not None else np.nan for t in times], ".-", label=f"version {version}")
        axes[2].plot(times, [mine[t]["errors"] for t in times], label=f"version {version}")
    failed = [r.scheduled - figures["origin"] for r in figures["results"] if r.error]
    axes[2].plot(failed, [0] * len(failed), "rx", label="failed client requests")
    for entry in figures["history"]:
        if entry["event"] in ("start", "promote", "rollback", "load_failed"):
            at = entry["unix_time"] - figures["unix_origin"]
            for axis in axes:
                axis.axvline(at, color="grey", lw=0.6, ls="--")
            if entry["event"] != "start":  # a start follows the previous decision at once: one label each
                axes[0].text(at, 103, f"{entry['event']} v{entry['candidate']}", fontsize=7, rotation=20)
    axes[0].set_ylabel(f"share of version calls (%, {SHARE_WINDOW_S} s)")
    axes[1].set_ylabel("p99 per 1 s (ms)")
    axes[2].set_ylabel("version call errors / s")
    axes[2].set_xlabel("seconds")
    for axis in axes:
        axis.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(figures: dict) -> dict:
    """One session's figures for the record: every request counted, each rollout's outcome."""
    results = figures["results"]
    failed = [r for r in results if r.error]
    return {
        "requests": len(results), "failed": len(failed), "unsent": figures["unsent"],
        "errors": [{"t_s": round(r.scheduled - figures["origin"], 2), "error": r.error} for r in failed],
        # the decisions on the same clock as the errors (seconds since the load started)
        "events": [{"t_s": round(e["unix_time"] - figures["unix_origin"], 2), "event": e["event"],
                    "candidate": e["candidate"], "percent": e.get("percent")} for e in figures["history"]],
        "outcomes": {name: {k: figures[name].get(k) for k in ("phase", "serving", "candidate", "reason")}
                     for name in specs(0)},
    }


def one_run(rate: float, bake_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return session(Path(tmp), rate, bake_s, sample_every=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--bake", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="sessions, one after the other (the plot shows the last)")
    args = parser.parse_args()
    sessions = repeat(args.runs, lambda _: one_run(args.rate, args.bake))
    runs = [summary(figures) for figures in sessions]
    last = sessions[-1]
    with open(PERF_RESULTS / "rollout.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["t_s", "version", "calls", "errors", "p99_ms"])
        writer.writeheader()
        writer.writerows(last["timeline"])
    plot(last, PERF_RESULTS / "rollout.png")
    data = {"runs": runs, "last_run": {"timeline": last["timeline"], "history": last["history"],
                                       "states_after": last["states"]}}
    command = (f".venv/bin/python -m modelrepo.perf.rollout_record --rate {args.rate:g} --bake {args.bake:g} "
               f"--runs {args.runs}")
    outcomes = runs[-1]["outcomes"]
    body = [f"Open-loop load: {args.rate:g} requests/s through `score_rollout`, {USERS} sticky users; bake {args.bake:g} s "
            f"per step; {args.runs} sessions one after the other, each on a fresh server.", "",
            "| run | requests | failed | due but unsent at the end | " + " | ".join(outcomes) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in outcomes) + " |",
            *(f"| {i + 1} | {run['requests']} | **{run['failed']}** | {run['unsent']} | "
              + " | ".join(f"v{o['candidate']} {o['phase']}" for o in run["outcomes"].values()) + " |"
              for i, run in enumerate(runs)), "",
            f"Failed requests per run: median {Spread.of(run['failed'] for run in runs).text(0)}; every error, with its "
            "time, is in `rollout.json` (`runs[].errors`).", "",
            "Why each rollout ended (last run):",
            *(f"- {name}: {o['reason']}" for name, o in outcomes.items()), "",
            "Timeline of the last run (per 1 s: each version's calls, errors, p99 from the router's histogram): "
            "`rollout.csv`, plotted below; its history (every decision with its gate values): `rollout.json` "
            "(`last_run.history`).", "", "![timeline](rollout.png)"]
    print(record("rollout", "Rollout sessions under load: canary promoted, shadow rolled back, broken candidate, candidate over budget",
                 command, data, body))


if __name__ == "__main__":
    main()
