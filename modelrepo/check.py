"""`modelrepo check`: static validation of a model repository, without starting a server.

It catches what would otherwise surface as a load failure or a runtime error. Every message names
the model, the field and the rule:
- every config parses, and its name matches its folder;
- ensembles: each step's model exists, its inputs are produced earlier with the same dtype and dims,
  every ensemble output is produced, with the declared dtype and dims;
- ONNX models (Python runner or onnxruntime platform): config inputs/outputs match the graph's names,
  dtypes and ranks;
- batching: batchable models have dynamic batching with a bounded queue (max_queue_size > 0 and a
  queue timeout: overload is refused with 503 / UNAVAILABLE, never queued without bound). The
  exception is a step whose queue another model guards (a queue policy turns off Triton's payload
  prefetching, which stalls bursts in 500 ms steps; see README "Failure modes"): an ensemble's step
  where every ensemble using it has a later step with a bounded queue, or a BLS model whose
  `queue_guards` parameter names the models it calls, each bounded (an ensemble: through one of its
  steps); preferred sizes ≤ max_batch_size and, for
  TensorRT plans, inside the engine's optimisation profile (engine.json written by the build);
- artifacts: model.py for Python models, the graph/plan file for native platforms, label files;
- a Python model's `metrics_export_interval_s`, where set, is a number of seconds ≥ 0, and its
  `ragged_run_cost_tokens` (the ONNX runner's length-aware batching) a number of tokens ≥ 0;
- a model that runs other models' code in one stub names them in its `parameters_from` parameter and
  carries each of their parameters with the same value (credit_default_onehop: a threshold or metric
  setting changed on a step and not on it would make the two paths answer differently);
- engines built elsewhere: a TensorRT plan or TensorRT-LLM engine a config-only render left to build on a
  GPU host is *pending* (`pending_engines` lists them with the command), not missing; a TensorRT-LLM
  engine's limits (engine_limits.json) must equal its config's batch size, so engine, config and the
  ensemble agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelrepo.python_backends.exported_metrics import METRICS_EXPORT_INTERVAL, export_interval
from modelrepo.python_backends.batching import RAGGED_RUN_COST, run_cost_tokens
from modelrepo.triton.model_config import ModelConfig, model_config_pb2, parameter, repository_models

PLATFORM_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
ONNX_RUNNER_FILE = "model.onnx"
ENGINE_METADATA = "engine.json"
RENDER_RECORD = "target.json"  # written by `modelrepo build MODEL --target ...` (build/model_build.py)
TRTLLM_LIMITS = "engine_limits.json"  # written by the tensorrt-llm render (build/tensorrt_llm_engine.py)
DataType = model_config_pb2.DataType


def _dtype_name(value: int) -> str:
    return DataType.Name(value)


def _dims_agree(a, b) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def _versions(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()) if model_dir.exists() else []


def check_model(name: str, config: ModelConfig, models: dict[str, ModelConfig], model_dir: Path) -> list[str]:
    problems = []
    if config.name and config.name != name:
        problems.append(f"{name}: config name {config.name!r} differs from its folder name")
    for output in config.output:
        if output.label_filename and not (model_dir / output.label_filename).exists():
            problems.append(f"{name}: output {output.name} label_filename {output.label_filename} is missing")
    if config.platform == "ensemble":
        return problems + check_ensemble(name, config, models)
    problems += check_batching(name, config, model_dir, queue_guards(name, models))
    problems += check_parameters_from(name, config, models)
    problems += check_artifacts(name, config, model_dir)
    if config.backend == "python":
        for group in config.instance_group:
            if group.kind not in (group.KIND_CPU, group.KIND_AUTO):
                problems.append(f"{name}: instance_group kind must be KIND_CPU for a Python model here (cpu target)")
        for key, parse in ((METRICS_EXPORT_INTERVAL, export_interval), (RAGGED_RUN_COST, run_cost_tokens)):
            value = parameter(config, key)
            if value is not None:
                try:
                    parse(value)
                except ValueError as err:
                    problems.append(f"{name}: {err}")
    return problems


def bounded_queue(config: ModelConfig) -> bool:
    policy = config.dynamic_batching.default_queue_policy
    return policy.max_queue_size > 0 and policy.default_timeout_microseconds > 0


QUEUE_GUARDS = "queue_guards"  # a BLS model's parameter: the models it calls, whose bounded queues refuse overload
PARAMETERS_FROM = "parameters_from"  # the models whose code (and so parameters) a model runs in one stub


def guarded(model: str, models: dict[str, ModelConfig]) -> bool:
    """`model` refuses overload itself: a bounded queue, or (an ensemble) a step with one."""
    config = models.get(model)
    if config is None:
        return False
    if config.platform == "ensemble":
        return any(guarded(step.model_name, models) for step in config.ensemble_scheduling.step)
    return config.HasField("dynamic_batching") and bounded_queue(config)


def queue_guards(name: str, models: dict[str, ModelConfig]) -> list[str]:
    """The models whose bounded queues guard `name`'s: the `queue_guards` it names (BLS), each guarded;
    else for each ensemble that uses `name`, a later step with a bounded queue. Empty when unguarded."""
    named = named_models(models[name], QUEUE_GUARDS) if name in models else []
    if named:
        return named if all(guarded(m, models) for m in named) else []
    guards = []
    for ensemble in models.values():
        steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
        if name not in steps:
            continue
        later = [models[step] for step in steps[steps.index(name) + 1:] if step in models]
        guard = next((member.name for member in later if member.HasField("dynamic_batching") and bounded_queue(member)), None)
        if guard is None:
            return []
        guards.append(guard)
    return guards


def named_models(config: ModelConfig, key: str) -> list[str]:
    return [m.strip() for m in (parameter(config, key) or "").split(",") if m.strip()]


def check_parameters_from(name: str, config: ModelConfig, models: dict[str, ModelConfig]) -> list[str]:
    """Each model `parameters_from` names exists, and `name` carries each of its parameters unchanged."""
    problems = []
    for source in named_models(config, PARAMETERS_FROM):
        if source not in models:
            problems.append(f"{name}: {PARAMETERS_FROM} names {source}, which is not in the repository")
            continue
        for key, value in sorted(models[source].parameters.items()):
            if key not in config.parameters:
                problems.append(f"{name}: parameter {key} is missing; it runs {source}'s code ({PARAMETERS_FROM}) "
                                f"and must carry its parameters ({key} {value.string_value!r} there)")
            elif config.parameters[key].string_value != value.string_value:
                problems.append(f"{name}: parameter {key} {config.parameters[key].string_value!r} != "
                                f"{value.string_value!r} in {source}: it runs {source}'s code ({PARAMETERS_FROM}), "
                                "so set it in both")
    return problems


def check_batching(name: str, config: ModelConfig, model_dir: Path, guards: list[str] = ()) -> list[str]:
    problems = []
    if config.max_batch_size > 0 and not config.HasField("dynamic_batching"):
        problems.append(f"{name}: batchable (max_batch_size {config.max_batch_size}) but no dynamic_batching")
    if config.HasField("dynamic_batching") and not bounded_queue(config) and not guards:
        policy = config.dynamic_batching.default_queue_policy
        problems.append(
            f"{name}: dynamic_batching.default_queue_policy must bound the queue (max_queue_size > 0 and "
            f"default_timeout_microseconds > 0; got {policy.max_queue_size} and {policy.default_timeout_microseconds}), "
            f"unless another model's bounded queue guards it (every ensemble using it has a later bounded step, "
            f"or a BLS model's {QUEUE_GUARDS} parameter names the bounded models it calls)"
        )
    preferred = list(config.dynamic_batching.preferred_batch_size)
    for size in preferred:
        if size > config.max_batch_size:
            problems.append(
                f"{name}: dynamic_batching.preferred_batch_size {size} > max_batch_size {config.max_batch_size}"
            )
    if config.platform == "tensorrt_plan":
        for version in _versions(model_dir):
            profile = _plan_profile(model_dir, version)
            if profile is None:
                continue  # a plan built elsewhere: its profile is unknown here
            low, high = profile["min_batch"], profile["max_batch"]
            for field, size in [("max_batch_size", config.max_batch_size)] + [
                ("preferred_batch_size", s) for s in preferred
            ]:
                if not low <= size <= high:
                    problems.append(
                        f"{name}: {field} {size} is outside engine profile batch range {low}..{high} "
                        f"(version {version.name}; rebuild the plan)"
                    )
    return problems


def _render_record(model_dir: Path) -> dict:
    path = model_dir / RENDER_RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _plan_profile(model_dir: Path, version: Path) -> dict | None:
    """The optimisation profile of a version's plan: built (engine.json) or to be built (render record)."""
    if (version / ENGINE_METADATA).exists():
        return json.loads((version / ENGINE_METADATA).read_text())["profile"]
    record = _render_record(model_dir)
    return record.get("profile") if record.get("config_only") else None


