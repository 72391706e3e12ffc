"""Optimizer: schedules, weight-decay mask, head learning-rate multiplier, clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierjax import config_lib, optim


def opt_config(**overrides):
    config = config_lib.base_config().optimizer
    config.update(overrides)
    return config


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


def test_gradient_clipping_and_adamw():
    p = params()
    grads = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), p)
    tx = optim.build_optimizer(opt_config(momentum=0.0, nesterov=False, weight_decay=0.0,
                                          grad_clip_norm=1.0), lambda step: 1.0)
    updates, _ = tx.update(grads, tx.init(p), p)
    norm = np.sqrt(sum(float(jnp.sum(u ** 2)) for u in jax.tree.leaves(updates)))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
    tx = optim.build_optimizer(opt_config(name="adamw"), lambda step: 1e-3)
    updates, _ = tx.update(grads, tx.init(p), p)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_unknown_optimizer_and_schedule_name_the_key():
    with pytest.raises(ValueError, match="config.optimizer.name"):
        optim.build_optimizer(opt_config(name="lamb"), lambda step: 1.0)
    with pytest.raises(ValueError, match="config.optimizer.schedule"):
        optim.build_schedule(opt_config(schedule="poly"), total_steps=10, steps_per_epoch=5)
