"""Registry of training methods: ``register_method(name)``, ``create_method(name, ctx, **args)``."""

from __future__ import annotations

import inspect

from ..errors import ConfigError
from .base import Method, MethodContext

_METHODS: dict[str, tuple[type[Method], dict]] = {}


def register_method(name: str, **fixed_args):
    """Class decorator: register ``cls`` under ``name``; ``fixed_args`` are passed on construction (so one
    class can serve several named variants, e.g. the loss baselines)."""

    def wrap(cls: type[Method]) -> type[Method]:
        _METHODS[name] = (cls, fixed_args)
        return cls

    return wrap


def list_methods() -> list[str]:
    _ensure_builtin()
    return sorted(_METHODS)


def describe_method(name: str) -> dict:
    """What ``noisykd methods NAME`` shows: ``name``, ``summary`` (the class docstring's first line), ``arguments``
    (each accepted ``method_args`` key and its default), ``fixed`` (arguments set by the registration, e.g. the
    loss of a baseline), ``doc`` (the whole class docstring), ``extra_keywords`` (True when it also takes
    further keyword arguments, e.g. a loss's hyperparameters)."""
    cls, fixed = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    arguments = {p.name: (None if p.default is p.empty else p.default) for p in params.values()
                 if p.name not in ("self", "ctx") and p.name not in fixed and p.kind is not p.VAR_KEYWORD}
    doc = inspect.getdoc(cls) or ""
    return {"name": name, "summary": doc.splitlines()[0] if doc else "", "arguments": arguments,
            "fixed": dict(fixed), "doc": doc,
            "extra_keywords": any(p.kind is p.VAR_KEYWORD for p in params.values())}


def create_method(name: str, ctx: MethodContext, **args) -> Method:
    """Instantiate method ``name`` with its arguments; unknown names or arguments raise ConfigError."""
    cls, fixed = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = [p for p in params if p not in ("self", "ctx") and p not in fixed]
    unknown = sorted(set(args) - set(allowed))
    if unknown and not accepts_any:
        raise ConfigError(f"method {name!r}: unknown method_args {unknown}; accepted: {allowed}")
    return cls(ctx, **fixed, **args)


def _lookup(name: str) -> tuple[type[Method], dict]:
    _ensure_builtin()
    if name not in _METHODS:
        raise ConfigError(f"method {name!r} is not registered; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def _ensure_builtin() -> None:
    from . import bkd, loss_baselines  # noqa: F401  (importing registers them)
