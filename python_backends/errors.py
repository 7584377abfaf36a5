"""Errors that name the input and the rule it broke; the adapter turns them into per-request errors."""

from __future__ import annotations

from collections.abc import Collection, Mapping


class InputError(ValueError):
    """A request's input broke a rule. The message names the input, the item and the rule."""

    def __init__(self, input_name: str, rule: str, item: int | None = None):
        self.input_name = input_name
        self.rule = rule
        self.item = item
        where = f"input '{input_name}'" if item is None else f"input '{input_name}' (batch item {item})"
        super().__init__(f"{where}: {rule}")


def refuse_unknown_parameters(parameters: Mapping[str, object], known: Collection[str], hint: str) -> None:
    """Request parameters (the KServe `parameters` map) must be ones the model reads: a misspelt
    setting (`useer_id`) must not be silently ignored. `hint` tells the caller what to send instead."""
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        accepted = f"known: {', '.join(sorted(known))}" if known else "this model reads none"
        raise InputError(unknown[0], f"is not a known parameter of this model (unknown: {', '.join(unknown)}; "
                                     f"{accepted}); {hint}")
