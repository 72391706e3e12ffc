"""Pretrained backbone loading: torchvision-layout torch models are the reference.

There is no torchvision here, so the reference ResNets (BasicBlock / Bottleneck) and VGG
`features` Sequentials are rebuilt below with torchvision's module names. They get random
weights and random BatchNorm statistics, are saved as .safetensors and .pth, loaded
through `load_pretrained`, and both networks' pooled eval-mode features must agree.
Tests that need torch skip without it; the Flax variables come from `jax.eval_shape`
plus numpy, so nothing but the forward passes is compiled.
"""

import dataclasses
import functools
import logging
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy
from flax import traverse_util

from hierjax.settings import ModelSettings
from hierjax.models import BACKBONE_PARAMS, HEADS_PARAMS, build_model
from hierjax.models.pretrained import backbone_from_torch, load_pretrained, read_state_dict
from hierjax.train_step import StepContext, init_state

BATCH = 2

# ------------------------------------------------------------ torch reference models


@functools.cache
def _torch_reference():
    """torch plus torchvision-layout `resnet(depth)` and `vgg(depth, batchnorm)`."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride, downsample):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(tnn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride, downsample):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(planes * 4)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet(tnn.Module):
        layouts = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3))}

        def __init__(self, depth):
            super().__init__()
            block, blocks = self.layouts[depth]
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            inplanes = 64
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
                layers = []
                for j in range(n):
                    stride = 2 if i > 1 and j == 0 else 1
                    downsample = None
                    if stride != 1 or inplanes != planes * block.expansion:
                        downsample = tnn.Sequential(
                            tnn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                            tnn.BatchNorm2d(planes * block.expansion))
                    layers.append(block(inplanes, planes, stride, downsample))
                    inplanes = planes * block.expansion
                setattr(self, f"layer{i}", tnn.Sequential(*layers))
            self.avgpool = tnn.AdaptiveAvgPool2d(1)
            self.fc = tnn.Linear(inplanes, 10)  # in the file, ignored by the loader

        def features(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

    class VGG(tnn.Module):
        cfgs = {16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                     512, 512, 512, "M", 512, 512, 512, "M")}

        def __init__(self, depth, batchnorm):
            super().__init__()
            layers, channels = [], 3
            for v in self.cfgs[depth]:
                if v == "M":
                    layers.append(tnn.MaxPool2d(2, 2))
                    continue
                layers.append(tnn.Conv2d(channels, v, 3, padding=1))
                layers += [tnn.BatchNorm2d(v), tnn.ReLU()] if batchnorm else [tnn.ReLU()]
                channels = v
            self.features = tnn.Sequential(*layers)
            # torchvision's is 512*7*7 -> 4096 -> 4096 -> 1000; any size does, as the
            # loader ignores it.
            self.classifier = tnn.Sequential(tnn.Linear(512, 10))

        def pooled(self, x):
            # hierjax's VGG drops the fifth max pool and averages the conv5 map.
            return self.features[:-1](x).mean(dim=(2, 3))

    return types.SimpleNamespace(torch=torch, resnet=ResNet, vgg=VGG)


def _randomize_bn(module, seed):
    """Non-trivial BN weights and running statistics, so a mixed-up mapping shows."""
    torch = _torch_reference().torch
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return module.eval()


def _torch_model(name, batchnorm=True, seed=0):
    ref = _torch_reference()
    ref.torch.manual_seed(seed)
    depth = int(name.removeprefix("resnet").removeprefix("vgg"))
    model = ref.resnet(depth) if name.startswith("resnet") else ref.vgg(depth, batchnorm)
    return _randomize_bn(model, seed)


def _save(model, path):
    """The model's state dict as .safetensors (numpy, torch-free) or .pth."""
    state_dict = model.state_dict()
    if path.suffix == ".safetensors":
        safetensors.numpy.save_file({k: v.numpy() for k, v in state_dict.items()}, path)
    else:
        _torch_reference().torch.save(state_dict, path)
    return path


# -------------------------------------------------------------------- Flax side


