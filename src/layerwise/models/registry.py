"""One registry for models (after timm): a name plus typed arguments builds the model.

    @register_model("mlp")
    def mlp(*, in_shape, num_classes, depth: int = 2, width: int = 256, ...) -> MLP: ...

    model = create_model("mlp", in_shape=(1, 28, 28), num_classes=10, width=512)

A factory's keyword-only arguments with their defaults are the model's whole configuration
surface: `model_args(name)` lists them, `create_model` rejects any other key (naming the closest
valid one) and any value whose type does not match the default's, so a mistyped option is never
silently ignored. Every family also takes ``ensemble=M``: M independently initialized members
trained side by side, evaluated as their mean (`layerwise.models.ensemble.Ensemble`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..nn import unknown_choice_error
from .base import Model
from .ensemble import Ensemble

__all__ = ["create_model", "list_models", "model_arg_types", "model_args", "register_model"]

Factory = TypeVar("Factory", bound=Callable[..., Model])

_MODELS: dict[str, Callable[..., Model]] = {}
_REQUIRED = ("in_shape", "num_classes")
ENSEMBLE = "ensemble"  # an argument of every family: the number of members (models/ensemble.py)


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering `fn` as model `name`.

    `fn` must take only keyword-only arguments: `in_shape`, `num_classes`, and family arguments
    that all have defaults (these defaults are the preset). A `functools.partial` of a factory
    with new defaults is a valid factory, which is how size presets are registered.
    """

    def decorator(fn: Factory) -> Factory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(fn).parameters
        missing = [r for r in _REQUIRED if r not in params]
        if missing:
            raise TypeError(f"model factory {name!r} lacks the argument(s) {missing}")
        for p in params.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"model factory {name!r}: argument {p.name!r} must be keyword-only")
            if p.name not in _REQUIRED and p.default is inspect.Parameter.empty:
                raise TypeError(f"model factory {name!r}: argument {p.name!r} needs a default")
        _MODELS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _factory(name: str) -> Callable[..., Model]:
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise unknown_choice_error("model", name, list_models()) from None


def model_args(name: str) -> dict[str, Any]:
    """Valid override keys of model `name` -> their default values (in_shape and num_classes
    excluded). Tuple-valued arguments also accept lists. Every family also takes ``ensemble``
    (default 1): M > 1 builds M independently initialized members (`layerwise.models.ensemble`)."""
    params = inspect.signature(_factory(name)).parameters
    return {**{k: p.default for k, p in params.items() if k not in _REQUIRED}, ENSEMBLE: 1}


def model_arg_types(name: str) -> dict[str, Any]:
    """Declared types of model `name`'s arguments (e.g. ``tuple[int, ...]`` for widths), from the
    factory's annotations; an argument without one is typed by its default (Any for None)."""
    fn = _factory(name)
    while isinstance(fn, functools.partial):  # size presets are partials of the family's factory
        fn = fn.func
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved: fall back to the defaults' types
        hints = {}
    return {k: hints.get(k, Any if v is None else type(v)) for k, v in model_args(name).items()}


def _check_value(model: str, key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of `default`; return it normalized (lists -> tuples)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list))
        value = tuple(value) if ok else value
    elif default is None:
        ok = True
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(
            f"model {model!r}: argument {key!r} expects {type(default).__name__} "
            f"(default {default!r}), got {type(value).__name__} {value!r}"
        )
    return value


def create_model(name: str, *, in_shape: Sequence[int], num_classes: int, **overrides: Any) -> Model:
    """Build registered model `name` for inputs of shape (B, *in_shape) and `num_classes` outputs.

    `overrides` replace the preset's defaults (see `model_args(name)`). The returned model's
    `config` holds the name and every resolved argument: `create_model(**model.config)` rebuilds it.

    Raises:
        ValueError: unknown model name, unknown override key, or a value of the wrong type (each
            message names the bad entry, the closest valid one, and the valid ones).
    """
    factory = _factory(name)
    defaults = model_args(name)
    members = overrides.pop(ENSEMBLE, 1)
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"model {name!r}: argument 'ensemble' (members) must be an int >= 1, got {members!r}")
    if members > 1:  # M members of the family, each built (and initialized) as the model alone would be
        model = Ensemble([create_model(name, in_shape=in_shape, num_classes=num_classes, **overrides)
                          for _ in range(members)])
        model.config = {**model.members[0].config, ENSEMBLE: members}
        return model
    args = {k: v for k, v in defaults.items() if k != ENSEMBLE}
    for key, value in overrides.items():
        if key not in args:
            raise unknown_choice_error(f"{name} argument", key, defaults)
        args[key] = _check_value(name, key, value, defaults[key])
    shape = tuple(in_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"in_shape must be a non-empty sequence of positive ints, got {in_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
    model = factory(in_shape=shape, num_classes=num_classes, **args)
    model.config = {"name": name, "in_shape": shape, "num_classes": num_classes, **args}
    return model
