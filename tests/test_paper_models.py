"""The papers' own networks: GoogLeNet, Inception-V3, AlexNet and VGG's fc7.

Parameter counts are checked against torchvision's published totals with
`jax.eval_shape` (nothing is initialised). There is no torchvision here, so the torch
references are rebuilt below with torchvision's module names (hence state-dict keys);
their own parameter totals must match the published ones too, which checks the
references. They get random weights and BatchNorm statistics, are saved as
.safetensors and .pth, loaded into the Flax backbones, and both must give the same
eval-mode features. Inputs are small where the architecture allows; the
adaptive-pooling regimes (identity, averaging down, repeating up) are each exercised.
Tests that need torch skip without it. The file takes about a minute on two CPU cores,
most of it compiling the Inception nets and moving VGG's 100M-parameter fc6 around.
"""

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import linen as nn
from flax import traverse_util

from hierjax.models import BACKBONE_PARAMS
from hierjax.models.alexnet import AlexNet
from hierjax.models.googlenet import GoogLeNet, GoogLeNetAux, max_pool_ceil
from hierjax.models.inception_v3 import InceptionAux, InceptionV3
from hierjax.models.layers import Backbone, adaptive_avg_pool, flatten_chw
from hierjax.models.pretrained import backbone_from_torch, load_pretrained
from hierjax.models.vgg import VGG

BATCH = 2

# --------------------------------------------------------------------- Flax helpers


class _ImageNetModel(nn.Module):
    """A backbone with torchvision's 1000-way layers: fc on the features, and one on
    each auxiliary head (GoogLeNet's aux fc2, Inception-V3's AuxLogits.fc)."""

    backbone: nn.Module

    @nn.compact
    def __call__(self, x, *, train):
        out = self.backbone(x, train=train)
        feats, aux = out if isinstance(out, tuple) else (out, ())
        return nn.Dense(1000)(feats), [nn.Dense(1000)(a) for a in aux]


def _shapes(model, image_size, *, train=False):
    """Abstract variables of `model` for a [1, size, size, 3] input; nothing is computed."""
    x = jnp.zeros((1, image_size, image_size, 3))
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda: model.init(rngs, x, train=train))


def _num_params(variables):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _config(name, *, pretrained="", batchnorm=False, features="pool", aux_logits=False):
    return types.SimpleNamespace(name=name, pretrained=str(pretrained), vgg_batchnorm=batchnorm,
                                 features=features, aux_logits=aux_logits, small_input=False)


# ----------------------------------------------------------------- parameter counts

# torchvision's published totals (its model docs / `sum(p.numel())`).
GOOGLENET = 6_624_904  # the pretrained model, aux heads dropped
GOOGLENET_AUX = 13_004_888  # GoogLeNet(aux_logits=True), checked on the reference below
INCEPTION_V3 = 27_161_264  # with AuxLogits
ALEXNET = 61_100_840
VGG16, VGG16_BN, VGG19, VGG19_BN = 138_357_544, 138_365_992, 143_667_240, 143_678_248


@pytest.mark.parametrize(
    "backbone, image_size, expected",
    [
        (GoogLeNet(), 64, GOOGLENET),
        (GoogLeNet(aux_logits=True), 64, GOOGLENET_AUX),
        (InceptionV3(aux_logits=True), 299, INCEPTION_V3),
        (AlexNet(features="fc7"), 224, ALEXNET),
        (VGG(16, features="fc7"), 32, VGG16),
        (VGG(16, batchnorm=True, features="fc7"), 32, VGG16_BN),
        (VGG(19, features="fc7"), 32, VGG19),
        (VGG(19, batchnorm=True, features="fc7"), 32, VGG19_BN),
    ],
    ids=["googlenet", "googlenet-aux", "inception_v3", "alexnet", "vgg16", "vgg16_bn", "vgg19",
         "vgg19_bn"],
)
def test_parameter_counts_match_torchvision(backbone, image_size, expected):
    # train=True so that the aux heads, and their 1000-way layers, exist.
    assert _num_params(_shapes(_ImageNetModel(backbone), image_size, train=True)) == expected


