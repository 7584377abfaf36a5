"""Server identity and the bundled perf_analyzer driving a real measurement against it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from modelrepo.pins import pins


def test_server_is_the_pinned_triton_release(http_client):
    assert http_client.get_server_metadata()["version"] == pins().triton_server


@pytest.mark.slow
def test_perf_analyzer_measures_text_embedding_over_grpc(server, admin_key, tmp_path):
    """`modelrepo perf-analyzer` adds the admin header itself (perf_analyzer reads the model config)."""
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [{"TEXT": {"content": ["a short review of green tea"], "shape": [1]}}]}))
    report = tmp_path / "perf.csv"
    cmd = [
        sys.executable, "-m", "modelrepo.cli", "perf-analyzer",
        "-m", "text_embedding", "-i", "grpc", "-u", server.grpc_url,
        "--input-data", str(data), "--concurrency-range", "2",
        "--measurement-interval", "1500", "--stability-percentage", "50", "--max-trials", "6",
        "-f", str(report),
    ]
    env = dict(os.environ, MODELREPO_ADMIN_KEY=admin_key)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = list(csv.DictReader(report.open()))
    assert float(row["Inferences/Second"]) > 0
    assert int(row["p99 latency"]) > 0
