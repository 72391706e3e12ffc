"""The model zoo: shapes, exact parameter counts, dtypes, heads, bilinear pooling, BN sync.

Big networks are never really initialised: `jax.eval_shape` of `init` gives the
parameter shapes for free, and the forward tests fill those shapes with numpy random
numbers (`_fake_variables`), which avoids compiling every initialiser.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from hierjax.models import (
    BACKBONE_PARAMS,
    HEADS_PARAMS,
    VGG,
    BilinearPool,
    CascadedHeads,
    Classifier,
    ResNet,
    WideResNet,
    build_model,
)
from hierjax.models import specs
from hierjax.models.layers import Backbone
from hierjax.settings import MODELS, ModelSettings
from hierjax.models.resnet import BasicBlock, BottleneckBlock

# ------------------------------------------------------------------------------ helpers


def _key(seed=0):
    # The "rbg" generator: XLA:CPU compiles threefry-based initialisers slowly (seconds
    # for a small conv), which would dominate these tests.
    return jax.random.key(seed, impl="rbg")


def _shapes(model, x, **kwargs):
    """Abstract variables of `model` for input `x`; nothing is computed."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **kwargs))


def _eval_shape_apply(model, x, **kwargs):
    """Abstract output of `model.apply` on abstract variables."""
    return jax.eval_shape(lambda v: model.apply(v, x, **kwargs), _shapes(model, x))


def _num_params(variables):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