def test_feature_backbones_without_fc_layers():
    # features="pool" leaves out fc6/fc7: torchvision's totals less classifier (fc6-fc8).
    assert _num_params(_shapes(AlexNet(features="pool"), 64)) == ALEXNET - 58_631_144
    assert _num_params(_shapes(VGG(16), 32)) == VGG16 - 123_642_856


# ------------------------------------------------------------- shapes and outputs


def _output(model, image_size, *, train):
    x = jnp.zeros((BATCH, image_size, image_size, 3))
    variables = _shapes(model, image_size)
    apply = functools.partial(model.apply, train=train, mutable=["batch_stats"] if train else False,
                              rngs={"dropout": jax.random.key(0)})
    out = jax.eval_shape(apply, variables, x)
    return out[0] if train else out


def _shape_tree(out):
    return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), out)


F32 = jnp.float32


@pytest.mark.parametrize(
    "model, image_size, train, expected",
    [
        (GoogLeNet(), 64, True, ((2, 1024), F32)),
        (GoogLeNet(aux_logits=True), 64, False, ((2, 1024), F32)),
        (GoogLeNet(aux_logits=True), 15, True,
         (((2, 1024), F32), (((2, 1024), F32), ((2, 1024), F32)))),
        (GoogLeNet(aux_logits=True), 64, True,
         (((2, 1024), F32), (((2, 1024), F32), ((2, 1024), F32)))),
        (GoogLeNet(pool=False, dtype=jnp.bfloat16), 224, False, ((2, 7, 7, 1024), jnp.bfloat16)),
        (InceptionV3(), 75, True, ((2, 2048), F32)),
        (InceptionV3(aux_logits=True), 299, True, (((2, 2048), F32), (((2, 768), F32),))),
        (InceptionV3(aux_logits=True), 299, False, ((2, 2048), F32)),
        (InceptionV3(pool=False), 299, False, ((2, 8, 8, 2048), F32)),
        (AlexNet(), 224, True, ((2, 4096), F32)),
        (AlexNet(features="pool", dtype=jnp.bfloat16), 64, True, ((2, 256), F32)),
        (AlexNet(features="pool", pool=False), 224, False, ((2, 13, 13, 256), F32)),
        (VGG(16, features="fc7", dtype=jnp.bfloat16), 32, True, ((2, 4096), F32)),
        (VGG(19, pool=False), 64, False, ((2, 4, 4, 512), F32)),
    ],
    ids=["googlenet", "googlenet-aux-eval", "googlenet-aux-min-size", "googlenet-aux-train",
         "googlenet-map",
         "inception", "inception-aux-train", "inception-aux-eval", "inception-map", "alexnet",
         "alexnet-pool", "alexnet-map", "vgg16-fc7", "vgg19-map"],
)
def test_outputs(model, image_size, train, expected):
    assert _shape_tree(_output(model, image_size, train=train)) == expected


@pytest.mark.parametrize(
    "model, image_size, message",
    [
        (InceptionV3(), 74, r"at least 75x75"),
        (InceptionV3(aux_logits=True), 298, r"auxiliary head .* at least 299 px.*aux_logits=False"),
        (AlexNet(), 62, r"features='fc7' needs inputs of at least 63x63"),
        (AlexNet(features="pool"), 30, r"features='pool' needs inputs of at least 31x31"),
        (VGG(16, features="fc7"), 31, r"features='fc7' needs inputs of at least 32x32"),
        (VGG(16), 15, r"features='pool' needs inputs of at least 16x16"),
        (GoogLeNet(aux_logits=True), 14, r"GoogLeNet needs inputs of at least 15x15"),
        (AlexNet(features="fc8"), 224, r"features must be one of \['pool', 'fc7'\]"),
        (VGG(16, pool=False, features="fc7"), 64, r"pool=False .* needs features='pool'"),
    ],
)
def test_bad_settings_are_clear_errors(model, image_size, message):
    with pytest.raises(ValueError, match=message):
        _shapes(model, image_size)