def _pending_engine(config: ModelConfig, model_dir: Path, version: Path) -> str | None:
    """Why this version's engine is legitimately absent (a config-only render), or None."""
    if config.platform == "tensorrt_plan":
        record = _render_record(model_dir)
        if record.get("config_only"):
            return record.get("engine_command") or "modelrepo build (without --config-only)"
    if config.backend == "tensorrtllm" and (version / TRTLLM_LIMITS).exists():
        return "the `docker run` command `modelrepo build llm --target tensorrt-llm --config-only` printed"
    return None


def check_tensorrt_llm(name: str, config: ModelConfig, model_dir: Path) -> list[str]:
    problems = []
    engine_path = parameter(config, "gpt_model_path")
    if not engine_path:
        return [f"{name}: backend tensorrtllm needs parameter gpt_model_path (the engine folder)"]
    for version in _versions(model_dir):
        limits_path = version / TRTLLM_LIMITS
        if not limits_path.exists():
            continue  # an engine built elsewhere: its limits are unknown here
        limits = json.loads(limits_path.read_text())
        if limits.get("max_batch_size") != config.max_batch_size:
            problems.append(f"{name}: version {version.name}: engine max_batch_size {limits.get('max_batch_size')} "
                            f"!= config max_batch_size {config.max_batch_size} ({TRTLLM_LIMITS}; rebuild the engine)")
        if not engine_path.rstrip("/").endswith(f"/{name}/{version.name}/{Path(engine_path).name}"):
            problems.append(f"{name}: gpt_model_path {engine_path} is not inside {name}/{version.name}/")
    return problems


