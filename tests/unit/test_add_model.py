"""`modelrepo add` / `remove` without a server: recognition, export with parity, what is written,
`modelrepo check` on it, and every refusal (one sentence, exit 2, the repository untouched)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelrepo.build.add.assemble import parity
from modelrepo.build.add.command import MANIFEST, add_model, remove_model
from modelrepo.build.add.recipes import AddError, AddRequest, Export, recipe_for
from modelrepo.check import check_repository
from modelrepo.cli import main
from modelrepo.python_backends.classifier_output import ClassifierOutput
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.errors import InputError
from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.served_graph import ServedGraph, check_tensor
from modelrepo.python_backends.text_tokenizer import TextTokenizer
from modelrepo.perf.tune_command import default_input_data
from modelrepo.triton.model_config import read_config
from tests import added_models


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    cnn = added_models.torchscript_cnn(folder)
    return {
        "iris": added_models.sklearn_pipeline(folder),
        "diabetes": added_models.sklearn_regressor(folder),
        "cancer": added_models.xgboost_classifier(folder),
        "lgbm": added_models.lightgbm_regressor(folder),
        "cnn": cnn,
        "cnn_onnx": added_models.Made(added_models.onnx_from_torchscript(cnn, folder), cnn.sample, cnn.model, cnn.rows),
    }


@pytest.fixture
def repository(tmp_path):
    path = tmp_path / "model_repository"
    path.mkdir()
    return path


def add(repository, name, made, **options):
    return add_model(AddRequest(name, made.source, sample=made.sample, **options), repository, log=lambda *_: None)


def context_of(repository, model) -> ModelContext:
    """What Triton hands a model's handler at load: its version folder and config parameters."""
    parameters = {k: {"string_value": v.string_value} for k, v in read_config(repository / model).parameters.items()}
    return ModelContext(model, repository / model / "1", {"parameters": parameters})


def run_graph(repository, model, rows):
    return OnnxRunner(repository / model / "1" / "model.onnx").run(rows)


@pytest.mark.parametrize("key, kind", [("iris", "sklearn"), ("diabetes", "sklearn"), ("cancer", "xgboost"),
                                       ("lgbm", "lightgbm"), ("cnn", "torchscript"), ("cnn_onnx", "onnx")])
def test_sources_are_recognised_by_what_they_are(made, key, kind):
    assert recipe_for(made[key].source).kind == kind


def test_a_scikit_learn_pipeline_becomes_a_checked_classifier_ensemble(made, repository):
    iris = made["iris"]
    report = add(repository, "iris", iris)
    assert sorted(p.name for p in repository.iterdir()) == ["iris", "iris_labels", "iris_model"]
    assert check_repository(repository) == []
    ensemble = read_config(repository / "iris")
    assert ensemble.platform == "ensemble" and [o.name for o in ensemble.output] == ["LABEL", "PROBABILITIES"]
    assert (repository / "iris" / "labels.txt").read_text().split() == list(iris.model.classes_)
    graph = read_config(repository / "iris_model")
    assert graph.dynamic_batching.default_queue_policy.max_queue_size > 0 and len(graph.model_warmup) == 1
    assert (repository / "iris_model" / "warmup" / "INPUT").read_bytes() == iris.rows[0].tobytes()
    scores = run_graph(repository, "iris_model", {"INPUT": iris.rows})["SCORES"]
    np.testing.assert_allclose(scores, iris.model.predict_proba(iris.rows), atol=1e-4)
    assert report["parity_PROBABILITIES_max_abs_diff"] <= 1e-4 and report["top_label_agreement"] == 1.0
    assert {"latency_batch_1_median_ms", "latency_batch_64_median_ms", "graph_bytes"} <= set(report)
    manifest = json.loads((repository / "iris" / MANIFEST).read_text())
    assert manifest["models"] == ["iris", "iris_model", "iris_labels"] and manifest["recipe"] == "sklearn"


