from __future__ import annotations

import pytest

from modelrepo.build.artifacts import STAMP_FILENAME, read_stamp, run_step


def producer(calls):
    def produce(out):
        calls.append(out)
        (out / "artifact.txt").write_text(f"built {len(calls)}")
        return {"calls": len(calls)}

    return produce


def test_second_run_with_the_same_inputs_is_skipped(tmp_path):
    calls = []
    first = run_step("s", tmp_path / "v", {"a": 1}, producer(calls))
    second = run_step("s", tmp_path / "v", {"a": 1}, producer(calls))
    assert not first.cached and second.cached and len(calls) == 1
    assert second.report == {"calls": 1}
    assert (tmp_path / "v" / "artifact.txt").read_text() == "built 1"


def test_changed_inputs_or_a_missing_artifact_rebuild(tmp_path):
    calls = []
    run_step("s", tmp_path / "v", {"a": 1}, producer(calls))
    assert not run_step("s", tmp_path / "v", {"a": 2}, producer(calls)).cached
    (tmp_path / "v" / "artifact.txt").unlink()
    assert not run_step("s", tmp_path / "v", {"a": 2}, producer(calls)).cached
    assert len(calls) == 3


def test_a_failed_step_leaves_no_stamp(tmp_path):
    run_step("s", tmp_path / "v", {"a": 1}, producer([]))

    def broken(out):
        (out / "artifact.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_step("s", tmp_path / "v", {"a": 2}, broken)
    assert read_stamp(tmp_path / "v") is None
    assert not (tmp_path / "v" / STAMP_FILENAME).exists()
    assert not run_step("s", tmp_path / "v", {"a": 1}, producer([])).cached