def _engine_built(config: ModelConfig, version: Path) -> bool:
    if config.backend == "tensorrtllm":
        return (version / Path(parameter(config, "gpt_model_path") or "engine").name).exists()
    return (version / (config.default_model_filename or PLATFORM_FILES.get(config.platform, "model"))).is_file()


def pending_engines(repository: Path) -> dict[str, str]:
    """'model version N' -> the command that builds its engine, for engines a config-only render left out."""
    pending = {}
    for name, config in repository_models(repository).items():
        model_dir = Path(repository) / name
        for version in _versions(model_dir):
            command = _pending_engine(config, model_dir, version)
            if command and not _engine_built(config, version):
                pending[f"{name} version {version.name}"] = command
    return pending


def check_artifacts(name: str, config: ModelConfig, model_dir: Path) -> list[str]:
    versions = _versions(model_dir)
    if not versions:
        return [f"{name}: no version folder (e.g. {name}/1/)"]
    problems = check_tensorrt_llm(name, config, model_dir) if config.backend == "tensorrtllm" else []
    for version in versions:
        where = f"{name}: version {version.name}"
        if config.backend == "python":
            if not (version / "model.py").exists():
                problems.append(f"{where}: python backend without model.py")
            onnx_file = parameter(config, "onnx_file")
            if onnx_file and not (version / onnx_file).exists():
                problems.append(f"{where}: parameter onnx_file {onnx_file} is missing")
        elif config.platform in PLATFORM_FILES:
            filename = config.default_model_filename or PLATFORM_FILES[config.platform]
            if not (version / filename).exists() and _pending_engine(config, model_dir, version) is None:
                problems.append(f"{where}: platform {config.platform} needs {filename}, which is missing")
        graph = _onnx_graph_file(config, version)
        if graph is not None and graph.exists():
            problems += check_onnx_io(where, config, graph)
    return problems


def _onnx_graph_file(config: ModelConfig, version: Path) -> Path | None:
    if config.platform == "onnxruntime_onnx":
        return version / (config.default_model_filename or PLATFORM_FILES["onnxruntime_onnx"])
    if config.backend == "python":
        graph = version / (parameter(config, "onnx_file") or ONNX_RUNNER_FILE)
        return graph if graph.exists() else None
    return None


ONNX_TO_TRITON = {
    1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
    8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16",
}