def test_regressors_are_one_model_answering_prediction(made, repository):
    for name, key in (("diabetes", "diabetes"), ("diabetes_lgbm", "lgbm")):
        source = made[key]
        add(repository, name, source)
        config = read_config(repository / name)
        assert [o.name for o in config.output] == ["PREDICTION"] and config.backend == "python"
        ours = run_graph(repository, name, {"INPUT": source.rows})["PREDICTION"][:, 0]
        np.testing.assert_allclose(ours, source.model.predict(source.rows), rtol=1e-4, atol=1e-3)
    assert check_repository(repository) == []


def test_an_xgboost_booster_answers_both_class_probabilities(made, repository):
    cancer = made["cancer"]
    add(repository, "cancer", cancer, labels=("malignant", "benign"))
    import xgboost

    positive = cancer.model.predict(xgboost.DMatrix(cancer.rows))
    scores = run_graph(repository, "cancer_model", {"INPUT": cancer.rows})["SCORES"]
    np.testing.assert_allclose(scores, np.stack([1 - positive, positive], axis=1), atol=1e-4)
    assert (repository / "cancer" / "labels.txt").read_text().split() == ["malignant", "benign"]


def test_torchscript_and_onnx_keep_the_graph_contract(made, repository):
    import torch

    add(repository, "cnn", made["cnn"])
    add(repository, "cnn_onnx", made["cnn_onnx"])
    torchscript, onnx_file = read_config(repository / "cnn"), read_config(repository / "cnn_onnx")
    assert [(i.name, list(i.dims)) for i in torchscript.input] == [("INPUT", [1, 8, 8])]
    assert [(i.name, list(i.dims)) for i in onnx_file.input] == [("pixels", [1, 8, 8])]  # names read from the graph
    assert [o.name for o in onnx_file.output] == ["logits"]
    expected = made["cnn"].model(torch.from_numpy(made["cnn"].rows)).detach().numpy()
    np.testing.assert_allclose(run_graph(repository, "cnn", {"INPUT": made["cnn"].rows})["OUTPUT"], expected, atol=1e-4)
    assert check_repository(repository) == []


def test_a_graph_served_as_a_classifier_softmaxes_its_logits(made, repository):
    import torch

    add(repository, "cnn_classes", made["cnn"], task="classification", labels=("cat", "dog", "owl"))
    logits = made["cnn"].model(torch.from_numpy(made["cnn"].rows)).detach().numpy()
    labels_step = ClassifierOutput.from_context(context_of(repository, "cnn_classes_labels"))
    (answer,) = labels_step.execute_batch([{"SCORES": logits}])
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(answer["PROBABILITIES"], expected, atol=1e-6)
    assert [label.decode() for label in answer["LABEL"][:, 0]] == [("cat", "dog", "owl")[i] for i in expected.argmax(axis=1)]


def test_remove_takes_out_everything_add_wrote(made, repository):
    add(repository, "iris", made["iris"])
    (repository / "shipped" / "1").mkdir(parents=True)
    (repository / "shipped" / "config.pbtxt").write_text('name: "shipped"\n')
    assert remove_model("iris", repository, log=lambda *_: None) == ["iris", "iris_model", "iris_labels"]
    assert [p.name for p in repository.iterdir()] == ["shipped"]
    with pytest.raises(AddError, match="was not written by `modelrepo add`"):
        remove_model("shipped", repository)


def test_force_replaces_only_what_add_wrote(made, repository):
    add(repository, "iris", made["iris"])
    with pytest.raises(AddError, match="already exists"):
        add(repository, "iris", made["iris"])
    add(repository, "iris", made["diabetes"], force=True)  # a classifier replaced by a regressor: no step left behind
    assert sorted(p.name for p in repository.iterdir()) == ["iris"]
    (repository / "taken_model" / "1").mkdir(parents=True)
    with pytest.raises(AddError, match="was not written by `modelrepo add`"):
        add(repository, "taken", made["iris"], force=True)