def _fake_variables(model, x, seed=0):
    """Variables of the right shapes: kernels ~ N(0, 1/fan_in), BN near identity."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        else:  # bias, BN mean
            value = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, _shapes(model, x))


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _config(**overrides):
    """ModelSettings of a small model (validated by hierjax.settings, not here)."""
    defaults = dict(name="resnet18", small_input=True, wrn_depth=10, wrn_width=1,
                    vgg_batchnorm=False, dtype="float32")
    return dataclasses.replace(ModelSettings(), **(defaults | overrides))


# --------------------------------------------------------------------- backbone shapes


@pytest.mark.parametrize(
    "backbone, image_shape, feature_dim",
    [
        (ResNet(18, small_input=True), (2, 32, 32, 3), 512),
        (ResNet(18), (2, 64, 64, 3), 512),
        (ResNet(50, small_input=True), (2, 32, 32, 3), 2048),
        (WideResNet(depth=10, width=1), (2, 32, 32, 3), 64),
        (VGG(16), (2, 32, 32, 3), 512),
        (VGG(19, batchnorm=True), (2, 16, 16, 3), 512),
    ],
    ids=["resnet18-cifar", "resnet18-imagenet", "resnet50", "wrn-10-1", "vgg16", "vgg19-bn"],
)
def test_backbone_features(backbone, image_shape, feature_dim):
    x = jnp.zeros(image_shape)
    feats = _eval_shape_apply(backbone, x, train=True, mutable=["batch_stats"])[0]
    assert (feats.shape, feats.dtype) == ((image_shape[0], feature_dim), jnp.float32)


@pytest.mark.parametrize(
    "backbone, map_shape",
    [
        (ResNet(18, pool=False), (2, 2, 2, 512)),  # stride 32
        (ResNet(18, small_input=True, pool=False), (2, 8, 8, 512)),  # stride 8
        (WideResNet(depth=10, width=2, pool=False), (2, 16, 16, 128)),  # stride 4
        (VGG(16, pool=False), (2, 4, 4, 512)),  # four 2x2 pools, no fifth
    ],
)
def test_unpooled_feature_maps(backbone, map_shape):
    assert _eval_shape_apply(backbone, jnp.zeros((2, 64, 64, 3)), train=False).shape == map_shape


# -------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "backbone, expected",
    [
        # torchvision totals minus the 1000-way fc (512 * 1000 + 1000 or 2048 * 1000 + 1000)
        (ResNet(18), 11_689_512 - 513_000),  # = 11_176_512
        (ResNet(34), 21_797_672 - 513_000),
        (ResNet(50), 25_557_032 - 2_049_000),  # = 23_508_032
        (ResNet(101), 44_549_160 - 2_049_000),
        # torchvision vgg16/vgg19(_bn).features
        (VGG(16), 14_714_688),
        (VGG(16, batchnorm=True), 14_723_136),
        (VGG(19), 20_024_384),
        (VGG(19, batchnorm=True), 20_035_392),
    ],
)
def test_backbone_parameter_counts(backbone, expected):
    assert _num_params(_shapes(backbone, jnp.zeros((1, 32, 32, 3)))) == expected


def test_wrn_28_10_parameter_count():
    # WRN-28-10 on CIFAR-100 (the paper's 36.5M); n = 4 blocks per group, widths
    # 160/320/640, convs without bias, BN = 2 params per channel:
    #   stem            3*3*3*16                                               =        432
    #   group1 block0   BN(16) + 9*16*160 + BN(160) + 9*160*160 + 1x1 16*160   =    256_352
    #          x3       BN(160) + 9*160*160 + BN(160) + 9*160*160               =  1_384_320
    #   group2 block0   BN(160) + 9*160*320 + BN(320) + 9*320*320 + 160*320    =  1_434_560
    #          x3       (2 * BN(320) + 2 * 9*320*320) * 3                      =  5_533_440
    #   group3 block0   BN(320) + 9*320*640 + BN(640) + 9*640*640 + 320*640    =  5_736_320
    #          x3       (2 * BN(640) + 2 * 9*640*640) * 3                      = 22_126_080
    #   final BN(640) + fc 640*100 + 100                                       =     65_380
    #                                                                   total = 36_536_884
    model = Classifier(WideResNet(depth=28, width=10), (100,), cascade=False)
    assert _num_params(_shapes(model, jnp.zeros((1, 32, 32, 3)))) == 36_536_884


def test_wrn_rejects_bad_depth():
    with pytest.raises(ValueError, match=r"6n \+ 4.*got 27"):
        _shapes(WideResNet(depth=27), jnp.zeros((1, 32, 32, 3)))


# ------------------------------------------------------------------------------ blocks


@pytest.mark.parametrize("block_cls", [BasicBlock, BottleneckBlock])
def test_zero_init_residual_blocks_start_as_identity(block_cls):
    norm = Backbone().norm(train=False)
    last_bn = "bn2" if block_cls is BasicBlock else "bn3"
    width = 8 // block_cls.expansion  # 8 channels in and out: identity shortcut
    x = _images((2, 4, 4, 8))
    blocks = {
        zero_init: block_cls(width, 1, norm=norm, zero_init_residual=zero_init, dtype=jnp.float32)
        for zero_init in (False, True)
    }
    plain = blocks[False].init(_key(), x)["params"]
    np.testing.assert_array_equal(plain[last_bn]["scale"], np.ones(8))
    variables = blocks[True].init(_key(), x)
    np.testing.assert_array_equal(variables["params"][last_bn]["scale"], np.zeros(8))
    np.testing.assert_allclose(blocks[True].apply(variables, x), nn.relu(x), atol=1e-6)


# ------------------------------------------------------------------------------ dtypes


def test_bfloat16_compute_float32_parameters_and_outputs():
    model = build_model(_config(name="wrn", dtype="bfloat16"), (10, 4))
    x = _images((2, 8, 8, 3))
    variables = _fake_variables(model, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    apply = partial(
        model.apply,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=True,
    )
    outputs, state = jax.jit(apply)(variables, x)
    backbone = state["intermediates"]["backbone"]
    assert backbone["group3_block0"]["__call__"][0].dtype == jnp.bfloat16
    assert backbone["final_bn"]["__call__"][0].dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state["batch_stats"]))
    assert outputs["features"].dtype == jnp.float32
    assert [z.dtype for z in outputs["logits"]] == [jnp.float32, jnp.float32]
    assert [z.shape for z in outputs["logits"]] == [(2, 10), (2, 4)]


# ------------------------------------------------------------------------------- heads


@pytest.mark.parametrize("skip", [False, True])
def test_cascaded_heads_wiring_and_values(skip):
    classes, dim = (5, 3, 2), 4
    heads = CascadedHeads(classes, skip=skip)
    feats = _images((3, dim))
    params = heads.init(_key(1), feats)["params"]
    extra = dim if skip else 0
    assert [params[f"level{l}"]["kernel"].shape for l in range(3)] == [
        (dim, 5),
        (5 + extra, 3),
        (5 + 3 + extra, 2),
    ]

    # By hand: z_l = [z_0, ..., z_{l-1}, (f)] W_l + b_l.
    f = np.asarray(feats, np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    z0 = f @ p["level0"]["kernel"] + p["level0"]["bias"]
    in1 = np.concatenate([z0, f], 1) if skip else z0
    z1 = in1 @ p["level1"]["kernel"] + p["level1"]["bias"]
    in2 = np.concatenate([z0, z1, f], 1) if skip else np.concatenate([z0, z1], 1)
    z2 = in2 @ p["level2"]["kernel"] + p["level2"]["bias"]
    logits = heads.apply({"params": params}, feats)
    for got, want in zip(logits, (z0, z1, z2), strict=True):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_single_level_is_the_flat_classifier():
    feats = _images((3, 4))
    heads = CascadedHeads((6,), skip=True)
    variables = heads.init(_key(), feats)
    (logits,) = heads.apply(variables, feats)
    dense = variables["params"]["level0"]
    np.testing.assert_allclose(logits, feats @ dense["kernel"] + dense["bias"], rtol=1e-6)


# ---------------------------------------------------------------------------- bilinear


def _bilinear_reference(x, eps):
    x = np.asarray(x, np.float64)
    b, h, w, c = x.shape
    positions = x.reshape(b, h * w, c)
    z = np.einsum("bnc,bnd->bcd", positions, positions).reshape(b, c * c) / (h * w)
    z = np.sign(z) * np.sqrt(np.abs(z) + eps)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_bilinear_pool_matches_numpy():
    x = _images((2, 3, 5, 4))
    pool = BilinearPool()
    assert pool.init(_key(), x) == {}  # no reduction, no parameters
    want = _bilinear_reference(x, pool.eps)
    np.testing.assert_allclose(pool.apply({}, x), want, rtol=1e-5, atol=1e-6)


def test_bilinear_pool_with_reduction_matches_numpy():
    x = _images((2, 3, 3, 6))
    pool = BilinearPool(dim=3)
    variables = pool.init(_key(), x)
    kernel = np.asarray(variables["params"]["reduce_conv"]["kernel"])  # [1, 1, 6, 3]
    reduced = np.asarray(x, np.float64) @ kernel[0, 0]
    out = pool.apply(variables, x)
    assert out.shape == (2, 9)
    np.testing.assert_allclose(out, _bilinear_reference(reduced, pool.eps), rtol=1e-5, atol=1e-6)


def test_bilinear_pool_gradient_is_finite_on_a_zero_map():
    grad = jax.grad(lambda x: BilinearPool().apply({}, x).sum())(jnp.zeros((1, 2, 2, 3)))
    assert np.isfinite(np.asarray(grad)).all()


def test_bilinear_classifier_from_config():
    model = build_model(_config(bilinear=True, bilinear_dim=8), (7, 3), skip=True)
    x = jnp.zeros((2, 32, 32, 3))
    heads = _shapes(model, x)["params"][HEADS_PARAMS]
    assert heads["bilinear"]["reduce_conv"]["kernel"].shape == (1, 1, 512, 8)
    assert heads["level0"]["kernel"].shape == (64, 7)
    assert heads["level1"]["kernel"].shape == (7 + 64, 3)
    assert _eval_shape_apply(model, x, train=False)["features"].shape == (2, 64)


# -------------------------------------------------------------------------- batch norm


def test_batchnorm_statistics_are_synchronised_under_pmap():
    devices, per_device = 4, 2
    x = _images((devices * per_device, 8, 8, 3))
    synced = WideResNet(depth=10, width=1, bn_axis_name="batch")
    single = WideResNet(depth=10, width=1)
    variables = _fake_variables(single, x)

    step_kwargs = dict(train=True, mutable=["batch_stats"])
    want_feats, want = jax.jit(partial(single.apply, **step_kwargs))(variables, x)
    got_feats, got = jax.pmap(
        partial(synced.apply, **step_kwargs),
        axis_name="batch",
        in_axes=(None, 0),
        devices=jax.devices()[:devices],
    )(variables, x.reshape(devices, per_device, *x.shape[1:]))

    got_feats = got_feats.reshape(want_feats.shape)
    np.testing.assert_allclose(got_feats, want_feats, rtol=1e-4, atol=1e-5)
    for d in range(devices):
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(g[d], w, rtol=1e-4, atol=1e-6),
            got["batch_stats"],
            want["batch_stats"],
        )
    # The updates moved the statistics, so the comparison above is not vacuous.
    moved = jax.tree.map(
        lambda a, b: np.abs(a - b).max(), want["batch_stats"], variables["batch_stats"]
    )
    assert min(jax.tree.leaves(moved)) > 1e-3


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wrn", "vgg16"])
def test_factory_gives_every_batchnorm_the_axis_name(name):
    # The pmap test above proves the numerics; this checks each backbone's wiring by
    # recording every BatchNorm call while tracing (no compilation).
    model = build_model(_config(name=name, vgg_batchnorm=True), (10,), bn_axis_name="batch")
    x = jnp.zeros((2, 32, 32, 3))
    variables = _shapes(model, x)
    axis_names = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            axis_names.append(context.module.axis_name)
        return next_fun(*args, **kwargs)

    train_step = partial(model.apply, train=True, mutable=["batch_stats"])
    with nn.intercept_methods(record):  # vmap binds the axis name as pmap would
        jax.eval_shape(jax.vmap(train_step, (None, 0), axis_name="batch"), variables, x[None])
    num_bn = len(jax.tree.leaves(variables["batch_stats"])) // 2  # mean and var each
    assert num_bn > 0 and axis_names == ["batch"] * num_bn


def test_eval_mode_uses_running_averages():
    model = WideResNet(depth=10, width=1, dropout=0.5)
    x = _images((3, 8, 8, 3))
    variables = _fake_variables(model, x)
    # Needs neither a mutable collection nor a dropout rng (this would raise otherwise).
    _eval_shape_apply(model, x, train=False)
    evaluate = jax.jit(partial(model.apply, train=False, mutable=["batch_stats"]))
    feats, state = evaluate(variables, x)
    jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])
    # Each example is normalised on its own: changing one leaves the others as they were.
    other_feats, _ = evaluate(variables, x.at[0].multiply(3.0))
    np.testing.assert_array_equal(other_feats[1:], feats[1:])
    assert not np.allclose(other_feats[0], feats[0])


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize("name", MODELS)
def test_factory_builds_every_model(name):
    model = build_model(_config(name=name), (10, 4, 2), skip=True)
    size = max(32, specs.min_image_size(name, "", aux_logits=False))
    variables = _shapes(model, jnp.zeros((2, size, size, 3)))
    assert set(variables["params"]) == {BACKBONE_PARAMS, HEADS_PARAMS}
    heads = variables["params"][HEADS_PARAMS]
    dim = heads["level0"]["kernel"].shape[0]
    assert [heads[f"level{l}"]["kernel"].shape for l in range(3)] == [
        (dim, 10),
        (10 + dim, 4),
        (10 + 4 + dim, 2),
    ]


def test_factory_flat_heads_use_the_fine_level_only():
    model = build_model(_config(), (10, 4, 2), cascade=False)
    x = jnp.zeros((2, 32, 32, 3))
    outputs = _eval_shape_apply(model, x, train=False)
    assert [z.shape for z in outputs["logits"]] == [(2, 10)]
    assert outputs["features"].shape == (2, 512)


def test_factory_skip_feeds_the_features_to_the_coarser_heads():
    x = jnp.zeros((2, 32, 32, 3))
    for skip, width in ((True, 10 + 512), (False, 10)):
        model = build_model(_config(), (10, 4), cascade=True, skip=skip)
        assert _shapes(model, x)["params"][HEADS_PARAMS]["level1"]["kernel"].shape == (width, 4)


def test_factory_rejects_bad_classes():
    with pytest.raises(ValueError, match="classes_per_level"):
        build_model(_config(), ())
