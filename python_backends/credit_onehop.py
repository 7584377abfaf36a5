"""credit_default_onehop: credit_default_fused's three steps (credit_preprocess → credit_members_fused →
credit_aggregate) chained inside one Python model, so a request crosses one stub instead of three.

The steps are the same classes the ensembles' step models run, configured the same way: this model's
version folder holds copies of their files (features.json, and the fused members' graph as members.onnx,
written by `modelrepo build`) and its config.pbtxt the union of their parameters (rendered from theirs,
see build/credit.py). A request refused by validation is answered with its error; its neighbours in the
dynamic batch go on through the next steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from modelrepo.python_backends.batching import Tensors, run_in_steps
from modelrepo.python_backends.context import ModelContext
from modelrepo.python_backends.credit_features import CreditFeatures
from modelrepo.python_backends.ensemble_stats import EnsembleAggregate
from modelrepo.python_backends.onnx_runner import OnnxRunner

Step = Callable[[Sequence[Tensors]], list]
# The fused members' graph, named apart from model.onnx: it is a step inside this model, not its interface.
MEMBERS_FILENAME = "members.onnx"


class CreditOneHop:
    def __init__(self, features: CreditFeatures, members: OnnxRunner, aggregate: EnsembleAggregate):
        self.steps: tuple[Step, ...] = (features.execute_batch, members.execute_batch, aggregate.execute_batch)

    @classmethod
    def from_context(cls, context: ModelContext) -> "CreditOneHop":
        members = OnnxRunner(context.version_dir / MEMBERS_FILENAME, context.int_parameter("intra_op_threads", 1))
        return cls(CreditFeatures.from_context(context), members,
                   EnsembleAggregate.from_context(context, member_inputs=members.output_names))

    def execute_batch(self, requests: Sequence[Tensors]) -> list[Tensors | Exception]:
        return run_in_steps(requests, self.steps)
