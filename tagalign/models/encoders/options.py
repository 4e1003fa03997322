"""Declared encoder options: each option's type, default and range, checked before any model is built.

An encoder function declares its keyword options with :func:`declare_options`; :func:`validate_options` turns what a
user typed (``--encoder-options sigma=3``, a config dict) into checked values or a clear error that lists what the
encoder accepts, and :func:`describe_options` prints the same declaration for ``--help`` and the docs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["Option", "declare_options", "declared_options", "describe_options", "validate_options"]

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class Option:
    """One keyword option: ``kind`` is bool, int, float or str; ``minimum``/``maximum`` bound numbers (``above``
    makes the minimum exclusive); ``maximum="blocks"`` means the ViT's block count; ``choices`` lists a str
    option's values."""

    kind: type
    default: object
    help: str
    minimum: float | None = None
    maximum: float | str | None = None
    above: bool = False
    choices: tuple[str, ...] = ()

    def parse(self, name: str, value: object, encoder: str, blocks: int | None) -> object:
        where = f"encoder '{encoder}' option '{name}'"
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise ValueError(f"{where} must be true or false, got {value!r}")
        if self.kind is str:
            if not isinstance(value, str) or value.strip() not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return value.strip()
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where} must be a number ({self.kind.__name__}), got {value!r}")
        try:
            number = self.kind(value) if not isinstance(value, str) else self.kind(value.strip())
        except ValueError:
            raise ValueError(f"{where} must be a number ({self.kind.__name__}), got {value!r}") from None
        if self.kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"{where} must be finite, got {value!r}")
        if self.minimum is not None and (number <= self.minimum if self.above else number < self.minimum):
            raise ValueError(f"{where} must be {'>' if self.above else '>='} {self.minimum}, got {number}")
        maximum = blocks if self.maximum == "blocks" else self.maximum
        if maximum is not None and number > maximum:
            limit = f"{maximum} (the number of blocks of this ViT)" if self.maximum == "blocks" else f"{maximum}"
            raise ValueError(f"{where} must be <= {limit}, got {number}")
        return number


def declare_options(**options: Option) -> Callable:
    """Decorator: attach the encoder's option declarations to its function (read by the registry)."""

    def attach(function: Callable) -> Callable:
        function.options = dict(options)
        return function

    return attach


def declared_options(function: Callable) -> dict[str, Option]:
    return dict(getattr(function, "options", {}))


def _block_count(visual: nn.Module | None) -> int | None:
    if visual is None:
        return None
    from .towers import as_tower

    return len(as_tower(visual).blocks)


def validate_options(encoder: str, function: Callable, options: dict | None,
                     visual: nn.Module | None = None) -> dict:
    """``options`` checked against ``function``'s declaration (ranges that depend on the ViT need ``visual``)."""
    declared = declared_options(function)
    options = dict(options or {})
    unknown = sorted(set(options) - set(declared))
    if unknown:
        accepted = ", ".join(sorted(declared)) if declared else "none"
        raise ValueError(f"encoder '{encoder}' has no option {', '.join(repr(u) for u in unknown)}; its options: "
                         f"{accepted}")
    blocks = _block_count(visual)
    return {name: declared[name].parse(name, value, encoder, blocks) for name, value in options.items()}


def describe_options(function: Callable) -> str:
    """``name (kind, default D): help`` for each declared option, or ``–``."""
    declared = declared_options(function)
    if not declared:
        return "–"
    return "; ".join(f"{name} ({option.kind.__name__}, default {option.default}): {option.help}"
                     for name, option in declared.items())
