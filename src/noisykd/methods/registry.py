"""Registry of training methods: ``@register_method(name)`` on a :class:`Method` subclass, ``create_method``."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ContractError
from ..registry import Description, Registry
from .base import Method, MethodContext


def _import_builtin_methods() -> None:
    from . import bkd, cmd, dfnd, loss_baselines, modul, nrd, selfkd, vkd  # noqa: F401  (importing registers them)


#: Method classes by name; a method's options are the fields of its typed ``Args``.
METHODS: Registry[type[Method]] = Registry("method", builtins=_import_builtin_methods,
                                           options_of=lambda cls: cls.argument_defaults())


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name`` (also its ``name`` attribute)."""

    def wrap(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ContractError(f"register_method({name!r}) needs a Method subclass, got {cls!r}")
        METHODS.register(name, cls)
        cls.name = name
        return cls

    return wrap


def list_methods() -> list[str]:
    return METHODS.names()


def describe_method(name: str) -> Description:
    """What ``noisykd methods NAME`` shows: summary, docstring and each ``method_args`` key with its default."""
    return METHODS.describe(name)


def parse_method_args(name: str, method_args: Mapping[str, Any], epochs: int) -> Any:
    """The typed arguments of method ``name`` from plain ``method_args``; ConfigError for an unknown method,
    an unknown key, a wrong type or an out-of-range value (checked when a config is loaded)."""
    return METHODS[name].parse_args(method_args, epochs)


def create_method(name: str, ctx: MethodContext, method_args: Mapping[str, Any]) -> Method:
    """Build method ``name`` with its (validated) arguments."""
    cls = METHODS[name]
    return cls(ctx, cls.parse_args(method_args, ctx.total_epochs))
