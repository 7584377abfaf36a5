"""`add` and `remove`: recognise the source, export it, check it against its framework, write it.

Everything is written into a temporary folder beside the repository and checked there (parity on
the sample, `modelrepo check` rules); only then are the model folders moved into place, so a
refusal leaves the repository as it was.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from modelrepo.build.add.assemble import assemble
from modelrepo.build.add.layout import MANIFEST
from modelrepo.build.add.recipes import AddError, AddRequest, recipe_for
from modelrepo.build.add.versions import check_new_version, install_version
from modelrepo.check import check_model
from modelrepo.triton.model_config import read_config, repository_models

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def check_name(name: str, repository: Path) -> Path:
    if not NAME_RULE.match(name):
        raise AddError(f"NAME {name!r} must be a plain folder name inside the repository (letters, digits, '_' and '-'), "
                       f"not a path outside it")
    if not repository.is_dir():
        raise AddError(f"the model repository {repository} is not a folder")
    return repository / name


def read_manifest(repository: Path, name: str) -> dict | None:
    path = repository / name / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def models_to_replace(request: AddRequest, repository: Path, new_models: list[str]) -> list[str]:
    """Existing folders the new models would overwrite: only what `add` wrote for NAME, and only with --force."""
    manifest = read_manifest(repository, request.name)
    owned = set(manifest["models"]) if manifest else set()
    clashes = [model for model in new_models if (repository / model).exists()]
    foreign = [model for model in clashes if model not in owned]
    if foreign:
        raise AddError(f"model {foreign[0]!r} already exists in {repository} and was not written by `modelrepo add` "
                       f"for {request.name!r}: choose another NAME")
    if manifest and not request.force:
        raise AddError(f"model {request.name!r} already exists in {repository} (use --force to replace it)")
    return sorted(owned | set(clashes))


def add_model(request: AddRequest, repository: Path, log=print) -> dict:
    repository = Path(repository)
    check_name(request.name, repository)
    if request.precision == "fp16":
        raise AddError("--precision fp16 is not available for added models yet; add it as fp32 or int8")
    if request.precision == "int8" and not (request.calibration_data and Path(request.calibration_data).is_file()):
        raise AddError("--precision int8 needs --calibration-data FILE (rows like the sample, or texts for a text model)")
    if request.precision == "fp32" and (request.calibration_data or request.accuracy_budget):
        raise AddError("--calibration-data and --accuracy-budget go with --precision int8")
    if request.max_batch_size < 1 or request.instances < 1:
        raise AddError("--max-batch-size and --instances must be at least 1")
    if not request.latency_budget_ms > 0:
        raise AddError(f"--latency-budget-ms must be a positive number of milliseconds, got {request.latency_budget_ms}")
    if request.version is None:
        models_to_replace(request, repository, [request.name])  # before minutes of exporting
    else:
        check_new_version(request.name, request.version, repository, read_manifest(repository, request.name))
    recipe = recipe_for(Path(request.source))
    log(f"{request.name}: {request.source} is {recipe.describe}")
    with tempfile.TemporaryDirectory(prefix=f".modelrepo-add-{request.name}-", dir=repository.resolve().parent) as tmp:
        work, staged = Path(tmp) / "work", Path(tmp) / "models"
        work.mkdir()
        staged.mkdir()
        export = recipe.export(request, work)
        plan = assemble(request, export, staged)
        plan.manifest.update(recipe=recipe.kind, source=str(Path(request.source).resolve()))
        if request.version is not None:
            check_staged(staged, repository, plan.models, plan.models)
            graph = install_version(request.name, request.version, repository, staged, plan.models,
                                    plan.manifest["labels"], request.source)
            log(f"{request.name}: wrote {graph}/{request.version} into {repository} (not served: `modelrepo rollout "
                f"start {graph} --version {request.version}` serves it)")
            return plan.report
        (staged / request.name / MANIFEST).write_text(json.dumps(plan.manifest, indent=2))
        replaced = models_to_replace(request, repository, plan.models)
        check_staged(staged, repository, plan.models, replaced)
        install(staged, repository, plan.models, replaced, Path(tmp) / "replaced")
    log(f"{request.name}: wrote {', '.join(plan.models)} into {repository}")
    return plan.report


def check_staged(staged: Path, repository: Path, new_models: list[str], replaced: list[str]) -> None:
    """`modelrepo check`'s rules on the new models, as they will sit among the repository's others."""
    models = {name: config for name, config in repository_models(repository).items() if name not in replaced}
    models.update({name: read_config(staged / name) for name in new_models})
    problems = [p for name in new_models for p in check_model(name, models[name], models, staged / name)]
    if problems:
        raise AddError(f"the written model fails `modelrepo check`: {problems[0]}")


def install(staged: Path, repository: Path, new_models: list[str], replaced: list[str], trash: Path) -> None:
    trash.mkdir()
    for model in replaced:
        if (repository / model).exists():
            os.rename(repository / model, trash / model)
    for model in new_models:
        os.rename(staged / model, repository / model)


def remove_model(name: str, repository: Path, log=print) -> list[str]:
    repository = Path(repository)
    folder = check_name(name, repository)
    if not folder.exists():
        raise AddError(f"there is no model {name!r} in {repository}")
    manifest = read_manifest(repository, name)
    if manifest is None:
        raise AddError(f"model {name!r} was not written by `modelrepo add` (no {MANIFEST}); remove refuses to delete it")
    models = [model for model in manifest["models"] if NAME_RULE.match(model) and (repository / model).exists()]
    with tempfile.TemporaryDirectory(prefix=f".modelrepo-remove-{name}-", dir=repository.resolve().parent) as tmp:
        for model in models:  # renames first: the repository never holds half an ensemble
            os.rename(repository / model, Path(tmp) / model)
    log(f"{name}: removed {', '.join(models)} from {repository}")
    return models

