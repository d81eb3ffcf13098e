"""One registry for every named, pluggable thing: methods, models, augmentation policies, data sources, label
sets, losses and noise kinds.

Each kind keeps a :class:`Registry`; they share one duplicate rule (a name taken by another object is an error
unless ``overwrite=True``), one message for an unknown name ("unknown model 'resnet99'; choose one of: ..."),
and :meth:`Registry.describe`, which ``noisykd methods`` and ``noisykd models`` print::

    MODELS = Registry("model", builtins=_import_builtin_models)

    @MODELS.register("small_cnn")
    def small_cnn(num_classes, in_channels, image_size, width=1.0): ...

    MODELS["small_cnn"]                     # the builder
    MODELS["resnet99"]                      # ConfigError: unknown model 'resnet99'; choose one of: ...
    MODELS.describe("small_cnn").options    # {'width': 1.0}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, NoisyKDError

T = TypeVar("T")
#: The value :class:`Description` gives an option that has no default (the caller must give it).
REQUIRED = "<required>"


@dataclass(frozen=True)
class Description:
    """What a registered entry is, for listings: its name, the complete first sentence of its docstring as plain
    text (``summary``, one line; never cut inside a sentence), the whole docstring as written (``doc``), its
    options with their defaults (``REQUIRED`` when there is none) and free-form metadata given at registration
    (e.g. a data source's usage string)."""

    name: str
    summary: str
    doc: str
    options: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Mapping, Generic[T]):
    """Named entries of one kind, read like a read-only dict.

    kind:           what an entry is, as a user reads it in messages ("model", "augmentation policy").
    error:          the exception class for an unknown or duplicate name (ConfigError; DataError for data).
    builtins:       called once, before the first lookup, to import the modules that register the built-in
                    entries (registration happens at import; lazy so that registries have no import cycles).
    context_params: parameter names that the caller always supplies and :meth:`describe` does not list as
                    options (e.g. a model builder's ``num_classes``).
    options_of:     ``entry -> {option: default}`` for entries whose options are not their signature's
                    keyword parameters (e.g. a method's typed ``Args``).
    """

    def __init__(self, kind: str, *, error: type[NoisyKDError] = ConfigError,
                 builtins: Callable[[], None] | None = None, context_params: tuple[str, ...] = (),
                 options_of: Callable[[Any], dict[str, Any]] | None = None):
        self.kind = kind
        self.error = error
        self._builtins = builtins
        self._loaded = builtins is None
        self._context = frozenset(context_params) | {"self"}
        self._options_of = options_of
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    # --- registering ------------------------------------------------------------------------------------------
    def register(self, name: str, entry: T | None = None, *, overwrite: bool = False, **meta):
        """Register ``entry`` under ``name``; without ``entry``, a decorator that does so and returns the entry.

        A name already taken by another entry raises ``self.error`` unless ``overwrite``; registering the same
        entry again under its name is a no-op (a module imported twice). ``meta``: free-form facts shown by
        :meth:`describe` (e.g. ``usage="cifar10:ROOT"``).
        """

        def add(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise self.error(f"a {self.kind} needs a non-empty name, got {name!r}")
            taken = self._entries.get(name)
            if taken is not None and taken is not obj and not overwrite:
                raise self.error(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._entries[name] = obj
            self._meta[name] = dict(meta)
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin's or a test's entry); an unknown name is ignored."""
        self._entries.pop(name, None)
        self._meta.pop(name, None)

    # --- reading ----------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

    def unknown(self, name: Any) -> str:
        """The message for an unknown name: what was asked for, and every name there is."""
        return f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names()) or '(none registered)'}"

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given when ``name`` was registered."""
        self[name]  # the unknown-name error
        return dict(self._meta[name])

    def describe(self, name: str) -> Description:
        """Name, docstring summary and options (with defaults) of entry ``name``."""
        from .helptext import first_sentence

        entry = self[name]
        doc = inspect.getdoc(entry) or ""
        options = self._options_of(entry) if self._options_of else self.signature_options(entry)
        # the first sentence, not the first line: a sentence wrapped in the source is shown whole
        return Description(name=name, summary=first_sentence(doc), doc=doc, options=options, meta=self.meta(name))

    def signature_options(self, entry: Any) -> dict[str, Any]:
        """Keyword parameters of a callable (a class: of its ``__init__``) besides the context parameters, with
        their defaults (``REQUIRED`` for none). ``**kwargs`` and ``*args`` are not listed."""
        target = entry.__init__ if inspect.isclass(entry) else entry
        try:
            params = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):
            return {}
        return {p.name: (REQUIRED if p.default is p.empty else p.default) for p in params
                if p.name not in self._context and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before the import: modules being imported may already look names up
            self._builtins()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
