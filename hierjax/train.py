"""Training loop: build everything from a config, then train, evaluate, checkpoint.

`train_and_evaluate(config, workdir)` is the whole job. The per-device steps are the
pure functions of `hierjax.train_step`; this module only wires data, devices,
checkpoints, logging and profiling around them.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import flax.jax_utils
import jax
import numpy as np
from absl import logging

from hierjax import config_lib, data, metrics, optim
from hierjax.checkpointing import Checkpointer, PreemptionFlag
from hierjax.models import build_model
from hierjax.profiling import StepProfiler, annotate
from hierjax.reporting import MetricWriter, ProgressBar, summary_table
from hierjax.train_step import AXIS, StepContext, eval_step, init_state, train_step

BEST_METRIC = "top1/0"


def _check_levels(config, hierarchy):
    h = hierarchy.num_levels
    for key in ("level_weights", "glm_margins"):
        if len(config.loss[key]) < h:
            raise ValueError(
                f"config.loss.{key} has {len(config.loss[key])} entries but the "
                f"{config.data.name!r} hierarchy has {h} levels {hierarchy.level_names}; "
                f"give at least {h} values, fine level first.")


def build_context(config, hierarchy, *, total_steps, steps_per_epoch, axis_name=AXIS):
    """Model, optimizer and loss settings for the steps (`StepContext`)."""
    _check_levels(config, hierarchy)
    classes = hierarchy.num_classes
    model = build_model(config.model, classes if config.model.heads == "cascade"
                        else classes[:1], bn_axis_name=axis_name)
    schedule = optim.build_schedule(config.optimizer, total_steps=total_steps,
                                    steps_per_epoch=steps_per_epoch)
    mean, std = data.normalization(config.data)
    return StepContext(model=model, tx=optim.build_optimizer(config.optimizer, schedule),
                       schedule=schedule, ancestors=np.asarray(hierarchy.ancestors),
                       mean=tuple(mean), std=tuple(std), loss=config.loss,
                       axis_name=axis_name)


def evaluate(p_eval, replicated_state, batches):
    """Rates over every evaluation example exactly once (see hierjax.metrics)."""
    totals = {}
    for batch in batches:
        # Accumulate per device (an elementwise add); summing over the device axis on
        # device would be a cross-device collective, so that happens once, on the host.
        totals = metrics.merge(totals, p_eval(replicated_state, batch))
    totals = jax.tree.map(lambda x: np.sum(x, 0), jax.device_get(totals))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # only multi-host runs need it
        totals = jax.tree.map(lambda x: np.sum(x, 0),
                              multihost_utils.process_allgather(totals))
    return metrics.summarize(totals)


def _mean_scalars(pending):
    """Host-side mean of the per-step scalars fetched since the last log."""
    fetched = jax.device_get(pending)
    return {k: float(np.mean([s[k][0] for s in fetched])) for k in fetched[0]}


def train_and_evaluate(config, workdir) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if any.

    Returns the final evaluation metrics (hierjax.metrics.summarize names).
    """
    config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    num_devices, num_processes = jax.local_device_count(), jax.process_count()
    if config.batch_size % (num_devices * num_processes):
        raise ValueError(
            f"config.batch_size = {config.batch_size} must divide evenly over "
            f"{num_devices * num_processes} devices ({num_processes} process(es) x "
            f"{num_devices}); pick a multiple of {num_devices * num_processes}.")
    # Batches are read and augmented in the background (a thread for in-memory data,
    # grain worker processes for files) while the devices train.
    inputs = data.build_input(config, num_devices=num_devices,
                              process_index=jax.process_index(), num_processes=num_processes)
    hierarchy, train_iter = inputs.hierarchy, inputs.train
    steps_per_epoch = train_iter.steps_per_epoch
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    eval_every = config.eval_every_steps or steps_per_epoch
    logging.info("Data: %s, %d train / %d eval examples, hierarchy %s %s; %d devices, "
                 "%d steps of batch %d (%d per epoch).", config.data.name, inputs.num_train,
                 inputs.num_eval, hierarchy.level_names, hierarchy.num_classes,
                 num_devices * num_processes, total_steps, config.batch_size,
                 steps_per_epoch)

    ctx = build_context(config, hierarchy, total_steps=total_steps,
                        steps_per_epoch=steps_per_epoch)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    checkpointer = Checkpointer(
        workdir / "checkpoints", save_interval_steps=config.checkpoint_every_steps,
        max_to_keep=config.keep_checkpoints, keep_best=config.keep_best_checkpoints,
        best_metric=BEST_METRIC, async_save=config.async_checkpoints)
    resuming = checkpointer.latest_step() is not None
    # A resumed run takes its weights from the checkpoint, not the pretrained file.
    state = init_state(init_rng, ctx, inputs.image_shape,
                       model_config=None if resuming else config.model)
    if resuming:
        state, data_state = checkpointer.restore(state)
        train_iter.set_state(data_state)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, int(state.step))
    start_step = int(state.step)

    p_train = jax.pmap(functools.partial(train_step, ctx=ctx), axis_name=AXIS,
                       in_axes=(0, 0, None), donate_argnums=(0,))
    p_eval = jax.pmap(functools.partial(eval_step, ctx=dataclasses.replace(ctx, axis_name=None)))
    replicated = flax.jax_utils.replicate(state)
    del state  # the replicated copy is the one that trains

    writer = MetricWriter(workdir, purge_step=start_step or None)
    eval_metrics = {}
    if start_step >= total_steps:
        logging.info("Training already finished (step %d of %d); evaluating only.",
                     start_step, total_steps)
    else:
        progress = ProgressBar(total_steps, initial_step=start_step,
                               images_per_step=config.batch_size)
        profiler = StepProfiler(workdir / "profile", config.profile.start_step,
                                config.profile.num_steps)
        preemption = PreemptionFlag()
        pending = []
        try:
            for step in range(start_step, total_steps):
                profiler.maybe_start(step, replicated)
                with annotate(step):
                    batch = next(train_iter)
                    replicated, scalars = p_train(replicated, batch,
                                                  jax.random.fold_in(train_rng, step))
                pending.append(scalars)
                done = step + 1
                profiler.maybe_stop(done, replicated)
                if done % config.log_every_steps == 0 or done == total_steps:
                    means = _mean_scalars(pending)
                    pending = []
                    if not np.isfinite(means["loss"]):
                        raise FloatingPointError(
                            f"the training loss is {means['loss']} at step {done}; lower "
                            f"config.optimizer.lr ({config.optimizer.lr}) or the GLM weight "
                            f"config.loss.glm_weight ({config.loss.glm_weight}), or start "
                            "from pretrained weights (config.model.pretrained)")
                    writer.write(done, means, split="train")
                    progress.update(done, {"loss": means["loss"], "lr": means["lr"]})
                evaluated = done % eval_every == 0 or done == total_steps
                if evaluated:
                    eval_metrics = evaluate(p_eval, replicated, inputs.eval_batches())
                    writer.write(done, eval_metrics, split="eval")
                    logging.info("Step %d eval: %s", done, _eval_line(eval_metrics, hierarchy))
                stop = preemption.is_set()
                if stop or done == total_steps or checkpointer.should_save(done):
                    checkpointer.save(done, flax.jax_utils.unreplicate(replicated),
                                      train_iter.get_state(),
                                      metrics=eval_metrics if evaluated else None,
                                      force=stop or done == total_steps)
                if stop:
                    logging.warning("SIGTERM: saved a checkpoint at step %d; exiting.", done)
                    break
        finally:
            train_iter.close()
            profiler.close()
            progress.close()
            preemption.close()
            checkpointer.wait()

    if not eval_metrics:
        eval_metrics = evaluate(p_eval, replicated, inputs.eval_batches())
        writer.write(int(replicated.step[0]), eval_metrics, split="eval")
    writer.close()
    checkpointer.close()
    print(_summary(eval_metrics, hierarchy), flush=True)
    return eval_metrics


