"""`modelrepo check`: static validation of a model repository, without starting a server.

It catches what would otherwise surface as a load failure or a runtime error: configs that do not
parse, ensemble steps that name missing models or tensors, batchable models without dynamic
batching, Python models without their model.py, missing label files.
"""

from __future__ import annotations

from pathlib import Path

from modelrepo.triton.model_config import ModelConfig, repository_models

DEFAULT_VERSION = "1"


def _tensor_names(config: ModelConfig, kind: str) -> set[str]:
    return {tensor.name for tensor in getattr(config, kind)}


def check_model(name: str, config: ModelConfig, models: dict[str, ModelConfig], model_dir: Path) -> list[str]:
    problems = []
    if config.name and config.name != name:
        problems.append(f"{name}: config name {config.name!r} differs from its folder name")
    for output in config.output:
        if output.label_filename and not (model_dir / output.label_filename).exists():
            problems.append(f"{name}: output {output.name} label_filename {output.label_filename} is missing")
    if config.platform == "ensemble":
        problems += check_ensemble(name, config, models)
        return problems
    if config.backend == "python" and not (model_dir / DEFAULT_VERSION / "model.py").exists():
        problems.append(f"{name}: python backend without {DEFAULT_VERSION}/model.py")
    if config.max_batch_size > 0 and not config.HasField("dynamic_batching"):
        problems.append(f"{name}: batchable (max_batch_size {config.max_batch_size}) but no dynamic_batching")
    for group in config.instance_group:
        if group.kind != group.KIND_CPU:
            problems.append(f"{name}: instance_group kind must be KIND_CPU on the cpu target")
    return problems


def check_ensemble(name: str, config: ModelConfig, models: dict[str, ModelConfig]) -> list[str]:
    problems = []
    available = _tensor_names(config, "input")
    for number, step in enumerate(config.ensemble_scheduling.step):
        where = f"{name}: step {number} ({step.model_name})"
        member = models.get(step.model_name)
        if member is None:
            problems.append(f"{where}: no such model in the repository")
            continue
        if member.max_batch_size < config.max_batch_size:
            problems.append(f"{where}: max_batch_size {member.max_batch_size} < ensemble's {config.max_batch_size}")
        for member_input, tensor in step.input_map.items():
            if member_input not in _tensor_names(member, "input"):
                problems.append(f"{where}: model has no input {member_input!r}")
            if tensor not in available:
                problems.append(f"{where}: tensor {tensor!r} is not produced by an earlier step or input")
        for member_output, tensor in step.output_map.items():
            if member_output not in _tensor_names(member, "output"):
                problems.append(f"{where}: model has no output {member_output!r}")
            available.add(tensor)
    for output in _tensor_names(config, "output") - available:
        problems.append(f"{name}: ensemble output {output!r} is produced by no step")
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
