"""The registry of recipes `modelrepo add` follows: one entry per kind of source, in recognition order.

A recipe says how a source is recognised (by what it is: its content, not only its name), how it
becomes an ONNX graph (through the well-kept converter for its framework), what sample it reads
and how its answers are compared with the source framework's. Each added model records the recipe
it was made with (manifest.json beside its config), which `remove` and later rebuilds read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TOKEN_CLASSIFICATION = "token_classification"
TASKS = ("classification", TOKEN_CLASSIFICATION, "regression", "embedding", "graph")
# Parity with the source framework on the sample (the tolerances).
MAX_PROBABILITY_DIFF = 1e-4
MIN_EMBEDDING_COSINE = 0.9999
MAX_RELATIVE_DIFF = 1e-4  # regression and raw graph outputs: |ours - theirs| <= 1e-4 * max(1, |theirs|max)
# Two, not one: with one instance behind a bounded queue, Triton 2.51's batcher idles 500 ms whenever
# a request finds the instance busy (README "Failure modes"; perf/results/added_model_instances.md:
# a LightGBM model's p99 was ~505 ms with one instance from concurrency 1 on, 9 ms with two).
DEFAULT_INSTANCES = 2
DEFAULT_LATENCY_BUDGET_MS = 100.0  # p99 served, like the credit pipelines' (k8s/monitoring/prometheus-rules.yaml)


class AddError(Exception):
    """A refusal of `add` / `remove`: one sentence, exit status 2, nothing written."""


@dataclass(frozen=True)
class AddRequest:
    name: str
    source: Path
    task: str | None = None
    sample: Path | None = None
    labels: tuple[str, ...] | None = None
    max_batch_size: int = 64
    instances: int = DEFAULT_INSTANCES
    precision: str = "fp32"
    force: bool = False
    calibration_data: Path | None = None  # --precision int8
    accuracy_budget: str | None = None
    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS
    version: int | None = None  # --version N: a new version folder of an existing model, not served yet


@dataclass
class TextFrontEnd:
    """A text model's tokenizer (tokenizer.json folder) and its sample texts."""

    tokenizer_dir: Path
    texts: list[str]
    max_tokens: int


@dataclass
class Export:
    """What a recipe hands over: the graph, the sample it was checked on and the source's answers."""

    graph: Path
    task: str
    sample: dict[str, np.ndarray]  # graph input -> a batch of sample rows
    reference: dict[str, np.ndarray]  # served output (PROBABILITIES, PREDICTION, EMBEDDING or a graph output) -> source's answer
    labels: list[str] = field(default_factory=list)
    scores: str = "probabilities"  # classification: the graph's SCORES output holds probabilities or logits
    ragged_inputs: tuple[str, ...] = ()
    text: TextFrontEnd | None = None
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    kind: str
    describe: str
    recognise: Callable[[Path], bool]
    export: Callable[[AddRequest, Path], Export]  # (request, work folder) -> Export


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.kind] = recipe
    return recipe


def _load_recipes() -> None:
    # Importing a recipe module registers it; the order here is the order sources are recognised in.
    from modelrepo.build.add import graphs, tabular, text  # noqa: F401


def recipe_for(source: Path) -> Recipe:
    _load_recipes()
    if not source.exists():
        raise AddError(f"{source} does not exist")
    for recipe in RECIPES.values():
        if recipe.recognise(source):
            return recipe
    kinds = "; ".join(recipe.describe for recipe in RECIPES.values())
    raise AddError(f"{source} is not a model this command reads (it reads: {kinds})")