def refusal(capsys, repository, *argv):
    before = sorted(p.name for p in repository.parent.iterdir())
    code = main(["add", *map(str, argv), "--model-repository", str(repository)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert sorted(p.name for p in repository.parent.iterdir()) == before  # no temp folder left behind
    return err


def test_refusals_are_one_sentence_and_write_nothing(made, repository, tmp_path, capsys):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("just words\n")
    assert "is not a model" in refusal(capsys, repository, "x", text_file)
    assert "not a path outside" in refusal(capsys, repository, "../evil", made["iris"].source, "--sample", made["iris"].sample)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((3, 7), dtype=np.float32))
    assert "does not fit" in refusal(capsys, repository, "iris", made["iris"].source, "--sample", wrong)
    assert "does not fit" in refusal(capsys, repository, "cnn", made["cnn"].source, "--sample", wrong)
    assert "--sample FILE is required" in refusal(capsys, repository, "iris", made["iris"].source)
    assert "--task regression does not fit" in refusal(capsys, repository, "iris", made["iris"].source, "--sample",
                                                       made["iris"].sample, "--task", "regression")
    assert list(repository.iterdir()) == []
    main(["add", "iris", str(made["iris"].source), "--sample", str(made["iris"].sample), "--model-repository", str(repository)])
    assert "already exists" in refusal(capsys, repository, "iris", made["iris"].source, "--sample", made["iris"].sample)


def test_a_graph_without_a_batch_axis_is_refused(made, repository, tmp_path, capsys):
    import torch

    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(made["cnn"].model, (torch.from_numpy(made["cnn"].rows[:1]),), str(fixed), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    one = tmp_path / "one.npy"
    np.save(one, made["cnn"].rows[:1])
    assert "no batch dimension" in refusal(capsys, repository, "fixed", fixed, "--sample", one)


def test_a_parity_failure_refuses_the_model(tmp_path):
    export = Export(tmp_path / "g.onnx", "classification", {}, {"PROBABILITIES": np.array([[0.2, 0.8]])})
    assert parity(export, {"PROBABILITIES": np.array([[0.2, 0.8]], dtype=np.float32)})["parity_PROBABILITIES_max_abs_diff"] < 1e-7
    with pytest.raises(AddError, match="parity failure: served PROBABILITIES"):
        parity(export, {"PROBABILITIES": np.array([[0.3, 0.7]], dtype=np.float32)})
    embedding = Export(tmp_path / "g.onnx", "embedding", {}, {"EMBEDDING": np.array([[1.0, 0.0]])})
    with pytest.raises(AddError, match="parity failure"):
        parity(embedding, {"EMBEDDING": np.array([[0.99, 0.14]], dtype=np.float32)})


def test_tune_feeds_the_sample_add_kept(made, repository, tmp_path):
    add(repository, "iris", made["iris"])
    data = json.loads(open(default_input_data(repository, "iris", tmp_path)).read())["data"]
    assert data[0]["INPUT"] == {"content": pytest.approx(made["iris"].rows[0].tolist()), "shape": [4]}


def test_inputs_are_checked_naming_input_item_and_rule():
    rule = (np.dtype(np.float32), [3])
    with pytest.raises(InputError, match=r"input 'X' \(batch item 1\): must contain only finite numbers"):
        check_tensor("X", np.array([[1, 2, 3], [1, np.nan, 3]], dtype=np.float32), *rule)
    with pytest.raises(InputError, match=r"input 'X': each batch item must have shape \[3\], got \[2\]"):
        check_tensor("X", np.ones((1, 2), dtype=np.float32), *rule)
    with pytest.raises(InputError, match="must be float32, got int64"):
        check_tensor("X", np.ones((1, 3), dtype=np.int64), *rule)


def test_a_bad_request_is_refused_alone_and_counted(made, repository):
    add(repository, "cnn", made["cnn"])
    config = {"input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [1, 8, 8]}]}
    context = ModelContext("cnn", repository / "cnn" / "1", config)
    graph = ServedGraph.from_context(context)
    good, bad = made["cnn"].rows[:2], np.full((1, 1, 8, 8), np.inf, dtype=np.float32)
    answers = graph.execute_batch([{"INPUT": good}, {"INPUT": bad}, {"INPUT": made["cnn"].rows[:1, :, :4]}])
    assert answers[0]["OUTPUT"].shape == (2, 3)
    assert isinstance(answers[1], InputError) and isinstance(answers[2], InputError)
    assert context.metrics.value("modelrepo_model_rejected_inputs_total", model="cnn", input="INPUT") == 2


def test_classifier_metrics_and_confidence_drift(tmp_path):
    from modelrepo.python_backends.drift import DriftReference
    from modelrepo.python_backends.metrics import InMemoryRegistry
    from modelrepo.python_backends.served_graph import DriftMonitor

    metrics = InMemoryRegistry()
    reference = {"CONFIDENCE": {"0": DriftReference.from_training(np.linspace(0.5, 1.0, 200))}}
    step = ClassifierOutput("m", ["a", "b"], "probabilities", metrics, DriftMonitor("m", reference, metrics, window=100))
    step.classify(np.tile(np.array([[0.99, 0.01]], dtype=np.float32), (100, 1)))  # every answer now very confident
    assert metrics.value("modelrepo_model_predictions_total", model="m", label="a") == 100
    step.classify(np.array([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7]], dtype=np.float32))  # one batch, both labels
    assert metrics.value("modelrepo_model_predictions_total", model="m", label="a") == 101
    assert metrics.value("modelrepo_model_predictions_total", model="m", label="b") == 2
    assert len(step.confidence.observations) == 103  # one observation per row
    assert metrics.value("modelrepo_model_psi", model="m", tensor="CONFIDENCE", column="0") > 0.25


def test_a_transformers_folder_is_read_without_loading_weights_first(tmp_path, repository, capsys):
    from modelrepo.build.add.text import max_tokens, sentence_transformers_pooling

    folder = tmp_path / "encoder"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertForTokenClassification"], "max_position_embeddings": 512}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert recipe_for(folder).kind == "transformers" and max_tokens(folder, json.loads((folder / "config.json").read_text())) == 128
    assert sentence_transformers_pooling(folder) is None  # no modules.json: a plain transformers folder
    modules = [{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    for settings, mode in (({"pooling_mode": "max"}, "max"), ({"pooling_mode_cls_token": True}, "cls")):  # ST 6 and earlier
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(settings))
        assert sentence_transformers_pooling(folder) == (mode, True)
    assert "has no tokenizer.json" in refusal(capsys, repository, "tokens", folder)
    (folder / "tokenizer.json").write_text("{}")
    # with modules.json it is a sentence-transformers folder: an embedding, not per-token labels
    assert "--task token_classification does not fit encoder" in refusal(capsys, repository, "tokens", folder,
                                                                          "--task", "token_classification")


def test_an_onnx_graph_with_several_inputs_takes_an_npz_sample(repository, tmp_path):
    blend = added_models.two_input_onnx(tmp_path)
    add(repository, "blend", blend)
    config = read_config(repository / "blend")
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [2, 4]), ("weights", [8])]
    assert [(t.name, list(t.dims), t.HasField("reshape")) for t in config.output] == [("score", [1], False), ("peak", [1], True)]
    assert check_repository(repository) == []


def test_precision_refusals(made, repository, capsys):
    iris = made["iris"]
    base = ("iris", iris.source, "--sample", iris.sample)
    assert "fp16 is not available" in refusal(capsys, repository, *base, "--precision", "fp16")
    assert "go with --precision int8" in refusal(capsys, repository, *base, "--calibration-data", iris.sample)
    assert "needs --calibration-data" in refusal(capsys, repository, "cnn", made["cnn_onnx"].source, "--sample",
                                                 made["cnn"].sample, "--precision", "int8")
    assert "has no MatMul node to quantize" in refusal(capsys, repository, *base, "--precision", "int8",
                                                       "--calibration-data", iris.sample)


@pytest.mark.slow
def test_int8_transformers_classifier_within_its_budget(repository, tmp_path):
    from modelrepo.build.quantize import qdq_summary

    made = added_models.tiny_bert_classifier(tmp_path)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(f"{text} ({i})" for i, text in enumerate(added_models.TEXTS * 4)))
    report = add(repository, "reviews", made, precision="int8", calibration_data=calibration,
                 accuracy_budget="cosine=0.99,accuracy_drop=0.0")
    graph = repository / "reviews_model" / "1" / "model.onnx"
    assert qdq_summary(graph)["quantize_linear_nodes"] > 0 and report["nodes_int8"] > 0
    assert report["int8_vs_fp32_mean_cosine"] >= 0.99 and report["int8_vs_fp32_top_class_changed"] == 0.0
    assert json.loads((repository / "reviews" / MANIFEST).read_text())["precision"] == "int8"
    assert check_repository(repository) == []