def _summary(rates, hierarchy):
    """Final table: one row per hierarchy level, then the tree-distance figures."""
    rows = {}
    for l, name in enumerate(hierarchy.level_names):
        row = {"top-1 via fine": rates[f"top1_from_fine/{l}"]}
        for column, key in (("top-1 own head", "top1"), ("top-5 own head", "top5"),
                            ("agrees with fine", "consistency")):
            if f"{key}/{l}" in rates:
                row[column] = rates[f"{key}/{l}"]
        rows[f"{name} ({hierarchy.num_classes[l]})"] = row
    table = summary_table(rows)
    return (f"Final evaluation on {int(rates['count'])} examples:\n{table}\n"
            f"mistake severity (mean LCA height of wrong fine predictions): "
            f"{rates['mistake_severity']:.3f}; mean hierarchical distance: "
            f"{rates['hier_distance']:.3f}")


def _eval_line(rates, hierarchy):
    """'class 61.2% | superclass 72.9% | severity 1.41' for the log."""
    parts = [f"{name} {100 * rates.get(f'top1_from_fine/{l}', 0.0):.1f}%"
             for l, name in enumerate(hierarchy.level_names)]
    parts.append(f"mistake severity {rates.get('mistake_severity', 0.0):.2f}")
    return " | ".join(parts)
