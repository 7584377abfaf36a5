"""`make gpu-check`: every GPU-only step, end to end, on a host with an NVIDIA GPU and Docker.

1. TensorRT plans of the encoder in fp16 and int8 (`modelrepo build minilm_encoder --target tensorrt`,
   the pinned TensorRT in this venv), each served by the project's image (`docker build --build-arg
   VARIANT=tensorrt`, the rendered repository mounted at /models), measured with perf_analyzer, and
   its accuracy reported: held-out review embeddings from the served plan against sentence-transformers'
   FP32 embeddings computed here (mean and minimum cosine).
2. The TensorRT-LLM variant: `docker build --build-arg VARIANT=llm` (the engine is built in the
   TensorRT-LLM image), served, and one streaming answer over gRPC (time to first token, chunks).

Each step's outcome, command and figures go to perf/results/gpu-check.{md,json}. Without a GPU or
Docker it stops with one sentence and exit code 2 before doing anything.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelrepo.build.tensorrt_plan import visible_gpu
from modelrepo.paths import REPO_ROOT, cache_dir
from modelrepo.pins import pins
from modelrepo.triton.control import RunningServer

ADMIN_KEY = "gpu-check-admin-key"
HELD_OUT_TEXTS = 200
READY_TIMEOUT_S = 900


class GpuCheckUnavailable(RuntimeError):
    """No GPU or no Docker here: one sentence."""


@dataclass
class Step:
    name: str
    command: str
    ok: bool = False
    figures: dict = field(default_factory=dict)
    error: str = ""


def require_gpu_host() -> None:
    if visible_gpu() is None:
        raise GpuCheckUnavailable("gpu-check needs an NVIDIA GPU; this machine has no visible GPU (nothing was run)")
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise GpuCheckUnavailable("gpu-check needs a running Docker engine with the NVIDIA runtime (nothing was run)")


def run(command: list[str], **kwargs) -> None:
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def image(variant: str) -> str:
    tag = f"modelrepo:gpu-check-{variant}"
    run(["docker", "build", "--build-arg", f"VARIANT={variant}", "-t", tag, str(REPO_ROOT)])
    return tag


class Container:
    """`docker run` of an image of ours on the GPU, optionally with a repository mounted at /models."""

    def __init__(self, tag: str, repository: Path | None = None, ports: tuple[int, int, int] = (18000, 18001, 18002)):
        self.name = f"modelrepo-gpu-check-{ports[0]}"
        mount = ["-v", f"{repository.resolve()}:/models:ro"] if repository else []
        published = [arg for port, inner in zip(ports, (8000, 8001, 8002)) for arg in ("-p", f"127.0.0.1:{port}:{inner}")]
        self.argv = ["docker", "run", "-d", "--rm", "--gpus", "all", "--shm-size=1g", "--name", self.name,
                     "-e", f"MODELREPO_ADMIN_KEY={ADMIN_KEY}", *published, *mount, tag]
        self.server = RunningServer(f"127.0.0.1:{ports[0]}", ADMIN_KEY)
        self.grpc_url = f"127.0.0.1:{ports[1]}"

    def __enter__(self) -> "Container":
        run(self.argv, capture_output=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.server.is_ready():
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", "--tail", "60", self.name], capture_output=True, text=True)
                raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S} s:\n{logs.stdout}{logs.stderr}")
            time.sleep(2)
        return self

    def __exit__(self, *_exc) -> None:
        subprocess.run(["docker", "stop", "-t", "30", self.name], capture_output=True)


def held_out_cosines(grpc_url: str, texts: list[str]) -> dict[str, float]:
    """Served embeddings (text_embedding over gRPC) against sentence-transformers' FP32 ones."""
    import tritonclient.grpc as grpcclient

    from modelrepo.build.minilm import reference_embeddings
    from modelrepo.triton.client import infer

    client = grpcclient.InferenceServerClient(grpc_url)
    served = np.concatenate([
        infer(grpcclient, client, "text_embedding", {"TEXT": np.array([[t.encode()] for t in texts[i:i + 32]], dtype=object)},
              ["EMBEDDING"])["EMBEDDING"]
        for i in range(0, len(texts), 32)
    ])
    reference = reference_embeddings(texts)
    cosines = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min()), "texts": len(texts)}


