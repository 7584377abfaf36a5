"""`modelrepo bench NAME`'s report and refusals (the measured path runs in tests/integration/test_added_models.py)."""

from __future__ import annotations

from modelrepo.perf.model_bench import main, report_body


def run(throughput: float, p50: float, p99: float) -> dict:
    return {"throughput_infer_per_s": throughput, "p50_ms": p50, "p99_ms": p99, "command": "modelrepo perf-analyzer -m m"}


def test_each_concurrency_is_the_median_and_range_of_its_runs_judged_against_the_budget():
    results = {1: [run(100, 5, 9), run(80, 6, 12), run(90, 5.5, 30)], 4: [run(300, 10, 20), run(310, 11, 25), run(290, 12, 22)]}
    body, data = report_body("m", results, 25.0, 300, "in.json")
    rows = [line for line in body if line.startswith("| 1 |") or line.startswith("| 4 |")]
    assert rows == [
        "| 1 | 90.0 (80.0–100.0) | 5.5 (5.0–6.0) | 12.0 (9.0–30.0) | 2 of 3 |",
        "| 4 | 300.0 (290.0–310.0) | 11.0 (10.0–12.0) | 22.0 (20.0–25.0) | 3 of 3 |",
    ]
    assert "p99 budget: 25 ms" in body[0] and "at least 300 requests" in body[0]
    assert data["points"]["4"]["p99_ms"]["median"] == 22.0 and len(data["points"]["1"]["runs"]) == 3


def test_without_a_budget_nothing_is_judged():
    body, _ = report_body("m", {2: [run(50, 1, 2)]}, None, 100, "in.json")
    assert "p99 budget: none stated" in body[0]
    assert "| 2 | 50.0 | 1.0 | 2.0 |  |" in body


def test_refusals_are_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["nosuch", "--model-repository", str(tmp_path)]) == 2
    assert "there is no model 'nosuch'" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    assert main(["m", "--runs", "0", "--model-repository", str(tmp_path)]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["m", "--input-data", str(tmp_path / "none.json"), "--model-repository", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.pbtxt").write_text('name: "s"\nbackend: "python"\nmodel_transaction_policy { decoupled: true }\n')
    assert main(["s", "--model-repository", str(tmp_path)]) == 2
    assert "s is decoupled" in capsys.readouterr().err
