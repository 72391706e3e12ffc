"""The per-device training and evaluation steps: pure functions of (state, batch).

`train_step` and `eval_step` are written for one device and run under
`jax.pmap(..., axis_name="batch")`: gradients are pmean'd, BatchNorm statistics are
synchronised by the model's `bn_axis_name` and the GLM loss optionally sees the
all-gathered global batch. `eval_step` returns this device's metric sums; the caller
adds them up over batches and devices. Being pure per-device functions, they move to
`shard_map` unchanged.

Batch layout (per device): `image` uint8 [b, H, W, C], `labels` int32 [b, h],
evaluation batches also `valid` bool [b].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hierjax import decode as decode_lib
from hierjax.losses import cascaded_softmax_loss, coarse_constraint_loss, glm_loss
from hierjax.metrics import hierarchical_metrics
from hierjax.models.pretrained import load_pretrained

AXIS = "batch"


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training: a pytree of arrays, checkpointed whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What the steps need besides (state, batch): model, optimizer, loss settings.

    Attributes:
      model: the Flax classifier; returns {"features", "logits"}.
      tx: the optax transformation.
      schedule: learning rate as a function of the step (logged).
      ancestors: int [C_1, h] hierarchy table.
      mean, std: per-channel normalisation of uint8 images, in 0..1 units.
      loss: `hierjax.settings.LossSettings` (weights resolved for the variant).
      axis_name: pmap axis, None for a single un-mapped device.
    """

    model: Any
    tx: Any
    schedule: Any
    ancestors: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loss: Any
    axis_name: str | None = AXIS


def normalize(image_uint8, mean, std):
    """(x / 255 - mean) / std, in float32."""
    x = image_uint8.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def init_state(rng, ctx: StepContext, image_shape, model_config=None) -> TrainState:
    """Initial TrainState for images of `image_shape` (H, W, C).

    With `model_config` (config.model) whose `init_from` names another run, the
    parameters and batch statistics start from that run's newest good checkpoint
    (`hierjax.init_from`: what it lacks stays freshly initialised); otherwise, when its
    `pretrained` names a file, the backbone starts from that file's weights
    (`load_pretrained`) and the heads stay freshly initialised. The optimizer state is
    always fresh.
    """
    # One compiled program: eagerly, each initializer compiles on its own (109 programs,
    # 21 s of a WRN-10-1's start-up on the 2-core CPU).
    variables = jax.jit(functools.partial(ctx.model.init, train=False))(
        rng, jnp.zeros((1, *image_shape), jnp.float32))
    if model_config is not None and getattr(model_config, "init_from", ""):
        from hierjax import init_from  # it builds the other run's TrainState

        variables = init_from.load_variables(variables, model_config,
                                             ctx.model.classes_per_level,
                                             channels=image_shape[-1])
    elif model_config is not None:
        variables = load_pretrained(variables, model_config)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=jax.jit(ctx.tx.init)(params))