def check_onnx_io(where: str, config: ModelConfig, graph_file: Path) -> list[str]:
    """Config inputs = graph inputs; config outputs ⊆ graph outputs; same dtype and rank (batch dim included)."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    onnx_inputs = {t.name: t for t in graph.input if t.name not in initializers}
    onnx_outputs = {t.name: t for t in graph.output}
    batch_dims = 1 if config.max_batch_size > 0 else 0
    problems = []
    for kind, declared, available in (("input", config.input, onnx_inputs), ("output", config.output, onnx_outputs)):
        for tensor in declared:
            value = available.get(tensor.name)
            if value is None:
                problems.append(f"{where}: {kind} {tensor.name!r} is not a {kind} of {graph_file.name} "
                                f"(graph {kind}s: {sorted(available)})")
                continue
            onnx_type = value.type.tensor_type
            expected = ONNX_TO_TRITON.get(onnx_type.elem_type, f"ONNX type {onnx_type.elem_type}")
            if _dtype_name(tensor.data_type) != expected:
                problems.append(f"{where}: {kind} {tensor.name} data_type {_dtype_name(tensor.data_type)} "
                                f"but {graph_file.name} has {expected}")
            graph_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in onnx_type.shape.dim]
            # with `reshape`, the model itself sees the reshaped dims (e.g. [1] outside, [] for a [batch] graph tensor)
            model_dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
            config_dims = [-1] * batch_dims + list(model_dims)
            if not _dims_agree(graph_dims, config_dims):
                problems.append(f"{where}: {kind} {tensor.name} dims {list(tensor.dims)} (max_batch_size "
                                f"{config.max_batch_size}) do not match {graph_file.name} shape {graph_dims}")
    for missing in sorted(set(onnx_inputs) - {t.name for t in config.input}):
        problems.append(f"{where}: {graph_file.name} input {missing!r} is not declared in the config")
    return problems


def check_ensemble(name: str, config: ModelConfig, models: dict[str, ModelConfig]) -> list[str]:
    problems = []
    available = {t.name: (t.data_type, list(t.dims)) for t in config.input}
    for number, step in enumerate(config.ensemble_scheduling.step):
        where = f"{name}: step {number} ({step.model_name})"
        member = models.get(step.model_name)
        if member is None:
            problems.append(f"{where}: no such model in the repository")
            continue
        if member.max_batch_size < config.max_batch_size:
            problems.append(f"{where}: max_batch_size {member.max_batch_size} < ensemble's {config.max_batch_size}")
        member_inputs = {t.name: t for t in member.input}
        member_outputs = {t.name: t for t in member.output}
        for member_input, tensor in step.input_map.items():
            declared = member_inputs.get(member_input)
            if declared is None:
                problems.append(f"{where}: model has no input {member_input!r}")
            if tensor not in available:
                problems.append(f"{where}: tensor {tensor!r} is not produced by an earlier step or input")
            elif declared is not None:
                problems += _compare(where, f"input {member_input} <- tensor {tensor}", declared, *available[tensor])
        for member_output, tensor in step.output_map.items():
            declared = member_outputs.get(member_output)
            if declared is None:
                problems.append(f"{where}: model has no output {member_output!r}")
                continue
            available[tensor] = (declared.data_type, list(declared.dims))
    for output in config.output:
        if output.name not in available:
            problems.append(f"{name}: ensemble output {output.name!r} is produced by no step")
        else:
            problems += _compare(name, f"output {output.name}", output, *available[output.name])
    return problems


def _compare(where: str, what: str, declared, data_type: int, dims: list[int]) -> list[str]:
    problems = []
    if declared.data_type != data_type:
        problems.append(f"{where}: {what}: data_type {_dtype_name(declared.data_type)} != {_dtype_name(data_type)}")
    if not _dims_agree(list(declared.dims), dims):
        problems.append(f"{where}: {what}: dims {list(declared.dims)} != {dims}")
    return problems


def check_repository(repository: Path) -> list[str]:
    try:
        models = repository_models(repository)
    except Exception as err:  # a parse error names the file and line
        return [f"config does not parse: {err}"]
    if not models:
        return [f"no models (no */config.pbtxt) under {repository}"]
    problems = []
    for name, config in models.items():
        problems += check_model(name, config, models, Path(repository) / name)
    return problems
