"""Triton 2.51's stub frees a finished BLS stream without the GIL: how often that corrupts a caller
that reads decoupled responses, with and without the adapter's hold (triton_adapter.Retired).

    .venv/bin/python -m modelrepo.perf.studies.bls_stream_race [--minutes 5] [--rounds 2]

A repository of three Python models in a temporary folder: `streamer` (decoupled: 20 responses of
two small tensors per request) and two callers that each open 8 concurrent BLS streams to it per
request and read them to the end, allocating Python objects as they go (as llm_bls detokenises):
`caller_raw` lets the stream go as soon as it is read (Triton's own BLS example does the same), and
`caller_adapter` reads it through `triton_adapter.bls_stream`, which holds it a minute. Four client
threads call one caller for `--minutes`, then the other; `--rounds` times, on one server.
A request *fails* when Triton answers an error or a wrong count, or gives no answer in 60 s; a stub
that died answers "Stub process ... is not healthy" from then on, so the server is started again for
the next variant. The model classes live here; their model.py files are one-line shims.
Writes perf/results/bls_stream_race.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from modelrepo.perf.chaos import small_server
from modelrepo.perf.results import record
from modelrepo.triton.model_config import parse_config, write_config
from modelrepo.triton.server import TritonServer

RESPONSES_PER_STREAM = 20
STREAMS_PER_REQUEST = 8
CLIENT_THREADS = 4
VARIANTS = ("raw", "adapter")

STREAMER_CONFIG = """
name: "streamer" backend: "python" max_batch_size: 0
model_transaction_policy { decoupled: true }
input { name: "N" data_type: TYPE_INT32 dims: 1 }
output { name: "OUT" data_type: TYPE_FP32 dims: -1 }
output { name: "IDX" data_type: TYPE_INT32 dims: 1 }
instance_group { count: 1 kind: KIND_CPU }
"""
CALLER_CONFIG = """
backend: "python" max_batch_size: 0
input { name: "K" data_type: TYPE_INT32 dims: 1 }
output { name: "COUNT" data_type: TYPE_INT32 dims: 1 }
instance_group { count: 1 kind: KIND_CPU }
"""


class Streamer:
    """Decoupled: N responses, then an empty final one."""

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            sender = request.get_response_sender()
            for index in range(count):
                sender.send(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUT", np.arange(8, dtype=np.float32)),
                    pb_utils.Tensor("IDX", np.array([index], dtype=np.int32)),
                ]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


_WAITERS = concurrent.futures.ThreadPoolExecutor(max_workers=64)


def raw_stream(pb_utils):
    """A decoupled BLS call read to its end and let go at once: what the adapter did before its hold."""

    async def stream(model: str, inputs: dict, outputs: list[str]):
        request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs,
                                            inputs=[pb_utils.Tensor(name, array) for name, array in inputs.items()])
        loop = asyncio.get_running_loop()
        responses = await loop.run_in_executor(_WAITERS, functools.partial(request.exec, decoupled=True))
        done = object()
        while (response := await loop.run_in_executor(_WAITERS, next, responses, done)) is not done:
            if response.has_error():
                raise RuntimeError(response.error().message())
            tensor = pb_utils.get_output_tensor_by_name(response, "OUT")
            if tensor is not None:
                yield {"OUT": tensor.as_numpy()}

    return stream


class Caller:
    """K concurrent streams from `streamer`, each read to its end; answers how many responses came."""

    variant = ""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from modelrepo.python_backends.triton_adapter import bls_stream

        self.pb_utils = pb_utils
        self.stream = bls_stream(pb_utils) if self.variant == "adapter" else raw_stream(pb_utils)

    async def read_one(self) -> int:
        count, notes = 0, []
        inputs = {"N": np.array([RESPONSES_PER_STREAM], dtype=np.int32)}
        async for _ in self.stream("streamer", inputs, ["OUT", "IDX"]):
            count += 1
            notes.append([str(i) for i in range(50)])  # Python allocating while the stub's threads run
        return count

    async def execute(self, requests):
        pb_utils = self.pb_utils
        answers = []
        for request in requests:
            streams = int(pb_utils.get_input_tensor_by_name(request, "K").as_numpy()[0])
            counts = await asyncio.gather(*[self.read_one() for _ in range(streams)])
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", np.array([sum(counts)], dtype=np.int32))]))
        return answers


class CallerRaw(Caller):
    variant = "raw"


class CallerAdapter(Caller):
    variant = "adapter"


def write_repository(root: Path) -> None:
    models = {"streamer": (STREAMER_CONFIG, "Streamer")}
    models.update({f"caller_{variant}": (CALLER_CONFIG, f"Caller{variant.capitalize()}") for variant in VARIANTS})
    for name, (text, class_name) in models.items():
        config = parse_config(text)
        config.name = name
        (root / name / "1").mkdir(parents=True)
        write_config(root / name, config)
        (root / name / "1" / "model.py").write_text(
            f"from modelrepo.perf.studies.bls_stream_race import {class_name} as TritonPythonModel  # noqa: F401\n")


def hammer(server: TritonServer, model: str, seconds: float) -> dict:
    import tritonclient.grpc as grpcclient

    tally = {"ok": 0, "failed": 0, "stub_died": False, "first_failure": ""}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_thread():
        client = grpcclient.InferenceServerClient(server.grpc_url)
        while time.monotonic() < stop_at:
            tensor = grpcclient.InferInput("K", [1], "INT32")
            tensor.set_data_from_numpy(np.array([STREAMS_PER_REQUEST], dtype=np.int32))
            try:
                count = client.infer(model, [tensor], client_timeout=60).as_numpy("COUNT")
                failure = "" if count.shape == (1,) and int(count[0]) == STREAMS_PER_REQUEST * RESPONSES_PER_STREAM \
                    else f"wrong count {count!r}"
            except Exception as err:  # an error answer, a timeout, or a corrupted one that cannot be read
                failure = f"{type(err).__name__}: {str(err)[:300]}"
            with lock:
                tally["failed" if failure else "ok"] += 1
                tally["first_failure"] = tally["first_failure"] or failure
                tally["stub_died"] |= "is not healthy" in failure
            if tally["stub_died"]:
                return

    threads = [threading.Thread(target=client_thread) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def main(argv: list[str] | None = None) -> None:
    parse = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parse.add_argument("--minutes", type=float, default=5.0, help="per variant and round")
    parse.add_argument("--rounds", type=int, default=2)
    args = parse.parse_args(argv)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "repository"
        write_repository(root)
        for round_index in range(args.rounds):
            for variant in VARIANTS:
                models = ("streamer", *(f"caller_{name}" for name in VARIANTS))
                with small_server(root, models, Path(folder) / f"tritonserver-{round_index}-{variant}.log") as server:
                    tally = hammer(server, f"caller_{variant}", args.minutes * 60)
                runs.append({"round": round_index + 1, "variant": variant, **tally})
                print(runs[-1], flush=True)
    body = ["| round | variant | requests answered right | failed | stub died | first failure |",
            "| --- | --- | --- | --- | --- | --- |"]
    body += [f"| {run['round']} | {run['variant']} | {run['ok']} | {run['failed']} | {'yes' if run['stub_died'] else 'no'} "
             f"| {run['first_failure'].replace('|', '/')[:160] or '-'} |" for run in runs]
    totals = {variant: (sum(r["ok"] for r in runs if r["variant"] == variant), sum(r["failed"] for r in runs if r["variant"] == variant))
              for variant in VARIANTS}
    body += ["", "Totals: " + "; ".join(f"{variant}: {ok} right, {failed} failed" for variant, (ok, failed) in totals.items()) + "."]
    record("bls_stream_race", "A finished BLS stream freed by Triton 2.51's stub without the GIL: raw vs the adapter's hold",
           f"python -m modelrepo.perf.studies.bls_stream_race --minutes {args.minutes:g} --rounds {args.rounds}",
           {"runs": runs, "responses_per_stream": RESPONSES_PER_STREAM, "streams_per_request": STREAMS_PER_REQUEST,
            "client_threads": CLIENT_THREADS}, body)


if __name__ == "__main__":
    main()
