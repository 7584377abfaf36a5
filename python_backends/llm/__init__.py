"""LLM serving on CPU: chat preprocessing, an in-flight batching engine, incremental detokenisation,
a semantic cache. Plain Python (torch/transformers), unit-testable without a server; the Triton
models under model_repository/llm_* are thin shims around these classes."""