def test_aux_heads_exist_after_an_eval_mode_init():
    params = _shapes(GoogLeNet(aux_logits=True), 64)["params"]
    assert {"aux1", "aux2"} <= set(params)
    assert params["aux1"]["fc1"]["kernel"].shape == (2048, 1024)
    assert "fc2" not in params["aux1"]


def test_flatten_chw_is_torchs_nchw_flatten():
    x_BxCxHxW = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(flatten_chw(jnp.asarray(x_BxCxHxW.transpose(0, 2, 3, 1))),
                                  x_BxCxHxW.reshape(2, -1))


# ------------------------------------------------------------ torch reference models


@functools.cache
def _torch_reference():
    """torch plus torchvision-layout GoogLeNet, Inception3, AlexNet and VGG."""
    torch = pytest.importorskip("torch")
    tnn, F = torch.nn, torch.nn.functional

    def transform(x):
        # torchvision's transform_input: ImageNet normalisation -> (x - 0.5) / 0.5.
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    class BasicConv2d(tnn.Module):
        def __init__(self, cin, cout, **kwargs):
            super().__init__()
            self.conv = tnn.Conv2d(cin, cout, bias=False, **kwargs)
            self.bn = tnn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    # ------------------------------------------------------------------ GoogLeNet
    class Inception(tnn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
            super().__init__()
            self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
            self.branch2 = tnn.Sequential(BasicConv2d(cin, c3r, kernel_size=1),
                                          BasicConv2d(c3r, c3, kernel_size=3, padding=1))
            self.branch3 = tnn.Sequential(BasicConv2d(cin, c5r, kernel_size=1),
                                          BasicConv2d(c5r, c5, kernel_size=3, padding=1))
            self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                          BasicConv2d(cin, pool_proj, kernel_size=1))

        def forward(self, x):
            branches = (self.branch1, self.branch2, self.branch3, self.branch4)
            return torch.cat([b(x) for b in branches], 1)

    class GoogLeNetAux(tnn.Module):
        def __init__(self, cin, num_classes):
            super().__init__()
            self.conv = BasicConv2d(cin, 128, kernel_size=1)
            self.fc1 = tnn.Linear(2048, 1024)
            self.fc2 = tnn.Linear(1024, num_classes)

        def hidden(self, x):
            # Up to fc1's ReLU (eval mode: the 0.7 dropout is the identity).
            x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
            return F.relu(self.fc1(x))

    class GoogLeNet(tnn.Module):
        def __init__(self, num_classes=1000, aux_logits=True, transform_input=False):
            super().__init__()
            self.transform_input = transform_input
            self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = tnn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = tnn.MaxPool2d(2, stride=2, ceil_mode=True)
            self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
            if aux_logits:
                self.aux1 = GoogLeNetAux(512, num_classes)
                self.aux2 = GoogLeNetAux(528, num_classes)
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.dropout = tnn.Dropout(0.2)
            self.fc = tnn.Linear(1024, num_classes)

        def features(self, x):
            """(pooled features, [aux1 input, aux2 input]) in eval mode."""
            x = transform(x) if self.transform_input else x
            x = self.maxpool1(self.conv1(x))
            x = self.maxpool2(self.conv3(self.conv2(x)))
            x = self.maxpool3(self.inception3b(self.inception3a(x)))
            x = aux1_in = self.inception4a(x)
            x = aux2_in = self.inception4d(self.inception4c(self.inception4b(x)))
            x = self.maxpool4(self.inception4e(x))
            x = self.inception5b(self.inception5a(x))
            return torch.flatten(self.avgpool(x), 1), [aux1_in, aux2_in]

    # ---------------------------------------------------------------- Inception-V3
    class InceptionA(tnn.Module):
        def __init__(self, cin, pool_features):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
            return torch.cat([self.branch1x1(x), b5, b3, bp], 1)

    class InceptionB(tnn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionC(tnn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for i in range(1, 6):
                bd = getattr(self, f"branch7x7dbl_{i}")(bd)
            bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
            return torch.cat([self.branch1x1(x), b7, bd, bp], 1)

    class InceptionD(tnn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3_2(self.branch3x3_1(x))
            b7 = x
            for i in range(1, 5):
                b7 = getattr(self, f"branch7x7x3_{i}")(b7)
            return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionE(tnn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
            return torch.cat([self.branch1x1(x), b3, bd, bp], 1)

    class InceptionAux(tnn.Module):
        def __init__(self, cin, num_classes):
            super().__init__()
            self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
            self.conv1 = BasicConv2d(128, 768, kernel_size=5)
            self.fc = tnn.Linear(768, num_classes)

        def hidden(self, x):
            x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
            return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    class Inception3(tnn.Module):
        def __init__(self, num_classes=1000, aux_logits=True, transform_input=False):
            super().__init__()
            self.transform_input = transform_input
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.maxpool1 = tnn.MaxPool2d(kernel_size=3, stride=2)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
            self.maxpool2 = tnn.MaxPool2d(kernel_size=3, stride=2)
            self.Mixed_5b = InceptionA(192, pool_features=32)
            self.Mixed_5c = InceptionA(256, pool_features=64)
            self.Mixed_5d = InceptionA(288, pool_features=64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = InceptionC(768, c7=128)
            self.Mixed_6c = InceptionC(768, c7=160)
            self.Mixed_6d = InceptionC(768, c7=160)
            self.Mixed_6e = InceptionC(768, c7=192)
            if aux_logits:
                self.AuxLogits = InceptionAux(768, num_classes)
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = InceptionE(1280)
            self.Mixed_7c = InceptionE(2048)
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.dropout = tnn.Dropout(0.5)
            self.fc = tnn.Linear(2048, num_classes)

        def features(self, x):
            """(pooled features, Mixed_6e map) in eval mode."""
            x = transform(x) if self.transform_input else x
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x))))
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
                x = getattr(self, f"Mixed_{name}")(x)
            mixed_6e = x
            x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
            return torch.flatten(self.avgpool(x), 1), mixed_6e

    # ------------------------------------------------------------- AlexNet, VGG
    class AlexNet(tnn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.features = tnn.Sequential(
                tnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), tnn.ReLU(),
                tnn.MaxPool2d(kernel_size=3, stride=2),
                tnn.Conv2d(64, 192, kernel_size=5, padding=2), tnn.ReLU(),
                tnn.MaxPool2d(kernel_size=3, stride=2),
                tnn.Conv2d(192, 384, kernel_size=3, padding=1), tnn.ReLU(),
                tnn.Conv2d(384, 256, kernel_size=3, padding=1), tnn.ReLU(),
                tnn.Conv2d(256, 256, kernel_size=3, padding=1), tnn.ReLU(),
                tnn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
            self.classifier = tnn.Sequential(
                tnn.Dropout(), tnn.Linear(256 * 6 * 6, 4096), tnn.ReLU(),
                tnn.Dropout(), tnn.Linear(4096, 4096), tnn.ReLU(),
                tnn.Linear(4096, num_classes),
            )

        def fc7(self, x):
            x = torch.flatten(self.avgpool(self.features(x)), 1)
            return self.classifier[:6](x)

        def pooled(self, x):
            return self.features[:12](x).mean(dim=(2, 3))  # ReLU(conv5), no pool 5

    class VGG(tnn.Module):
        cfgs = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}

        def __init__(self, depth, batchnorm, num_classes=1000, classifier=True):
            super().__init__()
            layers, channels = [], 3
            for width, num_convs in zip((64, 128, 256, 512, 512), self.cfgs[depth]):
                for _ in range(num_convs):
                    layers.append(tnn.Conv2d(channels, width, 3, padding=1))
                    layers += [tnn.BatchNorm2d(width), tnn.ReLU()] if batchnorm else [tnn.ReLU()]
                    channels = width
                layers.append(tnn.MaxPool2d(2, 2))
            self.features = tnn.Sequential(*layers)
            self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
            if classifier:
                self.classifier = tnn.Sequential(
                    tnn.Linear(512 * 7 * 7, 4096), tnn.ReLU(), tnn.Dropout(),
                    tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(),
                    tnn.Linear(4096, num_classes),
                )

        def fc7(self, x):
            x = torch.flatten(self.avgpool(self.features(x)), 1)
            return self.classifier[:6](x)

    return types.SimpleNamespace(torch=torch, googlenet=GoogLeNet, inception_v3=Inception3,
                                 alexnet=AlexNet, vgg=VGG)


def _randomize(module, seed):
    """He-normal weights, small biases, BN with random affine and running statistics
    (so a mixed-up mapping shows), in eval mode."""
    torch = _torch_reference().torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return module.eval()


def _save(state_dict, path):
    """A state dict (torch tensors) as .safetensors (numpy, torch-free) or .pth."""
    if path.suffix == ".safetensors":
        safetensors.numpy.save_file({k: v.numpy() for k, v in state_dict.items()}, path)
    else:
        _torch_reference().torch.save(state_dict, path)
    return path


def _load(backbone, config, init_size):
    """The backbone's variables from config.pretrained, through `load_pretrained`."""
    shapes = _shapes(backbone, init_size)
    variables = {col: {BACKBONE_PARAMS: tree} for col, tree in shapes.items()}
    loaded = load_pretrained(variables, config)
    return {col: tree[BACKBONE_PARAMS] for col, tree in loaded.items()}


def _images(image_size, seed=1):
    x_NCHW = np.random.default_rng(seed).normal(size=(BATCH, 3, image_size, image_size))
    return x_NCHW.astype(np.float32)


def _assert_close(got, expected):
    got = np.asarray(got)
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 1e-3  # the comparison means something
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def _forward(backbone, variables, x_NCHW):
    return jax.jit(lambda v, x: backbone.apply(v, x, train=False))(
        variables, x_NCHW.transpose(0, 2, 3, 1))


# --------------------------------------------------- reference totals, pooling ops


def test_torch_references_have_torchvisions_parameter_totals():
    ref = _torch_reference()

    def total(build):
        with ref.torch.device("meta"):  # shapes only, no memory
            return sum(p.numel() for p in build().parameters())

    assert total(lambda: ref.googlenet(aux_logits=False)) == GOOGLENET
    assert total(lambda: ref.googlenet(aux_logits=True)) == GOOGLENET_AUX
    assert total(ref.inception_v3) == INCEPTION_V3
    assert total(ref.alexnet) == ALEXNET
    assert [total(lambda: ref.vgg(d, bn)) for d, bn in ((16, False), (16, True), (19, False),
                                                        (19, True))] == [VGG16, VGG16_BN, VGG19,
                                                                         VGG19_BN]


@pytest.mark.parametrize(
    "size_in, size_out",
    [((7, 7), (7, 7)), ((6, 6), (6, 6)), ((8, 9), (7, 7)), ((14, 14), (4, 4)), ((5, 5), (4, 4)),
     ((13, 11), (6, 6)), ((2, 3), (7, 7)), ((1, 1), (6, 6))],
    ids=["identity7", "identity6", "down8x9", "down14", "down5", "down13x11", "up2x3", "up1"],
)
def test_adaptive_avg_pool_matches_torch(size_in, size_out):
    torch = _torch_reference().torch
    x_NCHW = np.random.default_rng(0).normal(size=(2, 3, *size_in)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x_NCHW), size_out)
    got = adaptive_avg_pool(jnp.asarray(x_NCHW.transpose(0, 2, 3, 1)), size_out)
    np.testing.assert_allclose(np.asarray(got), expected.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [4, 5, 6, 7, 14, 15, 112, 113])