def test_an_op_onnxruntime_cannot_run_is_refused(repository, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    np.save(tmp_path / "rows.npy", np.ones((2, 2), dtype=np.float32))
    assert "onnxruntime cannot run custom.onnx" in refusal(capsys, repository, "custom", tmp_path / "custom.onnx",
                                                           "--sample", tmp_path / "rows.npy")


def test_a_token_classifier_answers_a_label_per_text_token(repository, tmp_path):
    from modelrepo.python_backends.token_labels import TokenLabels

    made = added_models.tiny_bert_token_classifier(tmp_path)
    assert recipe_for(made.source).kind == "transformers"
    report = add(repository, "entities", made)
    assert report["parity_TOKEN_PROBABILITIES_max_abs_diff"] <= 1e-4 and report["token_label_agreement"] == 1.0
    ensemble = read_config(repository / "entities")
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == ["entities_tokenizer", "entities_model", "entities_labels"]
    assert [output.name for output in ensemble.output] == ["TOKENS", "TOKEN_LABELS", "TOKEN_PROBABILITIES"]
    assert all(spec.allow_ragged_batch for spec in read_config(repository / "entities_labels").input)
    # the labels step as Triton will load it, on what the tokenizer and graph steps answer
    labeller = TokenLabels.from_context(context_of(repository, "entities_labels"))
    tokenizer = TextTokenizer.from_context(context_of(repository, "entities_tokenizer"))
    expected = added_models.expected_token_labels(made, made.rows)
    for text, want in zip(made.rows, expected):
        (tokens,) = tokenizer.execute_batch([{"TEXT": np.array([[text.encode()]], dtype=object)}])
        scores = run_graph(repository, "entities_model", tokens)["SCORES"]
        (answer,) = labeller.execute_batch([{"SCORES": scores, **tokens}])
        assert [t.decode() for t in answer["TOKENS"][0]] == [token for token, _, _ in want]
        assert [t.decode() for t in answer["TOKEN_LABELS"][0]] == [label for _, label, _ in want]
        np.testing.assert_allclose(answer["TOKEN_PROBABILITIES"][0], [p for _, _, p in want], atol=1e-4)
    assert check_repository(repository) == []
    assert main(["remove", "entities", "--model-repository", str(repository)]) == 0
    assert not any(repository.iterdir())


def test_the_latency_budget_is_stated_on_the_model_and_in_its_alert_rule(made, repository, capsys):
    import yaml

    from modelrepo.build.add.monitoring import BUDGET_SERIES, RULE_FILENAME

    argv = ["add", "iris", str(made["iris"].source), "--sample", str(made["iris"].sample), "--latency-budget-ms", "40",
            "--model-repository", str(repository)]
    assert main(argv) == 0
    assert read_config(repository / "iris").parameters["latency_budget_ms"].string_value == "40"
    rule = yaml.safe_load((repository / "iris" / RULE_FILENAME).read_text())
    assert rule["spec"]["groups"][0]["rules"] == [{"record": BUDGET_SERIES, "expr": "vector(0.04)", "labels": {"model": "iris"}}]
    assert check_repository(repository) == []
    assert "--latency-budget-ms must be a positive number" in refusal(capsys, repository, "iris2", made["iris"].source,
                                                                       "--latency-budget-ms", "0")
