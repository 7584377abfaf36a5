"""Server identity and the bundled perf_analyzer driving a real measurement against it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from modelrepo.perf import analyzer
from modelrepo.pins import pins


def test_server_is_the_pinned_triton_release(http_client):
    assert http_client.get_server_metadata()["version"] == pins().triton_server


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_measures_text_embedding_with_the_admin_key(server, admin_key, tmp_path, protocol):
    """`modelrepo perf-analyzer` adds the admin header itself (`-H`, for the protocol): perf_analyzer
    reads the model config and, for its "Server" columns, the statistics, both restricted."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [{"TEXT": {"content": ["a short review of green tea"], "shape": [1]}}]}))
    report = tmp_path / "perf.csv"
    args = [
        "-m", "text_embedding", "-i", protocol, "-u", server.grpc_url if protocol == "grpc" else server.http_url,
        "--input-data", str(data), "--concurrency-range", "2",
        "--measurement-interval", "1500", "--stability-percentage", "50", "--max-trials", "6",
        "-f", str(report),
    ]
    env = dict(os.environ, MODELREPO_ADMIN_KEY=admin_key)
    out = subprocess.run([sys.executable, "-m", "modelrepo.cli", "perf-analyzer", *args], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = list(csv.DictReader(report.open()))
    assert float(row["Inferences/Second"]) > 0
    assert int(row["p99 latency"]) > 0
    assert int(row["Server Compute Infer"]) > 0  # from the statistics API, read with the key
    # the binary itself, without the header: refused at its first restricted call
    bare = subprocess.run(analyzer.command(args), capture_output=True, text=True, timeout=180, env=analyzer.environment())
    assert bare.returncode != 0
    assert "restricted, expecting header" in bare.stdout + bare.stderr
