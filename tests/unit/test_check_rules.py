"""`modelrepo check`: one broken copy of the repository per rule, and the message that names it."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from tritonclient.grpc.model_config_pb2 import TYPE_FP32, TYPE_INT32

from modelrepo.build import targets
from modelrepo.check import check_repository
from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.triton.model_config import read_config, write_config


def _copy(src, dst):
    # Graphs are linked (read-only use, 90 MB); everything else is a real copy the test may break.
    if str(src).endswith(".onnx"):
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture
def repo(tmp_path):
    target = tmp_path / "repo"
    shutil.copytree(MODEL_REPOSITORY, target, copy_function=_copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert check_repository(target) == []
    return target


def edit(repo, model, change):
    config = read_config(repo / model)
    change(config)
    write_config(repo / model, config)


def problems_with(repo, *fragments):
    found = check_repository(repo)
    matching = [p for p in found if all(f in p for f in fragments)]
    assert matching, f"no problem mentions {fragments}; got {found}"
    return matching


def test_ensemble_step_dtype_mismatch(repo):
    edit(repo, "sentiment_head", lambda c: setattr(c.input[0], "data_type", TYPE_INT32))
    problems_with(repo, "review_sentiment: step 2 (sentiment_head)", "data_type TYPE_INT32 != TYPE_FP32")


def test_ensemble_step_dims_mismatch(repo):
    edit(repo, "sentiment_head", lambda c: c.input[0].dims.__setitem__(0, 768))
    problems_with(repo, "review_sentiment", "dims [768] != [384]")


def test_ensemble_output_dtype_and_dims_must_match_the_producing_step(repo):
    def change(config):
        config.output[0].dims[0] = 512
    edit(repo, "text_embedding", change)
    problems_with(repo, "text_embedding: output EMBEDDING", "dims [512] != [384]")


def test_config_input_must_be_a_graph_input(repo):
    edit(repo, "minilm_encoder", lambda c: setattr(c.input[0], "name", "token_ids"))
    problems_with(repo, "minilm_encoder: version 1", "input 'token_ids' is not a input of model.onnx")
    problems_with(repo, "minilm_encoder: version 1", "model.onnx input 'input_ids' is not declared")


def test_config_dtype_and_rank_must_match_the_graph(repo):
    def change(config):
        config.input[1].data_type = TYPE_INT32
        config.output[0].dims.append(1)
    edit(repo, "minilm_encoder", change)
    problems_with(repo, "minilm_encoder", "input attention_mask data_type TYPE_INT32 but model.onnx has TYPE_INT64")
    problems_with(repo, "minilm_encoder", "output embedding dims [384, 1]", "do not match model.onnx shape")


def test_every_version_of_a_model_is_checked_against_its_graph(repo):
    edit(repo, "credit_members_fused", lambda c: setattr(c.output[3], "data_type", TYPE_INT32))
    found = problems_with(repo, "credit_members_fused", "data_type TYPE_INT32 but model.onnx has TYPE_FP32")
    assert {p.split(":")[1].strip() for p in found} == {"version 1", "version 2"}


def test_preferred_batch_size_above_max_batch_size(repo):
    edit(repo, "sentiment_head", lambda c: c.dynamic_batching.preferred_batch_size.append(1024))
    problems_with(repo, "sentiment_head", "preferred_batch_size 1024 > max_batch_size")


def test_preferred_batch_size_outside_the_engine_profile(repo):
    plan_config = targets.render_config(read_config(repo / "minilm_encoder"), "tensorrt", "fp32")
    plan_config.dynamic_batching.preferred_batch_size.append(48)
    write_config(repo / "minilm_encoder", plan_config)
    version = repo / "minilm_encoder" / "1"
    (version / "model.plan").write_bytes(b"plan")
    profile = targets.EngineProfile(1, 16, 32).as_dict()
    (version / targets.ENGINE_METADATA).write_text(json.dumps({"profile": profile}))
    problems_with(repo, "minilm_encoder", "preferred_batch_size 48 is outside engine profile batch range 1..32")
    problems_with(repo, "minilm_encoder", "max_batch_size 64 is outside engine profile")


def test_native_platform_without_its_artifact(repo):
    write_config(repo / "minilm_encoder", targets.render_config(read_config(repo / "minilm_encoder"), "onnxruntime", "fp32"))
    assert check_repository(repo) == []  # the ONNX graph is there and matches
    (repo / "minilm_encoder" / "1" / "model.onnx").unlink()
    problems_with(repo, "minilm_encoder: version 1", "platform onnxruntime_onnx needs model.onnx, which is missing")


def test_python_model_without_model_py_or_version_folder(repo):
    (repo / "sentiment_head" / "1" / "model.py").unlink()
    shutil.rmtree(repo / "credit_aggregate" / "1")
    problems_with(repo, "sentiment_head: version 1", "python backend without model.py")
    problems_with(repo, "credit_aggregate", "no version folder")


def test_missing_onnx_file_parameter_and_label_file(repo):
    edit(repo, "minilm_encoder", lambda c: c.parameters["onnx_file"].__setattr__("string_value", "int8.onnx"))
    (repo / "review_sentiment" / "labels.txt").unlink()
    problems_with(repo, "minilm_encoder", "parameter onnx_file int8.onnx is missing")
    problems_with(repo, "review_sentiment", "label_filename labels.txt is missing")


def test_python_models_must_run_on_cpu_instances(repo):
    edit(repo, "sentiment_head", lambda c: setattr(c.instance_group[0], "kind", c.instance_group[0].KIND_GPU))
    problems_with(repo, "sentiment_head", "instance_group kind must be KIND_CPU")


def test_every_dynamically_batched_model_has_a_bounded_queue(repo):
    edit(repo, "minilm_encoder", lambda c: c.dynamic_batching.ClearField("default_queue_policy"))
    assert problems_with(repo, "minilm_encoder", "default_queue_policy must bound the queue", "got 0 and 0")


def test_a_front_step_may_leave_its_queue_to_a_later_bounded_step(repo):
    # minilm_tokenizer ships unbounded: in both text ensembles minilm_encoder's bounded queue guards it
    assert not read_config(repo / "minilm_tokenizer").dynamic_batching.HasField("default_queue_policy")
    edit(repo, "minilm_encoder", lambda c: c.dynamic_batching.ClearField("default_queue_policy"))
    # review_sentiment still has sentiment_head after it, text_embedding has nothing: the tokenizer is refused
    assert problems_with(repo, "minilm_tokenizer", "every ensemble using it has a later bounded step")


def test_a_bls_model_may_leave_its_queue_to_the_bounded_models_it_names(repo):
    # credit_router ships unbounded, naming the models it calls as its queue guards
    assert not read_config(repo / "credit_router").dynamic_batching.HasField("default_queue_policy")
    edit(repo, "credit_router", lambda c: c.parameters["queue_guards"].__setattr__("string_value", "credit_default,no_such_model"))
    assert problems_with(repo, "credit_router", "must bound the queue", "queue_guards parameter names the bounded models")
    edit(repo, "credit_router", lambda c: c.parameters.pop("queue_guards"))
    assert problems_with(repo, "credit_router", "must bound the queue")


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_metrics_export_interval_is_a_number_of_seconds(repo, value):
    edit(repo, "credit_aggregate", lambda c: c.parameters["metrics_export_interval_s"].__setattr__("string_value", value))
    problems_with(repo, "credit_aggregate", "metrics_export_interval_s", repr(value), "number of seconds ≥ 0")


@pytest.mark.parametrize("value", ["some", "-1", "nan", "inf"])
def test_a_ragged_run_cost_is_a_number_of_tokens(repo, value):
    edit(repo, "minilm_encoder", lambda c: c.parameters["ragged_run_cost_tokens"].__setattr__("string_value", value))
    problems_with(repo, "minilm_encoder", "ragged_run_cost_tokens", repr(value), "number of tokens ≥ 0")


def test_the_export_interval_parses_as_the_stub_reads_it():
    from modelrepo.python_backends.exported_metrics import export_interval

    assert export_interval("0") == 0 and export_interval("2.5") == 2.5
    with pytest.raises(ValueError, match="metrics_export_interval_s 'soon' must be a number of seconds"):
        export_interval("soon")


def test_a_model_running_its_steps_code_carries_their_parameters(repo):
    # credit_default_onehop runs credit_aggregate's decision code: a threshold changed there alone is refused
    edit(repo, "credit_aggregate", lambda c: c.parameters["decline_at"].__setattr__("string_value", "0.6"))
    problems_with(repo, "credit_default_onehop", "parameter decline_at '0.5' != '0.6' in credit_aggregate", "set it in both")
    edit(repo, "credit_default_onehop", lambda c: c.parameters["decline_at"].__setattr__("string_value", "0.6"))
    assert check_repository(repo) == []
    edit(repo, "credit_default_onehop", lambda c: c.parameters.pop("drift_window"))
    problems_with(repo, "credit_default_onehop", "parameter drift_window is missing", "credit_preprocess's code")
    edit(repo, "credit_default_onehop",
         lambda c: c.parameters["parameters_from"].__setattr__("string_value", "credit_preprocess,no_such_step"))
    problems_with(repo, "credit_default_onehop", "parameters_from names no_such_step, which is not in the repository")
