"""The `rollout` subcommand (kept here so modelrepo/cli.py only registers it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modelrepo.rollout.gates import GateLimits

DESCRIPTION = """Roll a new version of MODEL out on a running server (explicit model control, admin key from
$MODELREPO_ADMIN_KEY or .cache/admin-key). `start` loads version N beside the serving one, then steps the
traffic share of the router MODEL_rollout (sticky per `user_id` request parameter) through --steps; after
each --bake it checks the gates (candidate p99 vs the budget, error ratio, shadow disagreement, PSI of
its predictions vs the serving version's): a failed gate rolls back by itself, a passed last step promotes.
State and the append-only history: $MODELREPO_ROLLOUT_DIR (default .cache/rollouts/)."""


def percentages(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: --steps takes percentages like 10,50,100") from None


def add_parsers(commands, default_repository: Path) -> None:
    rollout = commands.add_parser("rollout", help="roll a new model version out on live metrics (canary / shadow)",
                                  description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = rollout.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="127.0.0.1:8000", help="the server's HTTP endpoint host:port")
    common.add_argument("--metrics-url", default="http://127.0.0.1:8002/metrics")
    common.add_argument("--model-repository", default=str(default_repository))
    common.add_argument("--state-dir", help="rollout state and history (default $MODELREPO_ROLLOUT_DIR or .cache/rollouts)")
    common.add_argument("--who", help="the operator the history names (default: the login name)")

    start = actions.add_parser("start", parents=[common], help="load version N beside the serving one and step it up")
    start.add_argument("model", metavar="MODEL")
    start.add_argument("--version", type=int, required=True, metavar="N")
    split = start.add_mutually_exclusive_group()
    split.add_argument("--canary", type=float, metavar="PCT", help="first step's share of traffic (default: the first of --steps)")
    split.add_argument("--shadow", action="store_true", help="the serving version answers; --steps are the shadowed shares")
    split.add_argument("--swap", action="store_true", help="no split: version_policy serves N alone at once")
    start.add_argument("--steps", type=percentages, default=(10.0, 50.0, 100.0), help="traffic shares (default 10,50,100)")
    start.add_argument("--bake", type=float, default=60.0, metavar="S", help="seconds each step runs before its gates (default 60)")
    defaults = GateLimits()
    start.add_argument("--p99-budget-ms", type=float, help="candidate p99 budget (default: MODEL's `latency_budget_ms` "
                                                           f"parameter, else {defaults.p99_budget_ms:g})")
    start.add_argument("--max-error-ratio", type=float, default=defaults.max_error_ratio)
    start.add_argument("--max-disagreement", type=float, default=defaults.max_disagreement,
                       help="share of shadowed rows whose answers may differ")
    start.add_argument("--max-psi", type=float, default=defaults.max_psi, help="PSI of the candidate's predictions vs the serving version's")
    start.add_argument("--min-calls", type=int, default=defaults.min_calls, help="candidate calls a step needs")
    start.add_argument("--max-wait", type=float, default=60.0, metavar="S",
                       help="how long a step may bake beyond --bake until it has --min-calls (default 60)")
    start.add_argument("--comparison", choices=("label", "distance"),
                       help="label (classification) or distance (regression / embedding); default from `add`'s task")
    start.add_argument("--tolerance", type=float, default=1e-3, help="--comparison distance: the L2 distance that disagrees")
    start.add_argument("--no-promote", action="store_true", help="after the last step, wait for `rollout promote`")
    start.set_defaults(func=start_command)

    for name, text in (("status", "the rollout's phase, versions and served versions"),
                       ("promote", "serve the candidate alone now"), ("rollback", "serve the previous version alone now"),
                       ("prepare", "write and load MODEL_rollout (routing everything to the serving version)")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("model", metavar="MODEL")
        action.set_defaults(func=simple_command)
    history = actions.add_parser("history", parents=[common], help="the append-only history (JSON lines)")
    history.add_argument("model", metavar="MODEL", nargs="?")
    history.set_defaults(func=history_command)


def rollouts(args):
    from modelrepo.rollout.controller import Rollouts
    from modelrepo.rollout.store import RolloutStore
    from modelrepo.triton.admin import admin_key
    from modelrepo.triton.control import RunningServer
    from modelrepo.triton.metrics_scrape import scrape_metrics

    key, _ = admin_key()
    store = RolloutStore(Path(args.state_dir) if args.state_dir else None, args.who)
    return Rollouts(RunningServer(args.url, key), lambda: scrape_metrics(args.metrics_url), Path(args.model_repository), store)


def default_comparison(repository: Path, model: str) -> str:
    """`add`'s task for MODEL (its manifest names it), else distance."""
    from modelrepo.triton.model_config import parameter, read_config

    public = parameter(read_config(repository / model), "public_model", model)
    manifest = repository / public / "manifest.json"
    task = json.loads(manifest.read_text()).get("task") if manifest.exists() else None
    return "label" if task == "classification" else "distance"


def default_budget_ms(repository: Path, model: str) -> float:
    """The budget `modelrepo add` stated for MODEL (or its public model), else the gates' default."""
    from modelrepo.build.add.monitoring import stated_budget_ms

    return stated_budget_ms(repository, model) or GateLimits().p99_budget_ms


def spec_of(args):
    from modelrepo.rollout.controller import RolloutError, RolloutSpec
    from modelrepo.triton.model_config import parameter, read_config

    repository = Path(args.model_repository)
    if not (repository / args.model / "config.pbtxt").exists():
        raise RolloutError(f"there is no model {args.model!r} in {repository}")
    budget = args.p99_budget_ms or default_budget_ms(repository, args.model)
    limits = GateLimits(budget, args.max_error_ratio, args.max_disagreement, args.max_psi, args.min_calls)
    steps = args.steps
    if args.canary is not None:
        steps = (args.canary, *(s for s in steps if s > args.canary))
    mode = "shadow" if args.shadow else "swap" if args.swap else "canary"
    return RolloutSpec(args.model, args.version, mode, steps, args.bake, limits,
                       args.comparison or default_comparison(repository, args.model), args.tolerance, not args.no_promote,
                       args.max_wait)


def run(action) -> int:
    from modelrepo.rollout.controller import RolloutError
    from modelrepo.triton.control import ControlError

    try:
        result = action()
    except (RolloutError, ControlError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 1 if isinstance(result, dict) and result.get("phase") == "rolled_back" else 0


def start_command(args) -> int:
    return run(lambda: rollouts(args).start(spec_of(args)))


def simple_command(args) -> int:
    manager = rollouts(args)
    action = {"status": manager.status, "promote": manager.promote, "rollback": manager.rollback,
              "prepare": lambda model: {"router": manager.prepare(model)}}[args.action]
    return run(lambda: action(args.model))


def history_command(args) -> int:
    from modelrepo.rollout.store import RolloutStore

    for entry in RolloutStore(Path(args.state_dir) if args.state_dir else None).history(args.model):
        print(json.dumps(entry))
    return 0