@pytest.mark.parametrize("window, stride, padding", [(3, 2, 0), (2, 2, 0), (3, 1, 1)])
def test_max_pool_ceil_matches_torch(size, window, stride, padding):
    torch = _torch_reference().torch
    x_NCHW = np.random.default_rng(size).normal(size=(1, 2, size, size + 1)).astype(np.float32)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x_NCHW), window, stride, padding,
                                              ceil_mode=True)
    got = max_pool_ceil(jnp.asarray(x_NCHW.transpose(0, 2, 3, 1)), window, stride, padding)
    np.testing.assert_array_equal(np.asarray(got), expected.numpy().transpose(0, 2, 3, 1))


# ------------------------------------------------------------------ equivalence


def test_googlenet_matches_torch(tmp_path):
    # 80 px: the ceil-mode pools round up (40 -> 20 -> 10 -> 5 -> 3); the file has aux
    # heads, which a model without them ignores.
    ref = _torch_reference()
    torch_model = _randomize(ref.googlenet(transform_input=True), seed=0)
    path = _save(torch_model.state_dict(), tmp_path / "googlenet.safetensors")
    backbone = GoogLeNet(transform_input=True)
    variables = _load(backbone, _config("googlenet", pretrained=path), 80)

    x_NCHW = _images(80)
    with ref.torch.no_grad():
        expected, _ = torch_model.features(ref.torch.from_numpy(x_NCHW))
    _assert_close(_forward(backbone, variables, x_NCHW), expected.numpy())


