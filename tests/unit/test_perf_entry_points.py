"""Every runnable under perf/ (what `make soak`, `make chaos`, `make overload`, `modelrepo bench` and the
studies run) imports: none of them runs in `make test`, so a broken import (soak's did) would otherwise
show only when someone reaches for it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from modelrepo.paths import REPO_ROOT

RUNNABLE = sorted(
    path for path in (REPO_ROOT / "perf").rglob("*.py")
    if "__main__" in path.read_text() and path.name != "__init__.py"
)


def module_of(path: Path) -> str:
    return "modelrepo." + ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def test_the_make_targets_are_among_them():
    modules = {module_of(p) for p in RUNNABLE}
    assert {"modelrepo.perf.soak", "modelrepo.perf.chaos", "modelrepo.perf.overload"} <= modules, modules


@pytest.mark.parametrize("path", RUNNABLE, ids=module_of)
def test_it_imports_and_has_an_entry_point(path):
    module = importlib.import_module(module_of(path))
    assert callable(getattr(module, "main", None)), f"{module_of(path)} runs as a script but has no main()"


@pytest.mark.parametrize("path", RUNNABLE, ids=module_of)
def test_help_prints_the_usage_and_runs_nothing(path, monkeypatch, capsys):
    """`--help` is parsed before anything is measured or checked (gpu_check answered it with its no-GPU
    sentence, sentiment_head_alternatives ran the study)."""
    import inspect
    import sys

    main = importlib.import_module(module_of(path)).main
    monkeypatch.setattr(sys, "argv", [module_of(path), "--help"])
    required = [p for p in inspect.signature(main).parameters.values() if p.default is inspect.Parameter.empty]
    with pytest.raises(SystemExit) as stopped:
        main(["--help"]) if required else main()
    assert stopped.value.code == 0
    assert "usage:" in capsys.readouterr().out
