"""Networks behind one registry: ``create_model(name, num_classes, in_channels, image_size, **options)``.

Registered: ``preact_resnet18`` (DivideMix/BKD), ``preact_resnet34_gjs`` (GJS/NRD's 3-stage "PreActResNet-34",
~1.9 M params), ``resnet18``/``resnet34``/``resnet50`` (kuangliu CIFAR ResNets; CMD, MODUL), ``small_cnn`` and
``mlp``. Every model is a :class:`ClassifierNet` with ``features``, ``classify``, ``forward_with_features``
and ``feature_dim``; :func:`wrap_module` adapts any other ``nn.Module``.
"""

from .ema import ema_update
from .registry import (
    MODELS, ClassifierNet, WrappedClassifier, count_parameters, create_model, image_hw_of, init_weights, list_models,
    model_descriptions, register_model, wrap_module,
)
from .preact_resnet import PreActBlock, PreActResNet
from .resnet import BasicBlock, Bottleneck, ResNet
from .small import MLP, SmallCNN

__all__ = [
    "ClassifierNet", "WrappedClassifier", "wrap_module", "register_model", "create_model", "list_models", "MODELS",
    "ema_update",
    "model_descriptions", "count_parameters", "init_weights", "image_hw_of",
    "PreActBlock", "PreActResNet", "BasicBlock", "Bottleneck", "ResNet", "SmallCNN", "MLP",
]
