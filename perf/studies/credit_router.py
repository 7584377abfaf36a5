"""credit_router policies measured: shadow overhead at light load, cascade share/agreement/throughput.

    .venv/bin/python -m modelrepo.perf.studies.credit_router [--rows 2000] [--rounds 2]

One embedded server; the router's policy is switched by config reload between measurements.
- shadow overhead: perf_analyzer p50 under light load (open loop, 20 requests/s, about a quarter of
  the primary's capacity here), mode primary vs mode shadow (alternated).
- cascade: share answered by one member and decision agreement with always-full over the hold-out
  rows (one request per row), and perf_analyzer throughput at concurrency 8, cascade vs primary.
Writes perf/results/credit_router.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from modelrepo.build.credit import dataset, perf_input, request_arrays
from modelrepo.build.add.layout import write_json
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.results import record
from modelrepo.triton.admin import GRPC_ADMIN_HEADER
from modelrepo.triton.client import infer, reload_with_parameters
from modelrepo.triton.server import TritonServer, free_ports

KEY = "bench"
LIGHT_RATE = 20  # requests/s


def configure(client, mode: str) -> None:
    """mode, or "shadow@P" for shadow with shadow_percent P."""
    mode, _, percent = mode.partition("@")
    reload_with_parameters(client, "credit_router", {GRPC_ADMIN_HEADER: KEY}, mode=mode, shadow_percent=percent or "100")


def decisions_and_routes(client, rows: np.ndarray) -> tuple[list[bytes], list[bytes]]:
    """One request per row, as a client scoring applications one by one would send them."""
    answers = [infer(grpcclient, client, "credit_router", request_arrays(rows[i : i + 1]), ["DECISION", "ROUTE"])
               for i in range(len(rows))]
    return [a["DECISION"][0, 0] for a in answers], [a["ROUTE"][0, 0] for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = dataset()["x_test"][: args.rows]
    light, loaded = {"primary": [], "shadow": [], "shadow@20": []}, {"primary": [], "cascade": []}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(MODEL_REPOSITORY, *free_ports(3), admin_key=KEY) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        data = Path(tmp) / "credit_inputs.json"
        write_json(data, perf_input(rows[:200]))
        for _ in range(args.rounds):
            for mode in light:
                configure(client, mode)
                light[mode].append(
                    measure("credit_router", server.grpc_url, data, None, KEY, Path(tmp) / "l.csv", request_rate=LIGHT_RATE)
                )
            for mode in loaded:
                configure(client, mode)
                loaded[mode].append(measure("credit_router", server.grpc_url, data, 8, KEY, Path(tmp) / "c.csv"))
        configure(client, "primary")
        full, _ = decisions_and_routes(client, rows)
        configure(client, "cascade")
        cascaded, routes = decisions_and_routes(client, rows)
        configure(client, "primary")
    p50 = {mode: float(np.median([run["p50_ms"] for run in runs])) for mode, runs in light.items()}
    throughput = {mode: max(run["throughput_infer_per_s"] for run in runs) for mode, runs in loaded.items()}
    summary = {
        "shadow_p50_overhead": p50["shadow"] / p50["primary"] - 1,
        "shadow_20_percent_p50_overhead": p50["shadow@20"] / p50["primary"] - 1,
        "cascade_short_circuit_share": float(np.mean([r == b"cascade_short" for r in routes])),
        "cascade_decision_agreement": float(np.mean([a == b for a, b in zip(full, cascaded)])),
        "cascade_throughput_gain": throughput["cascade"] / throughput["primary"],
        "rows": len(rows),
    }
    command = f".venv/bin/python -m modelrepo.perf.studies.credit_router --rows {args.rows} --rounds {args.rounds}"
    body = [
        "| measurement | primary | policy | result | goal |",
        "| --- | --- | --- | --- | --- |",
        f"| p50 at {LIGHT_RATE} requests/s (ms), median of {args.rounds} | {p50['primary']:.2f} | shadow {p50['shadow']:.2f} | "
        f"{summary['shadow_p50_overhead']:+.1%} | ≤ +10 % |",
        f"| same, shadowing a 20 % sample (shadow_percent 20) | {p50['primary']:.2f} | shadow@20 {p50['shadow@20']:.2f} | "
        f"{summary['shadow_20_percent_p50_overhead']:+.1%} | ≤ +10 % |",
        f"| throughput at concurrency 8 (infer/s), best of {args.rounds} | {throughput['primary']:.1f} | "
        f"cascade {throughput['cascade']:.1f} | {summary['cascade_throughput_gain']:.2f}× | — |",
        f"| cascade: share answered by one member ({len(rows)} hold-out rows) | | | "
        f"{summary['cascade_short_circuit_share']:.1%} | — |",
        f"| cascade: DECISION agreement with always-full | | | {summary['cascade_decision_agreement']:.2%} | ≥ 99.5 % |",
        "",
        "perf_analyzer runs (gRPC, batch 1, 200 hold-out rows as input data): "
        f"`{light['primary'][0]['command']}`; for throughput `{loaded['primary'][0]['command']}`.",
        "",
        "Shadow sends the primary's answer to the client first (the response sender of a non-decoupled "
        "model), then runs the candidate inside the same execute and compares.",
    ]
    note = (
        "Embedded Triton 2.51.0; primary = credit_default (fan-out), candidate = credit_candidate. "
        "Policies switched by config reload on one server."
    )
    data = {"summary": summary, "light_load": light, "concurrency_8": loaded}
    print(record("credit_router", "credit_router: shadow overhead and cascade", command, data, body, note))


if __name__ == "__main__":
    main()