def _model_config(name, *, pretrained="", batchnorm=True, small_input=False):
    return dataclasses.replace(ModelSettings(), name=name, pretrained=str(pretrained),
                               vgg_batchnorm=batchnorm, small_input=small_input,
                               dtype="float32")


def _variables(model, image_size, seed=0):
    """Random variables of the right shapes, without compiling any initialiser."""
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def _flat_backbone(variables):
    return {(col, *path): leaf for col, tree in variables.items()
            for path, leaf in traverse_util.flatten_dict(tree[BACKBONE_PARAMS]).items()}


# ------------------------------------------------------------------ equivalence


@pytest.mark.parametrize(
    "name, batchnorm, suffix, image_size",
    [
        ("resnet18", True, ".safetensors", 64),
        ("resnet50", True, ".pth", 64),
        ("vgg16", True, ".safetensors", 32),
        ("vgg16", False, ".pth", 32),
    ],
    ids=["resnet18-safetensors", "resnet50-pth", "vgg16_bn-safetensors", "vgg16-pth"],
)
def test_loaded_backbone_matches_torch(tmp_path, name, batchnorm, suffix, image_size):
    torch_model = _torch_model(name, batchnorm)
    path = _save(torch_model, tmp_path / f"weights{suffix}")
    config = _model_config(name, pretrained=path, batchnorm=batchnorm)
    model = build_model(config, (10, 5))
    variables = load_pretrained(_variables(model, image_size), config)

    x_NCHW = np.random.default_rng(1).normal(size=(BATCH, 3, image_size, image_size))
    x_NCHW = x_NCHW.astype(np.float32)
    torch = _torch_reference().torch
    with torch.no_grad():
        forward = torch_model.features if name.startswith("resnet") else torch_model.pooled
        expected = forward(torch.from_numpy(x_NCHW)).numpy()
    got = jax.jit(lambda v, x: model.apply(v, x, train=False)["features"])(
        variables, x_NCHW.transpose(0, 2, 3, 1))

    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 1e-3  # the comparison means something
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4 * scale)