def compute_loss(outputs, labels, ctx: StepContext, valid=None):
    """Training objective and its parts.

    loss = sum_l w_l CE(z_l, y_l)                      (flat softmax when one head)
         + glm_weight * GLM(features)                  (optionally global batch;
                                                        x / ||x|| with glm_normalize)
         + coarse_weight * sum_{l>=1} BCE(z_1, t^l)    (coarse-label constraint)
         + aux_weight * sum_i CE(a_i, y_1)             (auxiliary heads, training only)

    a_i are the fine logits of the auxiliary heads (GoogLeNet, Inception-V3 with
    model.aux_logits), present in the training outputs only.
    """
    cfg = ctx.loss
    logits = outputs["logits"]
    h = labels.shape[-1]
    parts = {"ce": cascaded_softmax_loss(logits, labels,
                                         weights=tuple(cfg.level_weights)[:len(logits)],
                                         valid=valid)}
    total = parts["ce"]
    if cfg.glm_weight > 0:
        features = outputs["features"]
        if cfg.glm_normalize:  # an extension beyond the paper: GLM on the unit sphere
            features = features * jax.lax.rsqrt(
                jnp.maximum(jnp.sum(features * features, axis=-1, keepdims=True), 1e-12))
        parts["glm"] = glm_loss(features, labels, k=cfg.glm_k,
                                margins=tuple(cfg.glm_margins)[:h], valid=valid,
                                axis_name=ctx.axis_name if cfg.glm_global else None)
        total = total + cfg.glm_weight * parts["glm"]
    if cfg.coarse_weight > 0:
        parts["coarse"] = coarse_constraint_loss(
            logits[0], labels, ctx.ancestors, a=0.0, b=1.0, valid=valid,
            reduction=cfg.coarse_reduction)
        total = total + cfg.coarse_weight * parts["coarse"]
    aux_logits = outputs.get("aux_logits", [])
    if aux_logits and cfg.aux_weight > 0:
        parts["aux"] = sum(cascaded_softmax_loss([z], labels, valid=valid) for z in aux_logits)
        total = total + cfg.aux_weight * parts["aux"]
    return total, parts


def train_step(state: TrainState, batch, rng, ctx: StepContext):
    """One optimizer step on this device's share of the global batch.

    Returns the new state and pmean'd scalars: loss, its parts, fine top-1, lr, and the
    global norms of the gradient and of the new parameters (finite exactly when every
    gradient and parameter is, which the loop checks before it saves a state).
    """
    if ctx.axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(ctx.axis_name))
    images = normalize(batch["image"], ctx.mean, ctx.std)
    labels = batch["labels"]

    def loss_fn(params):
        outputs, updates = ctx.model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            mutable=["batch_stats"], rngs={"dropout": rng})
        loss, parts = compute_loss(outputs, labels, ctx)
        return loss, (parts, outputs["logits"][0], updates.get("batch_stats", {}))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (parts, fine_logits, batch_stats)), grads = grad_fn(state.params)
    if ctx.axis_name is not None:
        grads = jax.lax.pmean(grads, ctx.axis_name)
    updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    scalars = {"loss": loss, **parts,
               "top1": jnp.mean(jnp.argmax(fine_logits, -1) == labels[:, 0]),
               "lr": ctx.schedule(state.step), "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
    if ctx.axis_name is not None:
        scalars = jax.lax.pmean(scalars, ctx.axis_name)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, scalars


def eval_logits(variables, images_uint8, ctx: StepContext) -> list[jax.Array]:
    """Logits per level [b, C_l] of uint8 images [b, H, W, C], in evaluation mode: the
    one forward pass of evaluation and prediction. `variables`: {"params",
    "batch_stats"}."""
    images = normalize(images_uint8, ctx.mean, ctx.std)
    return ctx.model.apply(dict(variables), images, train=False)["logits"]


def eval_metrics(logits, batch, ctx: StepContext, decode: str = "fine"):
    """Summable metrics of a batch's logits: `hierarchical_metrics`, plus, for a
    `decode` other than "fine" (config.eval.decode), the sums of that tree-consistent
    decode (`hierjax.decode.decode_metrics`, keys prefixed "<decode>/"). Padded rows
    (valid False) count nowhere."""
    sums = hierarchical_metrics(logits, batch["labels"], ctx.ancestors, valid=batch["valid"])
    if decode != "fine":
        preds = decode_lib.decode(logits, ctx.ancestors, decode)
        sums.update(decode_lib.decode_metrics(preds, logits, batch["labels"], ctx.ancestors,
                                              prefix=f"{decode}/", valid=batch["valid"]))
    return sums


def eval_step(state: TrainState, batch, ctx: StepContext, decode: str = "fine"):
    """`eval_metrics` of this device's share of an evaluation batch."""
    logits = eval_logits({"params": state.params, "batch_stats": state.batch_stats},
                         batch["image"], ctx)
    return eval_metrics(logits, batch, ctx, decode)
