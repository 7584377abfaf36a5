"""Recipes for graphs: an ONNX file as it is, and a TorchScript module exported with torch.onnx.

Both take `--sample` (.npy for a one-input graph, .npz with one array per input). `--task
classification` serves the graph's one output as class scores (probabilities, or logits when rows
do not sum to 1) behind LABEL / PROBABILITIES; otherwise the graph's own outputs are served.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from modelrepo.build.add.recipes import AddError, AddRequest, Export, Recipe, register
from modelrepo.build.add.samples import read_arrays, require_sample
from modelrepo.python_backends.classifier_output import SCORES, class_probabilities

ONNX_OPSET = 17
TORCH_INPUT = "INPUT"


def rename_outputs(model, mapping: dict[str, str]) -> None:
    """Rename graph outputs (and every use of them) in an onnx.ModelProto."""
    for node in model.graph.node:
        node.output[:] = [mapping.get(name, name) for name in node.output]
        node.input[:] = [mapping.get(name, name) for name in node.input]
    for output in model.graph.output:
        output.name = mapping.get(output.name, output.name)


def scores_kind(scores: np.ndarray) -> str:
    rows_are_distributions = (scores >= 0).all() and (scores <= 1).all() and np.allclose(scores.sum(axis=1), 1, atol=1e-4)
    return "probabilities" if rows_are_distributions else "logits"


def graph_export(request: AddRequest, path: Path, sample: dict, reference: dict[str, np.ndarray], notes: dict) -> Export:
    """The task decides what is served: the graph's outputs, or class scores behind LABEL / PROBABILITIES."""
    import onnx

    task = request.task or "graph"
    if task not in ("graph", "classification"):
        raise AddError(f"--task {task} does not fit a graph source: use classification, or leave --task out")
    if task == "graph":
        return Export(path, task, sample, reference, notes=notes)
    if len(reference) != 1:
        raise AddError(f"--task classification needs a graph with one output (class scores), {path.name} has {len(reference)}")
    (output, scores), = reference.items()
    if scores.ndim != 2:
        raise AddError(f"--task classification needs class scores [batch, classes], {output!r} has shape {list(scores.shape)}")
    model = onnx.load(str(path))
    rename_outputs(model, {output: SCORES})
    onnx.save(model, str(path))
    kind = scores_kind(scores)
    labels = list(request.labels) if request.labels else [str(i) for i in range(scores.shape[1])]
    return Export(path, task, sample, {"PROBABILITIES": class_probabilities(scores, kind)}, labels=labels, scores=kind, notes=notes)


# ONNX ------------------------------------------------------------------------------------------------

def is_onnx(path: Path) -> bool:
    if not path.is_file() or zipfile.is_zipfile(path):
        return False
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError, RuntimeWarning):
        return False
    return len(model.graph.node) > 0 and len(model.opset_import) > 0


def onnx_session(path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for an unsupported op or opset
        raise AddError(f"onnxruntime cannot run {path.name} (an unsupported op or opset?): {str(err).splitlines()[0]}") from None


def export_onnx(request: AddRequest, work: Path) -> Export:
    import onnx

    source = Path(request.source)
    try:
        model = onnx.load(str(source), format="protobuf")
        onnx.checker.check_model(model)
    except Exception as err:  # the checker's own error types vary by onnx release
        raise AddError(f"{source.name} is not a valid ONNX model: {str(err).splitlines()[0]}") from None
    session = onnx_session(source)
    inputs = [node.name for node in session.get_inputs()]
    sample = read_arrays(require_sample(request.sample, "an ONNX model"), inputs[0] if len(inputs) == 1 else "")
    missing = [name for name in inputs if name not in sample]
    if missing:
        raise AddError(f"the sample does not fit {source.name}: it has no input {missing[0]!r} (graph inputs: {inputs})")
    types = {value.name: onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) for value in model.graph.input}
    feed = {name: sample[name].astype(types[name]) for name in inputs}
    try:
        answers = session.run(None, feed)
    except Exception as err:  # onnxruntime's InvalidArgument etc.: the sample's shape or type is wrong
        raise AddError(f"the sample does not fit {source.name}: {str(err).splitlines()[0]}") from None
    reference = dict(zip([node.name for node in session.get_outputs()], answers))
    path = work / "model.onnx"
    onnx.save(model, str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return graph_export(request, path, feed, reference, {"onnx_opset": opset})


register(Recipe("onnx", "an ONNX model file", is_onnx, export_onnx))


# TorchScript -----------------------------------------------------------------------------------------

def is_torchscript(path: Path) -> bool:
    """torch.jit.save writes a zip with the module's code/ (torch.save of a pickled module has none)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def export_torchscript(request: AddRequest, work: Path) -> Export:
    import torch

    source = Path(request.source)
    try:
        module = torch.jit.load(str(source), map_location="cpu").eval()
    except RuntimeError as err:
        raise AddError(f"{source.name} cannot be loaded by torch.jit.load: {str(err).splitlines()[0]}") from None
    sample = read_arrays(require_sample(request.sample, "a TorchScript model (it gives the input shapes)"), TORCH_INPUT)
    names = list(sample)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in names)
    try:
        with torch.no_grad():
            answer = module(*tensors)
    except Exception as err:  # TorchScript raises RuntimeError subclasses with the graph's own message
        raise AddError(f"the sample does not fit {source.name}: {str(err).strip().splitlines()[-1]}") from None
    answers = answer if isinstance(answer, (tuple, list)) else (answer,)
    outputs = ["OUTPUT"] if len(answers) == 1 else [f"OUTPUT_{i}" for i in range(len(answers))]
    path = work / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module, tensors, str(path), input_names=names, output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in names + outputs}, opset_version=ONNX_OPSET, dynamo=False,
        )
    reference = {name: value.numpy() for name, value in zip(outputs, answers)}
    return graph_export(request, path, sample, reference, {"onnx_opset": ONNX_OPSET, "exporter": "torch.onnx (TorchScript)"})


register(Recipe("torchscript", "a TorchScript file (torch.jit.save; --sample gives the input shapes)", is_torchscript, export_torchscript))
