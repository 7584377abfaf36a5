"""The chat model's tokenizer from `tokenizers` and `jinja2` alone, without transformers.

Importing transformers (and torch with it) costs each stub ~7 s of CPU; llm_preprocessing and
llm_postprocessing need neither, and a crash restart waits for every stub (README "Failure modes":
serving again within 30 s). This reads the folder `modelrepo build` saves (tokenizer.json,
tokenizer_config.json, chat_template.jinja) and renders the template as transformers 5 does
(`apply_chat_template`: a sandboxed jinja2 environment with trim_blocks and lstrip_blocks, the
special tokens as variables, ids without added specials). tests/unit/test_chat_tokenizer.py holds it
equal to transformers' AutoTokenizer on the same folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
TEMPLATE_FILE = "chat_template.jinja"


def _raise_exception(message: str):
    # Templates call raise_exception(...) to refuse a conversation (transformers' global of that name).
    raise ValueError(message)


class ChatTokenizer:
    def __init__(self, folder: Path):
        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.special_tokens = {name: config[name] for name in SPECIAL_TOKENS if isinstance(config.get(name), str)}
        template = (folder / TEMPLATE_FILE).read_text() if (folder / TEMPLATE_FILE).exists() else config["chat_template"]
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        environment.globals["raise_exception"] = _raise_exception
        self._template = environment.from_string(template)
        self.eos_token_id = self._token_id("eos_token")
        self.pad_token_id = self._token_id("pad_token")

    def _token_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.token_id(token)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The rendered conversation's ids (transformers' apply_chat_template with tokenize=True)."""
        return self.encode(self.render(messages, add_generation_prompt))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
