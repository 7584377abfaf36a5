"""`modelrepo build`: every registry entry's steps (build/registry.py), each skipped when its inputs are unchanged."""

from __future__ import annotations

import time
from pathlib import Path

from modelrepo.build import registry
from modelrepo.build.artifacts import StepResult, run_step
from modelrepo.paths import MODEL_REPOSITORY


def build_all(repository: Path = MODEL_REPOSITORY, force: bool = False, log=print) -> list[StepResult]:
    """Run the steps of every entry the repository serves, in registry order (a step reads the results
    of earlier ones). A repository of your own models alone gets none of the shipped artifacts."""
    repository = Path(repository)
    done: registry.Done = {}
    for entry in registry.entries(repository):
        for step in entry.steps:
            folder = step.folder(repository)
            started = time.monotonic()
            result = run_step(step.name, folder, step.inputs(repository, done), step.produce(repository, done), force=force)
            done[step.name] = result
            if step.install is not None:
                step.install(repository, done)
            state = "unchanged" if result.cached else f"built in {time.monotonic() - started:.1f} s"
            log(f"{step.name:<18} {state:<18} {folder}")
            if step.summary is not None:
                log(f"  {step.summary(result.report)}")
    return list(done.values())