def test_googlenet_aux_heads_match_torch(tmp_path):
    ref = _torch_reference()
    torch_model = _randomize(ref.googlenet(), seed=1)
    path = _save(torch_model.state_dict(), tmp_path / "googlenet.pth")
    config = _config("googlenet", pretrained=path, aux_logits=True)
    variables = _load(GoogLeNet(aux_logits=True), config, 64)

    # The heads at 14x14 (224 px: overlapping 4x4 pooling bins) and 5x5 (80 px).
    norm = Backbone(bn_epsilon=1e-3).norm(train=False)
    for name, channels, size in (("aux1", 512, 14), ("aux2", 528, 5)):
        x_NCHW = np.random.default_rng(2).normal(size=(BATCH, channels, size, size))
        x_NCHW = np.maximum(x_NCHW, 0).astype(np.float32)  # as after a ReLU
        with ref.torch.no_grad():
            expected = getattr(torch_model, name).hidden(ref.torch.from_numpy(x_NCHW)).numpy()
        head = {col: tree[name] for col, tree in variables.items()}
        got = GoogLeNetAux(norm, jnp.float32).apply(head, x_NCHW.transpose(0, 2, 3, 1),
                                                    train=False)
        _assert_close(got, expected)


def test_inception_v3_matches_torch(tmp_path):
    ref = _torch_reference()
    torch_model = _randomize(ref.inception_v3(transform_input=True), seed=3)
    path = _save(torch_model.state_dict(), tmp_path / "inception_v3.pth")
    backbone = InceptionV3(aux_logits=True, transform_input=True)
    config = _config("inception_v3", pretrained=path, aux_logits=True)
    # The aux head needs 299 px to be built; eval mode skips it, so 75 px, the
    # minimum, does for the features.
    variables = _load(backbone, config, 299)

    x_NCHW = _images(75)
    with ref.torch.no_grad():
        expected, _ = torch_model.features(ref.torch.from_numpy(x_NCHW))
    _assert_close(_forward(backbone, variables, x_NCHW), expected.numpy())

    map_NCHW = np.random.default_rng(4).normal(size=(BATCH, 768, 17, 17))
    map_NCHW = np.maximum(map_NCHW, 0).astype(np.float32)  # as after a ReLU
    with ref.torch.no_grad():
        expected_aux = torch_model.AuxLogits.hidden(ref.torch.from_numpy(map_NCHW)).numpy()
    norm = Backbone(bn_epsilon=1e-3).norm(train=False)
    head = {col: tree["AuxLogits"] for col, tree in variables.items()}
    got = InceptionAux(norm, jnp.float32).apply(head, map_NCHW.transpose(0, 2, 3, 1))
    _assert_close(got, expected_aux)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_file_with_aux_heads_loads_into_a_model_without(name):
    ref = _torch_reference()
    with ref.torch.device("meta"):  # keys and shapes are all the mapping reads
        torch_model = getattr(ref, name)(aux_logits=True)
    state_dict = {k: np.ones(v.shape, np.float32) for k, v in torch_model.state_dict().items()}
    backbone = (GoogLeNet if name == "googlenet" else InceptionV3)()
    loaded = backbone_from_torch(state_dict, _config(name), _shapes(backbone, 75))
    assert not {"aux1", "aux2", "AuxLogits"} & set(loaded["params"])
    assert all((np.asarray(leaf) == 1).all() for leaf in jax.tree.leaves(loaded))


