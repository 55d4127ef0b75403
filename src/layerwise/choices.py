"""The one "bad name" message: every name-keyed lookup in layerwise (activations, norms, models,
datasets, optimizers, schedules, config keys) names the bad value and the closest valid one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(value: object, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``value`` (case-insensitive, difflib), or None if none is close."""
    by_lower = {v.lower(): v for v in valid}
    match = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return by_lower[match[0]] if match else None


def unknown_choice_error(what: str, value: object, valid: Iterable[str]) -> ValueError:
    """``unknown activation 'gelu_tan'; did you mean 'gelu_tanh'? (valid: relu, gelu, ...)``."""
    valid = list(valid)
    match = closest(value, valid)
    hint = f"; did you mean {match!r}?" if match else ""
    return ValueError(f"unknown {what} {value!r}{hint} (valid: {', '.join(valid)})")
