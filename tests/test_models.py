"""noisykd.models: registry, parameter counts against the reference code, shapes, features, wrap_module."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisykd.errors import ConfigError
from noisykd.models import (
    ClassifierNet, count_parameters, create_model, list_models, model_descriptions, register_model, wrap_module,
)

ALL_MODELS = ["mlp", "preact_resnet18", "preact_resnet34_gjs", "resnet18", "resnet34", "resnet50", "small_cnn"]

# Parameters for 10 classes, 3x32x32 inputs, default options. Measured here; the ResNet counts equal those of
# kuangliu/pytorch-cifar, preact_resnet18 that of DivideMix's PreResNet.ResNet18, preact_resnet34_gjs that of
# GJS's models/preact_resnet.py.
PARAMS_10_CLASSES = {
    "preact_resnet18": 11_171_274,
    "preact_resnet34_gjs": 1_860_138,
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "small_cnn": 94_762,
    "mlp": 855_050,
}


def test_registry_lists_every_model_with_a_description():
    assert list_models() == ALL_MODELS
    assert list_models("*resnet3*") == ["preact_resnet34_gjs", "resnet34"]
    descriptions = model_descriptions()
    assert set(descriptions) == set(ALL_MODELS) and all(descriptions.values())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count(name):
    model = create_model(name, num_classes=10).eval()
    assert isinstance(model, ClassifierNet)
    assert count_parameters(model) == PARAMS_10_CLASSES[name]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)  # full width, CIFAR-sized input
    # The head is Linear(feature_dim, C): 100 classes add 90 * (feature_dim + 1) parameters.
    assert count_parameters(create_model(name, 100)) - PARAMS_10_CLASSES[name] == 90 * (model.feature_dim + 1)


def test_preact_resnet18_cross_checked_against_the_known_reference_count():
    # 11,171,146 is the published count of the PreActResNet18 without any stem BN (kuangliu). DivideMix (and
    # so BKD) adds BN-ReLU after the stem conv: +2*64 parameters, nothing else differs.
    assert count_parameters(create_model("preact_resnet18", 10, stem_bn=False)) == 11_171_146
    assert PARAMS_10_CLASSES["preact_resnet18"] - 11_171_146 == 2 * 64
    assert count_parameters(create_model("preact_resnet18", 10, final_bn=True)) == 11_171_274 + 2 * 512


def test_gjs_preact_resnet34_is_the_small_three_stage_net():
    model = create_model("preact_resnet34_gjs", 10)
    assert len(model.stages) == 3 and [len(s) for s in model.stages] == [5, 5, 5]
    assert model.feature_dim == 128 and count_parameters(model) < 2_000_000


@pytest.mark.parametrize("in_channels,image_size,num_classes", [(1, 8, 3), (3, 32, 10), (1, 28, 7), (3, 64, 100)])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_shapes_and_forward_with_features(name, in_channels, image_size, num_classes):
    # Narrow convolutional nets keep this fast; width scales channels only, the code path is the default one.
    options = {} if name == "mlp" else {"width": 0.25}
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_channels=in_channels, image_size=image_size, **options).eval()
    x = torch.randn(2, in_channels, image_size, image_size)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        logits2, feats2 = model.forward_with_features(x)
        head = model.classify(feats)
    assert logits.shape == (2, num_classes)
    assert feats.shape == (2, model.feature_dim)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(feats2, feats)
    torch.testing.assert_close(head, logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["preact_resnet18", "resnet18", "small_cnn", "preact_resnet34_gjs"])
def test_forward_with_features_in_train_mode_and_feature_maps(name):
    model = create_model(name, 5, in_channels=1, image_size=8, width=0.25).train()
    x = torch.randn(4, 1, 8, 8)
    logits, feats = model.forward_with_features(x)
    logits.sum().backward()  # the graph reaches the trunk
    assert all(p.grad is not None for p in model.parameters())
    maps = model.feature_maps(x)
    assert maps.shape[:2] == (4, model.feature_dim) and min(maps.shape[2:]) >= 1


def test_image_size_pairs_and_small_cnn_pooling():
    assert create_model("small_cnn", 10, image_size=8).pooled_after == [0]
    assert create_model("small_cnn", 10, image_size=28).pooled_after == [0, 1]
    assert create_model("small_cnn", 10, image_size=32).pooled_after == [0, 1, 2]
    model = create_model("mlp", 4, in_channels=1, image_size=(6, 10))
    assert model(torch.randn(3, 1, 6, 10)).shape == (3, 4)
    with pytest.raises(ValueError, match="built for inputs"):
        model(torch.randn(3, 1, 10, 6))


def test_mlp_options():
    model = create_model("mlp", 10, in_channels=1, image_size=8, hidden_sizes=[32], batch_norm=True, dropout=0.1)
    assert model.feature_dim == 32 and any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    linear = create_model("mlp", 10, in_channels=1, image_size=8, hidden_sizes=[])
    assert linear.feature_dim == 64 and count_parameters(linear) == 64 * 10 + 10


def test_batchnorm_and_conv_initialisation():
    model = create_model("resnet18", 10, width=0.25)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.stem[0]
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5  # Kaiming normal, fan_out
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.2


def test_gjs_net_uses_pytorchs_own_initialisation_and_kaiming_is_an_option():
    # GJS's models/preact_resnet.py sets no initialisation: the stem conv is exactly what nn.Conv2d draws itself.
    torch.manual_seed(7)
    gjs = create_model("preact_resnet34_gjs", 10)
    torch.manual_seed(7)
    plain = nn.Conv2d(3, 32, 3, padding=1, bias=False)
    assert torch.equal(gjs.stem.weight, plain.weight)
    for m in gjs.modules():  # PyTorch's Kaiming-uniform(a = sqrt(5)): |w| <= 1 / sqrt(fan_in)
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            assert float(m.weight.detach().abs().max()) <= fan_in ** -0.5 + 1e-7
    torch.manual_seed(7)
    kaiming = create_model("preact_resnet34_gjs", 10, init="kaiming")
    conv = kaiming.stages[1][0].conv1
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5  # Kaiming normal, fan_out
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.1
    assert not torch.equal(kaiming.stem.weight, gjs.stem.weight)
    # DivideMix's PreAct-ResNet-18 keeps Kaiming by default; torch_default is an option there too
    torch.manual_seed(7)
    stem18 = create_model("preact_resnet18", 10, init="torch_default").stem.weight  # 64 channels, same bound
    assert torch.equal(stem18[:32], plain.weight)
    with pytest.raises(ValueError, match="init must be one of kaiming, torch_default, got 'xavier'"):
        create_model("preact_resnet34_gjs", 10, init="xavier")


def test_unknown_model_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*preact_resnet18.*small_cnn"):
        create_model("resnet99", 10)
    with pytest.raises(ConfigError, match="no option depth.*width"):
        create_model("resnet18", 10, depth=3)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet18", 0)
    with pytest.raises(ConfigError, match="image_size"):
        create_model("mlp", 10, image_size=(8, 8, 8))
    # a bad option value is a ConfigError naming the model and the option (one line at the command line)
    with pytest.raises(ConfigError, match=r"model 'small_cnn' \(channels=\[\]\): small_cnn needs at least one stage"):
        create_model("small_cnn", 10, channels=[])


def test_model_config_rebuilds_the_model():
    model = create_model("small_cnn", 3, in_channels=1, image_size=8, width=0.5)
    rebuilt = create_model(**model.model_config)
    assert rebuilt.model_config == model.model_config
    assert count_parameters(rebuilt) == count_parameters(model)


def test_register_model_adds_a_custom_network():
    @register_model("test_tiny_linear")
    def tiny(num_classes, in_channels=3, image_size=32):
        """A linear model for this test."""
        return wrap_module(nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1],
                                                                 num_classes)))

    try:
        model = create_model("test_tiny_linear", 4, in_channels=1, image_size=5)
        assert "test_tiny_linear" in list_models()
        assert model(torch.randn(2, 1, 5, 5)).shape == (2, 4) and model.feature_dim == 25
    finally:
        from noisykd.models import MODELS

        MODELS.unregister("test_tiny_linear")


def test_wrap_module_on_a_plain_sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    model = wrap_module(net)
    assert isinstance(model, ClassifierNet) and model.feature_dim == 16 and model.num_classes == 3
    x = torch.randn(4, 1, 8, 8)
    logits, feats = model.forward_with_features(x)
    assert feats.shape == (4, 16)
    torch.testing.assert_close(logits, net(x))
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.features(x), feats)
    torch.testing.assert_close(model.classify(feats), logits)
    assert list(model.state_dict()) == ["module." + k for k in net.state_dict()]
    assert wrap_module(model) is model

    # An EMA teacher is a deep copy: its hook must fill the copy, and the copy's weights are its own.
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        teacher.module[-1].bias.add_(1.0)
    t_logits, t_feats = teacher.forward_with_features(x)
    torch.testing.assert_close(t_feats, feats)
    torch.testing.assert_close(t_logits, logits + 1.0)
    torch.testing.assert_close(model(x), logits)


def test_wrap_module_logits_mode_and_checks():
    convs = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match="feature_dim"):
        wrap_module(convs)
    model = wrap_module(convs, feature_dim=5)
    x = torch.randn(2, 1, 8, 8)
    logits, feats = model.forward_with_features(x)
    assert model.feature_dim == 5 and feats.shape == (2, 5)
    torch.testing.assert_close(feats, logits)

    # The last Linear is not the output layer: taking features at its input would be wrong, so it says so.
    softmaxed = nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.LogSoftmax(dim=1))
    with pytest.raises(ConfigError, match="features='logits'"):
        wrap_module(softmaxed).forward_with_features(x)
    assert wrap_module(softmaxed, features="logits").forward_with_features(x)[1].shape == (2, 3)
    with pytest.raises(ConfigError, match="nn.Module"):
        wrap_module(lambda t: t)


def test_small_cnn_learns_8x8_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)
    train, test = order[:1400], order[1400:]

    torch.manual_seed(0)
    model = create_model("small_cnn", 10, in_channels=1, image_size=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: one thread is as fast and does not suffer from a busy machine
    try:
        for _ in range(4):  # about 0.2 s per epoch on one core; 4 epochs reach ~98% (seeds 0-4)
            model.train()
            shuffled = train[torch.randperm(len(train), generator=generator)]
            for start in range(0, len(shuffled), 64):
                batch = shuffled[start:start + 64]
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.9, accuracy
    assert np.isfinite(loss.item())
