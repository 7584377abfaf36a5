"""Would a one-stub embedding model (tokenizer and encoder chained in one Python model) serve short
texts faster than the `text_embedding` ensemble (tokenizer stub -> encoder stub)?

    .venv/bin/python -m modelrepo.perf.studies.embedding_onehop [--concurrency 16 1] [--rounds 3]

Issue 20 lists it as a candidate, to keep only if measured. The candidate is built for the study only,
in a temporary copy of the repository: `text_embedding_onehop`, the shipped tokenizer's and encoder's
handlers (TextTokenizer, OnnxRunner) chained in one model over the same files, with the encoder's
config (instances, threads, bounded queue) and the tokenizer's parameters. One server serves both;
perf_analyzer (gRPC, short texts of 3-15 tokens) measures them turn about at each concurrency, so both
see the same machine. Per round: the one-stub model's throughput ÷ the ensemble's; median (range) over
the rounds. Writes perf/results/embedding_onehop.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from modelrepo.paths import MODEL_REPOSITORY
from modelrepo.perf.analyzer import measure
from modelrepo.perf.embedding_sessions import ENCODER
from modelrepo.perf.results import Spread, record
from modelrepo.perf.workloads import short_texts, text_input_data
from modelrepo.triton.model_config import read_config, write_config
from modelrepo.triton.server import TritonServer, free_ports

ENSEMBLE, TOKENIZER, ONEHOP = "text_embedding", "minilm_tokenizer", "text_embedding_onehop"
# The candidate's shim: the two shipped handlers, the second fed with what the first answered.
ONEHOP_MODEL = '''
from modelrepo.python_backends.batching import run_in_steps
from modelrepo.python_backends.onnx_runner import OnnxRunner
from modelrepo.python_backends.text_tokenizer import TextTokenizer
from modelrepo.python_backends.triton_adapter import triton_model


class TokenizeThenEncode:
    def __init__(self, tokenizer, encoder):
        self.steps = (tokenizer.execute_batch, encoder.execute_batch)

    @classmethod
    def from_context(cls, context):
        return cls(TextTokenizer.from_context(context), OnnxRunner.from_context(context))

    def execute_batch(self, requests):
        return run_in_steps(requests, self.steps)


TritonPythonModel = triton_model(TokenizeThenEncode)
'''


def candidate_repository(folder: Path) -> Path:
    """A copy of the ensemble's three models plus the one-stub candidate over the same files."""
    repository = folder / "repository"
    for model in (ENSEMBLE, TOKENIZER, ENCODER):
        shutil.copytree(MODEL_REPOSITORY / model, repository / model, symlinks=True)
    version = repository / ONEHOP / "1"
    version.mkdir(parents=True)
    (version / "tokenizer").symlink_to(MODEL_REPOSITORY / TOKENIZER / "1" / "tokenizer")
    (version / "model.onnx").symlink_to(MODEL_REPOSITORY / ENCODER / "1" / "model.onnx")
    (version / "model.py").write_text(ONEHOP_MODEL)
    tokenizer, config = read_config(repository / TOKENIZER), read_config(repository / ENCODER)
    config.name = ONEHOP
    del config.input[:]
    config.input.extend(tokenizer.input)
    config.ClearField("model_warmup")  # the encoder's warmup feeds token ids, which this model does not take
    for key, value in tokenizer.parameters.items():
        config.parameters[key].CopyFrom(value)
    write_config(repository / ONEHOP, config)
    return repository


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="embedding-onehop-"))
    data = text_input_data(short_texts(), folder / "short.json")
    rounds: dict[int, list[dict]] = {c: [] for c in args.concurrency}
    commands = {}
    with TritonServer(candidate_repository(folder), *free_ports(3), load_models=(ENSEMBLE, ONEHOP)) as server:
        for model in (ENSEMBLE, ONEHOP):  # warm both
            measure(model, server.grpc_url, data, 4, None, folder / "warm.csv", interval_ms=1000)
        for _ in range(args.rounds):
            for concurrency in args.concurrency:
                run = {"load_1min": os.getloadavg()[0]}
                for model in (ENSEMBLE, ONEHOP):
                    run[model] = measure(model, server.grpc_url, data, concurrency, None, folder / f"{model}.csv")
                    commands[model, concurrency] = run[model]["command"]
                run["ratio"] = run[ONEHOP]["throughput_infer_per_s"] / run[ENSEMBLE]["throughput_infer_per_s"]
                rounds[concurrency].append(run)
    shutil.rmtree(folder, ignore_errors=True)

    def spread(concurrency: int, model: str, key: str, digits: int = 1) -> str:
        return Spread.of(run[model][key] for run in rounds[concurrency]).text(digits)
    body = [
        f"Short texts (3-15 tokens), perf_analyzer gRPC, one text per request; {args.rounds} rounds, the two models "
        "turn about in each; median (range). Load average (1 min) at each round's start: "
        + ", ".join(f"{run['load_1min']:.1f}" for runs in rounds.values() for run in runs) + ".",
        "",
        "| concurrency | model | infer/s | p50 (ms) | p99 (ms) | one stub ÷ ensemble (same round) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency, runs in rounds.items():
        for model in (ENSEMBLE, ONEHOP):
            ratio = Spread.of(run["ratio"] for run in runs).text(2) if model == ONEHOP else "1"
            body.append(f"| {concurrency} | {model} | {spread(concurrency, model, 'throughput_infer_per_s')} | "
                        f"{spread(concurrency, model, 'p50_ms', 2)} | {spread(concurrency, model, 'p99_ms', 2)} | {ratio} |")
    body += ["", "perf_analyzer commands:", "", *(f"`{command}`" for command in commands.values())]
    command = (".venv/bin/python -m modelrepo.perf.studies.embedding_onehop --concurrency "
               + " ".join(map(str, args.concurrency)) + f" --rounds {args.rounds}")
    note = "Embedded Triton 2.51.0; perf_analyzer shares the machine's 2 cores with the server."
    print(record("embedding_onehop", "A one-stub embedding model vs the text_embedding ensemble, short texts",
                 command, {"rounds": {str(c): r for c, r in rounds.items()}}, body, note))


if __name__ == "__main__":
    main()