def encoder_step(precision: str, runtime_tag: str, input_data: Path, texts: list[str]) -> Step:
    output = REPO_ROOT / "dist" / "gpu-check" / f"tensorrt-{precision}" / "model_repository"
    build = [sys.executable, "-m", "modelrepo.cli", "build", "minilm_encoder", "--target", "tensorrt",
             "--precision", precision, "--output", str(output)]
    step = Step(f"TensorRT {precision} encoder: build, serve, perf_analyzer, accuracy", " ".join(build[2:]))
    run(build)
    from modelrepo.perf.analyzer import measure

    with Container(runtime_tag, output) as container:
        step.figures["accuracy"] = held_out_cosines(container.grpc_url, texts)
        step.figures["perf_analyzer"] = {
            concurrency: measure("text_embedding", container.grpc_url, input_data, concurrency, ADMIN_KEY,
                                 cache_dir() / f"gpu-check-{precision}-c{concurrency}.csv")
            for concurrency in (1, 8, 32)
        }
    step.ok = True
    return step


def llm_step() -> Step:
    from modelrepo.triton.llm_client import grpc_stream, llm_inputs

    step = Step("TensorRT-LLM: engine build in the TensorRT-LLM image, serve, stream", "docker build --build-arg VARIANT=llm .")
    tag = image("llm")
    with Container(tag, ports=(18100, 18101, 18102)) as container:
        result = grpc_stream(container.grpc_url, "llm_bls", llm_inputs("What is the capital of France?", 32, stream=True))
        if result.error:
            raise RuntimeError(f"llm_bls answered an error: {result.error}")
        step.figures = {"ttft_s": result.ttft, "chunks": len(result.chunks), "text": result.text}
    step.ok = True
    return step


def report(steps: list[Step], command: str) -> None:
    from modelrepo.perf.results import record

    body = [f"GPU: {visible_gpu()}; images pinned to {pins().ngc_triton_image} / {pins().ngc_trtllm_image}.", ""]
    for step in steps:
        body += [f"## {step.name}: {'PASS' if step.ok else 'FAIL'}", "", f"`{step.command}`", ""]
        body += [f"- {key}: {value}" for key, value in step.figures.items()]
        body += [f"- error: {step.error}"] if step.error else []
        body.append("")
    record("gpu-check", "GPU-only steps, end to end", command, {"steps": [vars(s) for s in steps]}, body)


def main(argv: list[str] | None = None) -> int:
    import argparse

    # No options: parsing first lets --help answer with the usage, not the no-GPU sentence.
    argparse.ArgumentParser(prog="python -m modelrepo.perf.gpu_check", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        require_gpu_host()
    except GpuCheckUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from modelrepo.build.review_data import reviews
    from modelrepo.perf.tune_command import default_input_data

    # The datacenter TensorRT of the pinned NGC release builds the plans (installed once, GPU hosts only).
    run([sys.executable, "-m", "pip", "install", "--quiet", f"tensorrt-cu12=={pins().tensorrt}"])

    texts = reviews("testing_data").review.tolist()[-HELD_OUT_TEXTS:]
    workdir = cache_dir() / "gpu-check"
    workdir.mkdir(parents=True, exist_ok=True)
    input_data = Path(default_input_data(REPO_ROOT / "model_repository", "text_embedding", workdir))
    steps: list[Step] = []
    runtime_tag = image("tensorrt")
    for precision in ("fp16", "int8"):
        try:
            steps.append(encoder_step(precision, runtime_tag, input_data, texts))
        except (subprocess.CalledProcessError, RuntimeError) as err:
            steps.append(Step(f"TensorRT {precision} encoder", "", error=str(err)[-2000:]))
    try:
        steps.append(llm_step())
    except (subprocess.CalledProcessError, RuntimeError) as err:
        steps.append(Step("TensorRT-LLM", "", error=str(err)[-2000:]))
    report(steps, "make gpu-check")
    return 0 if all(step.ok for step in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
