"""MODEL_rollout: the router model `modelrepo rollout` writes in front of MODEL (config through
Triton's protobuf; the logic is python_backends/rollout_router.py)."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc.model_config_pb2 import DataType

from modelrepo.build.add.layout import TensorSpec, python_model_config, write_python_model
from modelrepo.check import QUEUE_GUARDS
from modelrepo.python_backends.rollout_router import ROUTE, RolloutPolicy, RolloutRouter
from modelrepo.triton.model_config import read_config, rewrite_config

ROUTER_SUFFIX = "_rollout"
# The router computes nothing and keeps no queue of its own: a queue policy turns off Triton 2.51's
# payload prefetching, and its requests then wait in 500 ms steps (README "Failure modes"; with a 1 s
# timeout 4 requests of a recorded session were refused while a version loaded). MODEL's bounded queue
# refuses overload (queue_guards, which `modelrepo check` verifies) and the router passes that on.
HEADER = ("Rollout router in front of {model} (written by `modelrepo rollout`): send requests here during a rollout,\n"
          "# with a `user_id` request parameter for a sticky canary. The policy below changes by a config reload.\n"
          "# Logic: python_backends/rollout_router.py")


def router_name(model: str) -> str:
    return f"{model}{ROUTER_SUFFIX}"


def specs(tensors) -> list[TensorSpec]:
    return [TensorSpec(t.name, DataType.Name(t.data_type), tuple(t.dims)) for t in tensors]


def write_router(repository: Path, model: str, served: list[int]) -> Path:
    """MODEL_rollout with MODEL's inputs and outputs (plus ROUTE), in mode primary on MODEL's serving version."""
    target = read_config(repository / model)
    if target.max_batch_size < 1:
        raise ValueError(f"{model}: max_batch_size is {target.max_batch_size}; the rollout router needs a batched model")
    name = router_name(model)
    outputs = [*specs(target.output), TensorSpec(ROUTE, "TYPE_STRING", (1,))]
    config = python_model_config(name, specs(target.input), outputs, target.max_batch_size, instances=1)
    for tensor in config.input:
        tensor.ClearField("reshape")  # the router passes tensors on as the client sent them
    for tensor in config.output:
        tensor.ClearField("reshape")
    config.dynamic_batching.ClearField("default_queue_policy")
    config.parameters[QUEUE_GUARDS].string_value = model
    put_policy(config, RolloutPolicy(target=model, primary_version=max(served)))
    folder = repository / name
    write_python_model(folder, config, RolloutRouter, HEADER.format(model=model))
    return folder


def set_policy(repository: Path, policy: RolloutPolicy) -> None:
    """The router's parameters become `policy` (on disk; a load makes Triton serve it)."""
    folder = repository / router_name(policy.target)
    config = read_config(folder)
    put_policy(config, policy)
    rewrite_config(folder, config)


def put_policy(config, policy: RolloutPolicy) -> None:
    for key, value in vars(policy).items():
        config.parameters[key].string_value = str(value)
