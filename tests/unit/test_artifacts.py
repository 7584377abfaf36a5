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


def test_the_credit_install_copies_this_builds_files_and_removes_an_earlier_builds(tmp_path):
    from modelrepo.build.credit import MODELS_SUBDIR, install

    def produce(out):
        version = out / MODELS_SUBDIR / "credit_default_onehop" / "1"
        version.mkdir(parents=True)
        (version / "members.onnx").write_text("graph")
        (out / MODELS_SUBDIR / "credit_default_onehop" / "config.pbtxt").write_text("name: 'x'")
        (out / "build_report.md").write_text("report")
        return {}

    step = run_step("credit_ensemble", tmp_path / "cache", {"v": 2}, produce)
    (step.output_dir / MODELS_SUBDIR / "credit_default_onehop" / "1" / "model.onnx").write_text("left in the cache")
    installed = tmp_path / "repository" / "credit_default_onehop" / "1"
    installed.mkdir(parents=True)
    for name, text in (("model.py", "shim"), ("model.onnx", "an earlier build's")):
        (installed / name).write_text(text)
    (tmp_path / "repository" / "credit_default").mkdir()

    install(step.output_dir, tmp_path / "repository")
    assert sorted(p.name for p in installed.iterdir()) == ["members.onnx", "model.py"]
    assert (installed / "model.py").read_text() == "shim"
    assert (tmp_path / "repository" / "credit_default" / "build_report.md").read_text() == "report"


def test_a_rebuild_removes_what_the_previous_build_wrote_and_this_one_does_not(tmp_path):
    def produce(names):
        def write(out):
            for name in names:
                (out / name).write_text(name)
            return {}
        return write

    run_step("s", tmp_path / "out", {"v": 1}, produce(["model.onnx", "a.json"]))
    (tmp_path / "out" / "model.py").write_text("committed, never written by the step")
    run_step("s", tmp_path / "out", {"v": 2}, produce(["members.onnx", "a.json"]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != STAMP_FILENAME) == ["a.json", "members.onnx", "model.py"]
    assert read_stamp(tmp_path / "out")["files"] == ["a.json", "members.onnx"]