@pytest.mark.parametrize(
    "features, image_size, suffix",
    [("fc7", 224, ".safetensors"), ("fc7", 256, ".pth"), ("pool", 64, ".safetensors")],
    # conv5's pooled map is 6x6 at 224 px (the adaptive pool is the identity) and
    # 7x7 at 256 px (averaged down to 6x6, overlapping bins).
    ids=["fc7-identity-pool", "fc7-averaging-pool", "pool"],
)
def test_alexnet_matches_torch(tmp_path, features, image_size, suffix):
    ref = _torch_reference()
    torch_model = _randomize(ref.alexnet(num_classes=10), seed=5)
    path = _save(torch_model.state_dict(), tmp_path / f"alexnet{suffix}")
    backbone = AlexNet(features=features)
    variables = _load(backbone, _config("alexnet", pretrained=path, features=features), image_size)

    x_NCHW = _images(image_size)
    with ref.torch.no_grad():
        forward = torch_model.fc7 if features == "fc7" else torch_model.pooled
        expected = forward(ref.torch.from_numpy(x_NCHW)).numpy()
    _assert_close(_forward(backbone, variables, x_NCHW), expected)


def _timm_vgg(state_dict):
    """timm's names for a torchvision VGG: fc6/fc7 as ConvMlp convs, fc8 as head.fc."""
    renamed = {"classifier.0": "pre_logits.fc1", "classifier.3": "pre_logits.fc2",
               "classifier.6": "head.fc"}
    out = {}
    for key, value in state_dict.items():
        module, _, attr = key.rpartition(".")
        if module == "classifier.0" and attr == "weight":
            value = value.reshape(-1, 512, 7, 7)
        elif module == "classifier.3" and attr == "weight":
            value = value.reshape(-1, 4096, 1, 1)
        out[f"{renamed.get(module, module)}.{attr}"] = value
    return out


