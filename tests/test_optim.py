"""Optimizer: schedules, weight-decay mask, head learning-rate multiplier, clipping."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import traverse_util

from hierjax import optim
from hierjax.settings import OptimizerSettings


def opt_config(**overrides):
    return dataclasses.replace(OptimizerSettings(), **overrides)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = optim.build_schedule(opt_config(lr=0.4, warmup_epochs=1.0),
                                    total_steps=100, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(schedule(10), 0.4, rtol=1e-6)
    np.testing.assert_allclose(schedule(55), 0.2, rtol=1e-5)  # half-way through the cosine
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_drops_at_epochs():
    schedule = optim.build_schedule(
        opt_config(lr=0.1, schedule="step", warmup_epochs=0.0, decay_epochs=(2.0, 4.0),
                   decay_factor=0.2), total_steps=60, steps_per_epoch=10)
    np.testing.assert_allclose([schedule(s) for s in (0, 19, 20, 39, 40)],
                               [0.1, 0.1, 0.02, 0.02, 0.004], rtol=1e-5)


def params():
    return {"backbone": {"conv": {"kernel": jnp.ones((3, 3, 2, 2))},
                         "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
            "heads": {"level0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}}


def test_weight_decay_skips_batchnorm_and_biases_and_heads_get_multiplier():
    config = opt_config(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.5,
                        head_lr_multiplier=10.0)
    tx = optim.build_optimizer(config, lambda step: 0.1)
    p = params()
    zero_grads = jax.tree.map(jnp.zeros_like, p)
    updates, _ = tx.update(zero_grads, tx.init(p), p)
    # Only kernels decay: update = -lr * wd * w, and 10x lr for the heads.
    np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["heads"]["level0"]["kernel"], -0.5)
    for leaf in (updates["backbone"]["bn"]["scale"], updates["backbone"]["bn"]["bias"],
                 updates["heads"]["level0"]["bias"]):
        np.testing.assert_allclose(leaf, 0.0)


def test_gradient_clipping():
    p = params()
    grads = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), p)
    tx = optim.build_optimizer(opt_config(momentum=0.0, nesterov=False, weight_decay=0.0,
                                          grad_clip_norm=1.0), lambda step: 1.0)
    updates, _ = tx.update(grads, tx.init(p), p)
    norm = np.sqrt(sum(float(jnp.sum(u ** 2)) for u in jax.tree.leaves(updates)))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-5)


def adamw_reference(grads, params, *, lr, b1, b2, eps, weight_decay, decays, steps):
    """AdamW (Loshchilov & Hutter) by hand: m, v moments with bias correction; the decay
    lr * wd * w is decoupled from the gradient and applied to the masked leaves only."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    params = {k: np.array(x, np.float64) for k, x in params.items()}
    for t in range(1, steps + 1):
        for k in params:
            g = grads[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g ** 2
            update = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            if decays[k]:
                update = update + weight_decay * params[k]
            params[k] = params[k] - lr * update
    return params


def test_adamw_matches_the_update_rule_with_decoupled_decay_on_kernels_only():
    rng = np.random.default_rng(0)
    p = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params())
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), p)
    config = opt_config(name="adamw", momentum=0.9, nesterov=False, weight_decay=0.1,
                        head_lr_multiplier=3.0)
    tx = optim.build_optimizer(config, lambda step: 1e-2)
    state, got = tx.init(p), p
    for _ in range(3):
        updates, state = tx.update(g, state, got)
        got = jax.tree.map(lambda a, u: a + u, got, updates)
    flat_p = traverse_util.flatten_dict(p, sep="/")
    flat_g = traverse_util.flatten_dict(g, sep="/")
    for key, value in traverse_util.flatten_dict(got, sep="/").items():
        lr = 1e-2 * (3.0 if key.startswith("heads") else 1.0)
        want = adamw_reference({key: np.asarray(flat_g[key], np.float64)},
                               {key: np.asarray(flat_p[key])}, lr=lr, b1=0.9, b2=0.999,
                               eps=1e-8, weight_decay=0.1,
                               decays={key: key.endswith("kernel")}, steps=3)[key]
        np.testing.assert_allclose(value, want, rtol=2e-5, atol=1e-6, err_msg=key)
