"""Optimizers and learning-rate schedules (optax) from `hierjax.settings.OptimizerSettings`
(the validated keys of `config.optimizer`, documented there): SGD with momentum and
coupled L2 decay, or AdamW with decoupled decay; weight decay on kernels only
(BatchNorm scales and biases are skipped); the new heads get `head_lr_multiplier` times
the backbone's learning rate; optional global-norm clipping.
"""

from __future__ import annotations

import jax
import optax

from hierjax.models import HEADS_PARAMS

def build_schedule(opt_config, *, total_steps, steps_per_epoch):
    """Learning rate as a function of the step, for the peak rate `opt_config.lr`.

    cosine: 0 -> lr linearly over the warm-up, then lr (1 + cos(pi t)) / 2 to 0 at the
    last step; step: the warm-up, then lr x decay_factor^(drops passed).
    """
    warmup = int(round(opt_config.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    if opt_config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=opt_config.lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=0.0)
    boundaries = {int(round(e * steps_per_epoch)): opt_config.decay_factor
                  for e in opt_config.decay_epochs}
    steps = optax.piecewise_constant_schedule(opt_config.lr, boundaries)
    if warmup == 0:
        return steps
    ramp = optax.linear_schedule(0.0, opt_config.lr, warmup)
    return optax.join_schedules([ramp, steps], [warmup])


def decay_mask(params):
    """True for the parameters weight decay applies to: kernels (ndim > 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _param_groups(params):
    """'heads' for the new classifier heads, 'backbone' for everything else."""
    return {name: jax.tree.map(lambda _, n=name: "heads" if n == HEADS_PARAMS else "backbone",
                               sub)
            for name, sub in params.items()}


def build_optimizer(opt_config, schedule):
    """The optax transformation: clip -> per-group (backbone / heads) optimizer."""

    def optimizer(lr_scale):
        lr = (lambda step: lr_scale * schedule(step)) if lr_scale != 1.0 else schedule
        if opt_config.name == "sgd":
            return optax.chain(
                optax.add_decayed_weights(opt_config.weight_decay, mask=decay_mask),
                optax.sgd(lr, momentum=opt_config.momentum or None,
                          nesterov=opt_config.nesterov))
        return optax.adamw(lr, b1=opt_config.momentum, weight_decay=opt_config.weight_decay,
                           mask=decay_mask, nesterov=opt_config.nesterov)

    per_group = optax.multi_transform(
        {"backbone": optimizer(1.0), "heads": optimizer(opt_config.head_lr_multiplier)},
        _param_groups)
    if opt_config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), per_group)
    return per_group
