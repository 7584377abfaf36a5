"""Errors that name the input and the rule it broke; the adapter turns them into per-request errors."""

from __future__ import annotations


class InputError(ValueError):
    """A request's input broke a rule. The message names the input, the item and the rule."""

    def __init__(self, input_name: str, rule: str, item: int | None = None):
        self.input_name = input_name
        self.rule = rule
        self.item = item
        where = f"input '{input_name}'" if item is None else f"input '{input_name}' (batch item {item})"
        super().__init__(f"{where}: {rule}")