@pytest.mark.parametrize(
    "depth, batchnorm, naming, suffix, image_size",
    [(16, True, "torchvision", ".safetensors", 64), (19, False, "timm", ".pth", 32)],
    # 64 px: a 2x2 conv5 pool, repeated up to 7x7; 32 px: 1x1.
    ids=["vgg16_bn-fc7", "vgg19-fc7-timm"],
)
def test_vgg_fc7_matches_torch(tmp_path, depth, batchnorm, naming, suffix, image_size):
    ref = _torch_reference()
    torch_model = _randomize(ref.vgg(depth, batchnorm, num_classes=10), seed=6)
    state_dict = torch_model.state_dict()
    if naming == "timm":
        state_dict = _timm_vgg(state_dict)
    path = _save(state_dict, tmp_path / f"vgg{suffix}")
    backbone = VGG(depth, batchnorm=batchnorm, features="fc7")
    config = _config(f"vgg{depth}", pretrained=path, batchnorm=batchnorm, features="fc7")
    variables = _load(backbone, config, image_size)

    x_NCHW = _images(image_size)
    with ref.torch.no_grad():
        expected = torch_model.fc7(ref.torch.from_numpy(x_NCHW)).numpy()
    _assert_close(_forward(backbone, variables, x_NCHW), expected)


# ----------------------------------------------------------------- wrong files


def _mapping_error(state_dict, backbone, config, image_size=64):
    variables = _shapes(backbone, image_size)
    arrays = {k: v.numpy() for k, v in state_dict.items()}
    with pytest.raises(ValueError) as info:
        backbone_from_torch(arrays, config, variables, source="'weights.pth'")
    message = str(info.value)
    assert "'weights.pth' (config.model.pretrained) does not fit" in message
    return message