def test_every_backbone_tensor_is_loaded_in_flax_layout():
    torch_model = _torch_model("resnet18")
    state_dict = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    config = _model_config("resnet18")
    variables = _variables(build_model(config, (10,)), 32)
    backbone = {col: tree[BACKBONE_PARAMS] for col, tree in variables.items()}

    loaded = traverse_util.flatten_dict(backbone_from_torch(state_dict, config, backbone))

    assert loaded.keys() == traverse_util.flatten_dict(backbone).keys()
    np.testing.assert_array_equal(loaded["params", "stage2_block0", "downsample_conv", "kernel"],
                                  state_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    for flax_leaf, torch_name in [("scale", "weight"), ("bias", "bias")]:
        np.testing.assert_array_equal(loaded["params", "stage4_block1", "bn2", flax_leaf],
                                      state_dict[f"layer4.1.bn2.{torch_name}"])
    for flax_leaf, torch_name in [("mean", "running_mean"), ("var", "running_var")]:
        np.testing.assert_array_equal(loaded["batch_stats", "stem_bn", flax_leaf],
                                      state_dict[f"bn1.{torch_name}"])


def test_heads_untouched_and_log(tmp_path, caplog):
    path = _save(_torch_model("resnet18"), tmp_path / "r18.safetensors")
    config = _model_config("resnet18", pretrained=path)
    variables = _variables(build_model(config, (10, 5)), 32)

    with caplog.at_level(logging.INFO):
        loaded = load_pretrained(variables, config)

    assert loaded["params"][HEADS_PARAMS] is variables["params"][HEADS_PARAMS]
    # 20 convs, 20 BNs x (scale, bias) params + (mean, var) statistics.
    assert "Loaded 100 pretrained backbone tensors" in caplog.text
    before, after = _flat_backbone(variables), _flat_backbone(loaded)
    assert after.keys() == before.keys()
    assert all(not np.array_equal(before[k], after[k]) for k in before)


def test_empty_pretrained_leaves_variables_unchanged():
    config = _model_config("resnet18")
    variables = {"params": {BACKBONE_PARAMS: {}, HEADS_PARAMS: {}}}
    assert load_pretrained(variables, config) is variables


def test_init_state_loads_the_pretrained_backbone(tmp_path):
    torch_model = _torch_model("resnet18")
    path = _save(torch_model, tmp_path / "r18.safetensors")
    config = _model_config("resnet18", pretrained=path)
    ctx = StepContext(model=build_model(config, (10, 5)), tx=optax.sgd(0.1), schedule=None,
                      ancestors=np.zeros((10, 2), np.int32), mean=(0.5,) * 3,
                      std=(0.25,) * 3, loss=None, axis_name=None)

    state = init_state(jax.random.key(0, impl="rbg"), ctx, (16, 16, 3), model_config=config)

    np.testing.assert_array_equal(
        state.params[BACKBONE_PARAMS]["stem_conv"]["kernel"],
        torch_model.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(state.batch_stats[BACKBONE_PARAMS]["stage3_block1"]["bn1"]["var"],
                                  torch_model.layer3[1].bn1.running_var.numpy())


# ---------------------------------------------------------------------- reading


def test_read_state_dict_unwraps_and_strips_module_prefix(tmp_path):
    torch = _torch_reference().torch
    state_dict = _torch_model("resnet18").state_dict()
    path = tmp_path / "checkpoint.pt"
    wrapped = {f"module.{k}": v.to(torch.bfloat16) if v.is_floating_point() else v
               for k, v in state_dict.items()}
    torch.save({"model": wrapped, "epoch": 90}, path)

    read = read_state_dict(path)

    assert read.keys() == state_dict.keys()
    assert read["conv1.weight"].dtype == np.float32
    np.testing.assert_array_equal(read["bn1.running_var"],
                                  state_dict["bn1.running_var"].to(torch.bfloat16).float().numpy())


def test_missing_file_names_path_and_config_key(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*config\.model\.pretrained"):
        load_pretrained({}, _model_config("resnet18", pretrained=path))


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ImportError, match=r"weights\.pth.*pip install torch.*\.safetensors"):
        read_state_dict(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        read_state_dict(path)


# ----------------------------------------------------------------- wrong files


def _load_error(tmp_path, file_model, config):
    path = _save(file_model, tmp_path / "weights.safetensors")
    config = dataclasses.replace(config, pretrained=str(path))
    variables = _variables(build_model(config, (10,)), 32)
    with pytest.raises(ValueError) as info:
        load_pretrained(variables, config)
    message = str(info.value)
    assert str(path) in message and "config.model.pretrained" in message
    return message


def test_resnet50_file_for_resnet18(tmp_path):
    message = _load_error(tmp_path, _torch_model("resnet50"), _model_config("resnet18"))
    assert "does not fit config.model.name='resnet18'" in message
    assert "165 unexpected keys:\n    layer1.0.bn3.bias\n" in message
    assert ("shape mismatches:\n    layer1.0.conv1.weight: file (64, 64, 1, 1), model needs "
            "(64, 64, 3, 3) (flax stage1_block0/conv1/kernel (3, 3, 64, 64))") in message
    assert "looks like config.model.name='resnet50'" in message


def test_vgg16_file_without_bn_for_vgg16_bn(tmp_path):
    message = _load_error(tmp_path, _torch_model("vgg16", batchnorm=False),
                          _model_config("vgg16", batchnorm=True))
    assert "62 missing keys:\n    features.1.bias\n" in message
    assert "config.model.name='vgg16', config.model.vgg_batchnorm=False" in message


def test_imagenet_stem_into_cifar_stem(tmp_path):
    message = _load_error(tmp_path, _torch_model("resnet18"),
                          _model_config("resnet18", small_input=True))
    assert "1 shape mismatches:\n    conv1.weight: file (64, 3, 7, 7)" in message
    assert "config.model.small_input=False" in message


def test_wrn_has_no_pretrained_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"conv1.weight": np.zeros((1,), np.float32)}, path)
    config = dataclasses.replace(_model_config("wrn", pretrained=path), wrn_depth=10,
                                 wrn_width=1)
    variables = _variables(build_model(config, (10,)), 8)
    with pytest.raises(ValueError, match=r"name='wrn'.*config\.model\.pretrained=''"):
        load_pretrained(variables, config)
