"""Where the LLM models keep their files inside a model version. Standard library only: the image's
launcher (modelrepo.triton.launch) finds the tokenizer with it before any dependency is imported."""

TOKENIZER_DIR = "tokenizer"  # tokenizer.json, tokenizer_config.json (chat template) of llm_preprocessing