def test_vgg16_file_for_vgg19():
    ref = _torch_reference()
    state_dict = ref.vgg(16, batchnorm=False, classifier=False).state_dict()
    message = _mapping_error(state_dict, VGG(19), _config("vgg19"))
    assert "does not fit config.model.name='vgg19'" in message
    # VGG-19's extra conv in blocks 3-5 shifts the Sequential's indices from 16 on.
    assert "12 missing keys:\n    features.16.bias\n" in message
    assert "6 unexpected keys:\n    features.17.bias\n" in message
    assert ("1 shape mismatches:\n    features.19.weight: file (512, 512, 3, 3), model needs "
            "(512, 256, 3, 3) (flax block4_conv1/kernel (3, 3, 256, 512))") in message
    assert ("looks like config.model.name='vgg16', config.model.vgg_batchnorm=False, "
            "config.model.features='pool'") in message


def test_vgg_file_without_fc_layers_for_fc7():
    ref = _torch_reference()
    state_dict = ref.vgg(16, batchnorm=False, classifier=False).state_dict()
    message = _mapping_error(state_dict, VGG(16, features="fc7"), _config("vgg16", features="fc7"))
    assert ("4 missing keys:\n    classifier.0.bias\n    classifier.0.weight\n"
            "    classifier.3.bias\n    classifier.3.weight") in message
    assert "config.model.features='pool'" in message


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_file_without_aux_heads_for_aux_logits(name):
    ref = _torch_reference()
    with ref.torch.device("meta"):  # keys and shapes are all the mapping reads
        torch_model = getattr(ref, name)(aux_logits=False)
    state_dict = {k: np.zeros(v.shape, np.float32) for k, v in torch_model.state_dict().items()}
    backbone = (GoogLeNet if name == "googlenet" else InceptionV3)(aux_logits=True)
    config = _config(name, aux_logits=True)
    with pytest.raises(ValueError) as info:
        backbone_from_torch(state_dict, config, _shapes(backbone, 299))
    message = str(info.value)
    assert f"does not fit config.model.name='{name}', config.model.aux_logits=True" in message
    aux = "aux1.conv.bn.bias" if name == "googlenet" else "AuxLogits.conv0.bn.bias"
    assert f"missing keys:\n    {aux}\n" in message
    assert "auxiliary heads" in message and "set config.model.aux_logits=False" in message


def test_alexnet_file_for_googlenet_lists_both_sides():
    ref = _torch_reference()
    state_dict = ref.alexnet(num_classes=10).state_dict()
    message = _mapping_error(state_dict, GoogLeNet(), _config("googlenet"))
    assert "missing keys:\n    conv1.bn.bias\n" in message
    assert "unexpected keys:\n    classifier.1.bias\n" in message
    assert "looks like config.model.name='alexnet'" in message


def test_unknown_architecture_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"name='wrn'.*resnet, vgg, alexnet, googlenet or "
                                         r"inception_v3"):
        backbone_from_torch({}, _config("wrn"), {"params": {}})


def test_loaded_tensors_are_in_flax_layout():
    ref = _torch_reference()
    torch_model = _randomize(ref.googlenet(), seed=7)
    state_dict = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    loaded = backbone_from_torch(state_dict, _config("googlenet", aux_logits=True),
                                 _shapes(GoogLeNet(aux_logits=True), 64))
    flat = traverse_util.flatten_dict(loaded)
    np.testing.assert_array_equal(flat["params", "inception4a", "branch2_1", "conv", "kernel"],
                                  state_dict["inception4a.branch2.1.conv.weight"]
                                  .transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat["params", "aux2", "fc1", "kernel"],
                                  state_dict["aux2.fc1.weight"].T)
    np.testing.assert_array_equal(flat["batch_stats", "inception5b", "branch4_1", "bn", "var"],
                                  state_dict["inception5b.branch4.1.bn.running_var"])
