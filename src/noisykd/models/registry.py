"""The model interface (:class:`ClassifierNet`), the model registry and :func:`wrap_module`.

Every network in noisykd is a :class:`ClassifierNet`: a trunk that maps images to penultimate features and a
head that maps features to logits. Methods that need both (MODUL's feature distillation, prototypes, detection
on embeddings) call :meth:`ClassifierNet.forward_with_features`, which runs the trunk once.

Registry, in the spirit of timm::

    from noisykd.models import create_model, list_models
    net = create_model("preact_resnet18", num_classes=10)                 # CIFAR, 3x32x32
    net = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    logits, feats = net.forward_with_features(x)                          # (B, C), (B, D)

Any ``torch.nn.Module`` that maps images to logits can be used through the Python API after
``wrap_module(module)`` (see its docstring for how features are found).
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "ClassifierNet", "WrappedClassifier", "wrap_module", "register_model", "MODELS", "create_model", "list_models",
    "model_descriptions", "count_parameters", "init_weights", "INIT_SCHEMES",
]


# ----------------------------------------------------------------------------------------------------------
# The interface every model implements
# ----------------------------------------------------------------------------------------------------------

class ClassifierNet(nn.Module):
    """Base class: an image classifier split into a feature trunk and a classification head.

    Subclasses implement :meth:`features` and :meth:`classify` and set ``feature_dim`` and ``num_classes``.

    Shapes: x is a float tensor (B, in_channels, H, W), already normalised; features (B, feature_dim);
    logits (B, num_classes).
    """

    feature_dim: int
    num_classes: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images x (B, C_in, H, W)."""
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from penultimate features (B, feature_dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Logits (B, num_classes) of images x (B, C_in, H, W); with ``with_features``, (logits, features).

        Features go through ``forward`` too so that a wrapper that only intercepts ``forward`` (DDP, compile)
        sees every call that needs gradients."""
        if with_features:
            return self.forward_with_features(x)
        return self.classify(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, num_classes), features (B, feature_dim)), running the trunk once."""
        feats = self.features(x)
        return self.classify(feats), feats


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of a model; buffers such as BN running stats are not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


#: weight initialisations a network builder accepts as ``init``
INIT_SCHEMES = ("kaiming", "torch_default")


def init_weights(model: nn.Module, scheme: str = "kaiming") -> None:
    """Initialise ``model``'s weights in place.

    ``kaiming`` (reference-code initialisation, torchvision's ResNets, DivideMix): Kaiming-normal convolutions
    (fan_out, ReLU), BN weight 1 and bias 0; Linear layers keep PyTorch's default initialisation.
    ``torch_default``: leave every layer as PyTorch built it (Kaiming-uniform with a = sqrt(5) for convolutions
    and Linear layers, BN weight 1 and bias 0), as GJS's PreActResNet code, which sets no initialisation.
    """
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
    if scheme == "torch_default":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------
# Any nn.Module as a ClassifierNet
# ----------------------------------------------------------------------------------------------------------

_FEATURE_MODES = ("auto", "linear_input", "logits")


class WrappedClassifier(ClassifierNet):
    """A plain ``nn.Module`` (images -> logits) seen through the :class:`ClassifierNet` interface.

    Made by :func:`wrap_module`; the wrapped network is ``self.module`` (state-dict keys get a ``module.``
    prefix). Two ways to get features:

    - ``"linear_input"``: a forward hook on ``self.head``, the last ``nn.Linear`` registered in the module,
      records that layer's input (flattened to (B, D)); ``classify(f) = head(f)``. This is exact only when the
      head's output is the module's output. The first :meth:`forward_with_features` call checks this and
      raises :class:`~noisykd.errors.ConfigError` otherwise (use ``features="logits"`` then). The hook is a
      bound method of the wrapper, so ``copy.deepcopy`` (EMA teachers) and ``torch.save`` re-bind it to the copy.
    - ``"logits"``: features are the logits themselves and ``classify`` is the identity.
    """

    def __init__(self, module: nn.Module, mode: str, head: nn.Linear | None, feature_dim: int,
                 num_classes: int | None):
        super().__init__()
        self.module = module
        self.mode = mode
        self.feature_dim = int(feature_dim)
        self.num_classes = num_classes if num_classes is not None else (head.out_features if head else feature_dim)
        # Not registered as a submodule a second time (it already lives inside self.module).
        self.__dict__["head"] = head
        # Filled by the hook only during forward_with_features, emptied right after (no tensor is kept, so
        # the wrapper stays deep-copyable and holds no graph).
        self._capturing = False
        self._captured: torch.Tensor | None = None
        self._head_output: torch.Tensor | None = None
        self._head_is_last: bool | None = None
        if head is not None:
            head.register_forward_hook(self._capture_head_io)

    def _capture_head_io(self, _layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not self._capturing:
            return
        self._captured = inputs[0]
        self._head_output = output

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "logits":
            logits = self.module(x)
            return logits, logits
        self._capturing = True
        try:
            logits = self.module(x)
            feats, head_out = self._captured, self._head_output
        finally:
            self._capturing = False
            self._captured = self._head_output = None
        if feats is None:
            raise ConfigError(f"wrap_module: the last nn.Linear ({self.head}) was not called in forward; "
                              "pass features='logits'")
        if self._head_is_last is None:
            self._head_is_last = head_out is logits
        if not self._head_is_last:
            raise ConfigError("wrap_module: the output of the wrapped module is not the output of its last "
                              f"nn.Linear ({self.head}); features taken at that layer's input would not give "
                              "these logits. Pass features='logits' or implement ClassifierNet directly")
        return logits, feats.flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.mode == "logits" else self.head(features)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        return self.forward_with_features(x) if with_features else self.module(x)


def wrap_module(module: nn.Module, feature_dim: int | None = None, *, features: str = "auto",
                num_classes: int | None = None) -> ClassifierNet:
    """Use any ``nn.Module`` mapping images (B, C, H, W) to logits (B, num_classes) as a :class:`ClassifierNet`.

    A :class:`ClassifierNet` is returned unchanged. Otherwise:

    - ``features="auto"`` (default): ``"linear_input"`` if the module contains an ``nn.Linear``, else
      ``"logits"``.
    - ``features="linear_input"``: features are the input of the *last registered* ``nn.Linear`` (recorded by
      a forward hook), ``feature_dim = that_linear.in_features``, ``classify = that_linear``. Right for the
      usual ``trunk -> flatten -> Linear`` networks; checked on the first call.
    - ``features="logits"``: features are the logits; ``feature_dim`` is ``num_classes`` (from the last
      ``nn.Linear`` if there is one, else it must be given as ``feature_dim``).

    Modules with a different structure should subclass :class:`ClassifierNet` instead.
    """
    if isinstance(module, ClassifierNet):
        return module
    if not isinstance(module, nn.Module):
        raise ConfigError(f"wrap_module expects a torch.nn.Module, got {type(module).__name__}")
    if features not in _FEATURE_MODES:
        raise ConfigError(f"wrap_module: features must be one of {_FEATURE_MODES}, got {features!r}")
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    head = linears[-1] if linears else None
    mode = features if features != "auto" else ("linear_input" if head is not None else "logits")
    if mode == "linear_input":
        if head is None:
            raise ConfigError("wrap_module: features='linear_input' needs an nn.Linear in the module")
        if feature_dim is not None and feature_dim != head.in_features:
            raise ConfigError(f"wrap_module: feature_dim={feature_dim} but the last nn.Linear takes "
                              f"{head.in_features} features")
        return WrappedClassifier(module, mode, head, head.in_features, num_classes)
    dim = feature_dim if feature_dim is not None else (num_classes or (head.out_features if head else None))
    if dim is None:
        raise ConfigError("wrap_module: cannot tell the number of logits of a module without nn.Linear; "
                          "pass feature_dim=NUM_CLASSES")
    return WrappedClassifier(module, "logits", None, dim, num_classes if num_classes is not None else dim)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

ModelBuilder = Callable[..., ClassifierNet]


def _ensure_builtin_models() -> None:
    # Imported lazily so that registry.py has no import cycle with the network modules.
    from . import preact_resnet, resnet, small  # noqa: F401


#: Network builders by name; ``create_model`` is the way to call them.
MODELS: Registry[ModelBuilder] = Registry("model", builtins=_ensure_builtin_models,
                                          context_params=("num_classes", "in_channels", "image_size"))


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(num_classes, in_channels, image_size, **kwargs) -> ClassifierNet``.

    :func:`create_model` passes image_size as an (H, W) tuple; the builder's other keyword parameters are the
    model's options (unknown options are rejected before the builder is called).

    The first sentence of the builder's docstring is its description in :func:`model_descriptions` and
    ``noisykd models``; a paragraph of ``option: meaning`` lines (hanging indentation for more lines) says what
    each option means in ``noisykd models NAME``.
    """
    return MODELS.register(name)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell pattern (``"*resnet*"``)."""
    names = MODELS.names()
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_descriptions() -> dict[str, str]:
    """Registered model names and the first sentence of their builder's docstring (plain text)."""
    return {n: MODELS.describe(n).summary for n in MODELS.names()}


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int | Sequence[int] = 32,
                 **kwargs) -> ClassifierNet:
    """Build a registered network.

    name: one of :func:`list_models`. num_classes: C, the number of logits. in_channels: 1 (grey) or 3 (RGB)
    (any positive number works). image_size: H (= W), or (H, W); the convolutional nets are size-agnostic
    (global average pooling) and use it only to decide where to pool; the MLP needs it to size its input.
    kwargs: network options (e.g. ``width=0.5``), see each builder.

    The returned model carries ``model_config``, a dict with the arguments it was created from, so that
    ``create_model(**model.model_config)`` rebuilds it. Raises :class:`~noisykd.errors.ConfigError` (a
    ``ValueError``) for an unknown name or option.
    """
    builder = MODELS[name]
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    image_hw = image_hw_of(image_size)
    check_model_options(name, kwargs)
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels, image_size=image_hw, **kwargs)
    except (ValueError, TypeError) as exc:  # one error dialect: a bad option value is a config error
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "default options"
        raise ConfigError(f"model {name!r} ({shown}): {exc}") from None
    model.model_config = dict(name=name, num_classes=num_classes, in_channels=in_channels,
                              image_size=image_size, **kwargs)
    return model


def check_model_options(name: str, options: dict) -> None:
    """ConfigError for an unknown model or option name, before anything is built (option values are checked
    when the model is built)."""
    accepted = MODELS.describe(name).options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)}; its options: "
                          f"{', '.join(accepted) or 'none'}")


def image_hw_of(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or a pair; raises ConfigError for anything else or non-positive sizes."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        hw = tuple(image_size)
    else:
        raise ConfigError(f"image_size must be an int or (H, W), got {image_size!r}")
    for v in hw:
        _check_positive_int("image_size", v)
    return int(hw[0]), int(hw[1])


def _check_positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{field} must be a positive int, got {value!r}")
