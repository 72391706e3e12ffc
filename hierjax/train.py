"""Training: build everything from the settings, then train, evaluate and checkpoint.

`train_and_evaluate(config, workdir)` is the whole job. The per-device steps are the
pure functions of `hierjax.train_step`; this module wires data, devices, checkpoints,
logging and profiling around them.

The loop keeps the devices busy: batches are copied to the devices one step ahead
(`hierjax.prefetch`), and the scalars of step n are fetched after step n + 1 has been
dispatched, so the host never waits for the step it just queued. Fetching them every
step also bounds the work queued ahead of the devices to two steps, so a SIGTERM is
acted on within two steps, and lets every step's loss, gradient norm and parameter norm
be checked: a non-finite state is never saved.

Evaluation: every `eval_every_steps` on the validation split when the run has one
(config.data.val_fraction or val_split; it ranks the best checkpoints), else on the test
split; a run with a validation split evaluates its test split once, at the end, and
returns and prints that (after the validation table, each labelled with its split).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time

import flax.jax_utils
import jax
import numpy as np
from absl import logging

from hierjax import data, distributed, metrics, optim, settings as settings_lib
from hierjax import decode as decode_lib
from hierjax import workdir as workdir_lib
from hierjax.errors import Diverged, Preempted
from hierjax.checkpointing import Checkpointer, PreemptionFlag
from hierjax.models import build_model
from hierjax.prefetch import DevicePrefetch, replicate
from hierjax.profiling import StepProfiler, annotate
from hierjax.reporting import MetricWriter, ProgressBar, evaluation_table
from hierjax.train_step import AXIS, StepContext, eval_step, init_state, train_step

BEST_METRIC = "top1/0"


def best_metric(s: settings_lib.Settings) -> str:
    """The evaluation rate that ranks the best checkpoints: the fine top-1 of the
    configured decode (config.eval.decode; "fine" is the fine head's own top-1)."""
    return BEST_METRIC if s.eval.decode == "fine" else f"{s.eval.decode}/{BEST_METRIC}"


def split_label(s: settings_lib.Settings, name: str) -> str:
    """'the test split ('test')', 'the validation split (0.1 of 'train', held out)'."""
    if name == "test":
        return f"the test split ({s.data.eval_split!r})"
    if name == "train":
        return f"the training split ({s.data.train_split!r}, unaugmented)"
    if s.data.val_split:
        return f"the validation split ({s.data.val_split!r})"
    return (f"the validation split ({s.data.val_fraction:g} of {s.data.train_split!r}, "
            "held out)")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long the run is and when it logs, evaluates and checkpoints (in steps)."""

    total_steps: int
    steps_per_epoch: int
    log_every: int
    eval_every: int

    @classmethod
    def of(cls, s: settings_lib.Settings, steps_per_epoch: int) -> Schedule:
        return cls(total_steps=s.num_steps or s.num_epochs * steps_per_epoch,
                   steps_per_epoch=steps_per_epoch, log_every=s.log_every_steps,
                   eval_every=s.eval_every_steps or steps_per_epoch)


def build_context(s: settings_lib.Settings, hierarchy, *, total_steps: int,
                  steps_per_epoch: int, axis_name=AXIS) -> StepContext:
    """Model, optimizer and loss settings for the steps (`StepContext`)."""
    h = hierarchy.num_levels
    for key in ("level_weights", "glm_margins"):
        if len(getattr(s.loss, key)) < h:
            raise settings_lib.ConfigError(
                f"config.loss.{key} has {len(getattr(s.loss, key))} entries but the "
                f"{s.data.name!r} hierarchy has {h} levels {hierarchy.level_names}; give "
                f"at least {h} values, fine level first")
    variant = s.parsed_variant
    model = build_model(s.model, hierarchy.num_classes, cascade=variant.cascade,
                        skip=variant.skip, bn_axis_name=axis_name)
    schedule = optim.build_schedule(s.optimizer, total_steps=total_steps,
                                    steps_per_epoch=steps_per_epoch)
    mean, std = data.normalization(s.data)
    return StepContext(model=model, tx=optim.build_optimizer(s.optimizer, schedule),
                       schedule=schedule, ancestors=np.asarray(hierarchy.ancestors),
                       mean=tuple(mean), std=tuple(std), loss=s.loss, axis_name=axis_name)


def evaluate(p_eval, replicated_state, eval_input) -> dict[str, float]:
    """Rates over every evaluation example exactly once (see hierjax.metrics)."""
    totals = {}
    for batch in eval_input.batches():
        # Summed per device on the devices (an elementwise add, no collective), then
        # over the devices and processes once, on the host.
        totals = metrics.merge(totals, p_eval(replicated_state, batch))
    totals = jax.tree.map(lambda x: np.sum(x, 0), jax.device_get(totals))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # only multi-host runs need it

        totals = jax.tree.map(lambda x: np.sum(x, 0),
                              multihost_utils.process_allgather(totals))
    return decode_lib.summarize(totals)  # metrics.summarize, per decode's key prefix


def train_and_evaluate(config, workdir, *, allow_config_change: bool = False
                       ) -> dict[str, float]:
    """Trains `config` (a ConfigDict, resolved here, or `Settings`) in `workdir`,
    resuming from its newest good checkpoint if any. Returns the final evaluation
    metrics (hierjax.metrics.summarize names) plus "step", the step they were measured
    at (the test split's when the run validates on another). A SIGTERM saves the state,
    prints the latest evaluation and raises `hierjax.errors.Preempted`. A workdir holds
    one run at a time, and resumes only under the config it was
    started with (`hierjax.workdir`) unless `allow_config_change`."""
    s = config if isinstance(config, settings_lib.Settings) else settings_lib.resolve(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    num_devices, num_processes = jax.local_device_count(), jax.process_count()
    if s.batch_size % (num_devices * num_processes):
        raise settings_lib.ConfigError(
            f"config.batch_size = {s.batch_size} must divide evenly over "
            f"{num_devices * num_processes} devices ({num_processes} process(es) x "
            f"{num_devices}); pick a multiple of {num_devices * num_processes}")
    primary = distributed.is_primary()  # writes the run's files; the others only train
    distributed.check_shared_workdir(workdir)
    with distributed.on_primary(lambda: workdir_lib.lock(workdir)):
        checkpointer = Checkpointer(
            workdir / "checkpoints", save_interval_steps=s.checkpoint_every_steps,
            max_to_keep=s.keep_checkpoints, keep_best=s.keep_best_checkpoints,
            best_metric=best_metric(s), async_save=s.async_checkpoints)
        try:
            latest = checkpointer.latest_step()
            workdir_lib.check_config(workdir, s, resuming=latest is not None,
                                     allow_changes=allow_config_change,
                                     start_step=latest or 0, write=primary)
            inputs = data.build_input(s, num_devices=num_devices,
                                      process_index=jax.process_index(),
                                      num_processes=num_processes)
            try:
                return _run(s, workdir, inputs, checkpointer)
            finally:
                inputs.close()
        finally:
            checkpointer.close()


def _run(s, workdir: pathlib.Path, inputs: data.Input, checkpointer) -> dict[str, float]:
    plan = Schedule.of(s, inputs.train.steps_per_epoch)
    hierarchy = inputs.hierarchy
    logging.info("Data: %s, %d train / %d eval examples (eval: this process), hierarchy %s %s; "
                 "%d steps of batch %d (%d per epoch). Variant %s, loss %s.", s.data.name,
                 len(inputs.train.source), len(inputs.eval), hierarchy.level_names,
                 hierarchy.num_classes, plan.total_steps, s.batch_size, plan.steps_per_epoch,
                 s.variant, s.loss)
    ctx = build_context(s, hierarchy, total_steps=plan.total_steps,
                        steps_per_epoch=plan.steps_per_epoch)
    state = _restore_or_init(s, ctx, inputs, checkpointer)
    start_step = int(state.step)
    replicated = replicate(state)
    del state  # the replicated copy is the one that trains
    p_eval = jax.pmap(functools.partial(eval_step, ctx=dataclasses.replace(ctx, axis_name=None),
                                        decode=s.eval.decode))
    primary = distributed.is_primary()
    with MetricWriter(workdir, resumed_at=start_step, enabled=primary) as writer:
        finished = start_step >= plan.total_steps
        stopped, latest = False, {}
        if finished:
            logging.info("Training already finished (step %d of %d); evaluating only.",
                         start_step, plan.total_steps)
        else:
            replicated, latest, stopped = _train_loop(
                s, plan, ctx, replicated, inputs, checkpointer, writer, p_eval, workdir)
        step = int(replicated.step[0])
        # After a SIGTERM the scheduler's grace period is short: report the latest
        # evaluation as it is, labelled with its step, rather than run another.
        if not stopped and latest.get("step") != step:
            latest = {**evaluate(p_eval, replicated, inputs.eval), "step": step}
            if not finished:  # a finished run's file already has this row
                writer.write(step, _without_step(latest), split=_eval_row(inputs))
        # A run that validates on another split reports the test split once, at the end.
        final = latest
        if inputs.test is not None and not stopped:
            final = {**evaluate(p_eval, replicated, inputs.test), "step": step}
            if not finished:  # a finished run's file already has this row
                writer.write(step, _without_step(final), split="test")
    if primary:
        tables = [_summary(latest, hierarchy, split_label(s, inputs.eval_name),
                           stopped_at=step if stopped else None)]
        if final is not latest:
            tables.append(_summary(final, hierarchy, split_label(s, "test")))
        print("\n\n".join(tables), flush=True)
    if stopped:
        raise Preempted(step)
    return final


def _without_step(rates: dict) -> dict:
    return {k: v for k, v in rates.items() if k != "step"}


def _restore_or_init(s, ctx, inputs, checkpointer):
    """The newest good checkpoint's state (and input position), else a fresh state."""
    resuming = checkpointer.latest_step() is not None
    # A resumed run takes its weights from the checkpoint, not the pretrained file.
    state = init_state(jax.random.key(s.seed), ctx, inputs.image_shape,
                       model_config=None if resuming else s.model)
    if resuming:
        restored = checkpointer.restore_newest_good(state)
        if restored is None:  # every checkpoint was set aside: start again
            return init_state(jax.random.key(s.seed), ctx, inputs.image_shape,
                              model_config=s.model)
        state, data_state, step = restored
        inputs.train.set_state(data_state)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, step)
    return state


def _train_loop(s, plan: Schedule, ctx, replicated, inputs, checkpointer, writer, p_eval,
                workdir):
    """Steps from the state's step to plan.total_steps or a SIGTERM. Returns the state,
    the latest evaluation (with its "step"; {} if none ran) and whether a SIGTERM
    stopped the run."""
    start = int(replicated.step[0])
    train_rng = jax.random.fold_in(jax.random.key(s.seed), 1)
    # The step also sums every process's SIGTERM vote (hierjax.distributed).
    p_train = jax.pmap(distributed.with_stop_vote(functools.partial(train_step, ctx=ctx), AXIS),
                       axis_name=AXIS, in_axes=(0, 0, None, 0), donate_argnums=(0,))
    batches = DevicePrefetch(inputs.train)
    primary = distributed.is_primary()
    progress = ProgressBar(plan.total_steps, initial_step=start, images_per_step=s.batch_size,
                           enabled=primary)
    profile_dir = workdir / "profile" / ("" if primary else f"process_{jax.process_index()}")
    profiler = StepProfiler(profile_dir, s.profile.start_step, s.profile.num_steps)
    preemption = PreemptionFlag()
    agreement = distributed.StopAgreement(preemption, num_devices=jax.local_device_count(),
                                          num_processes=jax.process_count())
    checker = _FiniteChecker(s, checkpointer)
    logged, latest = [], {}
    # Throughput of each row: images trained since the last row over the wall time, less
    # the time spent evaluating and saving. The first row includes compilation.
    last_row, paused = (time.perf_counter(), start), 0.0
    try:
        for step in range(start, plan.total_steps):
            profiler.maybe_start(step, replicated)
            with annotate(step):
                replicated, scalars = p_train(replicated, next(batches),
                                              jax.random.fold_in(train_rng, step),
                                              agreement.vote())
            done = step + 1
            profiler.maybe_stop(done, replicated)
            # Waits for the previous step only: this one stays queued on the devices.
            logged += agreement.read(checker.take_previous())
            checker.queue(done, scalars)
            stop = agreement.stop
            evaluated = done % plan.eval_every == 0 or done == plan.total_steps
            saving = stop or done == plan.total_steps or checkpointer.should_save(done)
            if done % plan.log_every == 0 or evaluated or saving:
                logged += agreement.read(checker.take_all())  # waits for this step
                # Every process fetched the same steps here: they agree on the votes.
                stop = agreement.stop
                saving = saving or stop
            if logged and (done % plan.log_every == 0 or done == plan.total_steps or stop):
                means = {k: float(np.mean([r[k] for _, r in logged])) for k in logged[0][1]}
                now = time.perf_counter()
                means["images_per_s"] = ((done - last_row[1]) * s.batch_size
                                         / max(now - last_row[0] - paused, 1e-9))
                last_row, paused = (now, done), 0.0
                writer.write(logged[-1][0], means, split="train")
                progress.update(done, {"loss": means["loss"], "lr": means["lr"]})
                logged = []
            pause_start = time.perf_counter()
            if evaluated:
                latest = {**evaluate(p_eval, replicated, inputs.eval), "step": done}
                writer.write(done, _without_step(latest), split=_eval_row(inputs))
                logging.info("Step %d eval: %s", done, _eval_line(latest, inputs.hierarchy))
            if saving:
                checkpointer.save(done, flax.jax_utils.unreplicate(replicated),
                                  batches.get_state(),
                                  metrics=(_without_step(latest)
                                           if latest.get("step") == done else None),
                                  force=stop or done == plan.total_steps)
                checker.saved(done)
            paused += time.perf_counter() - pause_start
            if stop:
                logging.warning("SIGTERM%s: saved a checkpoint at step %d; exiting.",
                                "" if jax.process_count() == 1 else
                                " (to this or another process)", done)
                break
    finally:
        profiler.close()
        progress.close()
        preemption.close()
        checkpointer.wait()
    return replicated, latest, stop


class _FiniteChecker:
    """Fetches each step's scalars (one step late) and stops the run at the first step
    whose loss, gradient norm or new parameters are not finite, before that state can be
    saved."""

    _CHECKED = ("loss", "grad_norm", "param_norm")

    def __init__(self, s, checkpointer):
        self._s, self._checkpointer = s, checkpointer
        self._pending: list[tuple[int, dict]] = []
        self._last_saved = checkpointer.latest_step()

    def queue(self, step: int, scalars) -> None:
        self._pending.append((step, scalars))

    def take_previous(self) -> list[tuple[int, dict]]:
        """The checked scalars of every queued step but the newest."""
        ready, self._pending = self._pending[:-1], self._pending[-1:]
        return self._check(ready)

    def take_all(self) -> list[tuple[int, dict]]:
        ready, self._pending = self._pending, []
        return self._check(ready)

    def saved(self, step: int) -> None:
        self._last_saved = step

    def _check(self, ready):
        out = []
        for step, scalars in jax.device_get(ready):
            values = {k: float(v[0]) for k, v in scalars.items()}
            bad = [k for k in self._CHECKED if not math.isfinite(values[k])]
            if bad:
                self._fail(step, bad, values)
            out.append((step, values))
        return out

    def _fail(self, step, bad, values):
        s = self._s
        last = (f"the last checkpoint, step {self._last_saved}, was saved before it and is "
                "finite" if self._last_saved is not None else "no checkpoint was saved")
        raise Diverged(
            f"step {step}: {', '.join(f'{k} = {values[k]}' for k in bad)} is not finite; "
            f"nothing from this step on was saved ({last}). Likely cause: a learning rate "
            f"too high for this model (config.optimizer.lr = {s.optimizer.lr}), the GLM "
            f"weight (config.loss.glm_weight = {s.loss.glm_weight}) on features of a "
            f"network trained from scratch (config.model.pretrained = "
            f"{s.model.pretrained!r}), or no gradient clipping (config.optimizer."
            f"grad_clip_norm = {s.optimizer.grad_clip_norm}). Change one, and start again "
            "in a new workdir or resume from the last checkpoint.", step)


def _summary(rates, hierarchy, where: str, *, stopped_at=None):
    """Final table of the split `where` describes (`split_label`): one row per hierarchy
    level, then the tree-distance figures (`evaluation_table`); after a SIGTERM
    (`stopped_at`), the latest evaluation, labelled with its step."""
    if stopped_at is not None and not rates:
        return f"Stopped by SIGTERM at step {stopped_at}, before any evaluation."
    title = (f"Latest evaluation (step {rates['step']}; training stopped by SIGTERM at "
             f"step {stopped_at})" if stopped_at is not None
             else f"Final evaluation at step {rates['step']}")
    return (f"{title}, on {int(rates['count'])} examples of {where}:\n"
            f"{evaluation_table(rates, hierarchy)}")


def _eval_row(inputs: data.Input) -> str:
    """The split name of the periodic evaluations' rows in metrics.jsonl: "val" when the
    run validates on a validation split, else "eval" (the test split)."""
    return "eval" if inputs.test is None else "val"


def _eval_line(rates, hierarchy):
    """'class 61.2% | superclass 72.9% | severity 1.41' for the log."""
    parts = [f"{name} {100 * rates.get(f'top1_from_fine/{l}', 0.0):.1f}%"
             for l, name in enumerate(hierarchy.level_names)]
    parts.append(f"mistake severity {rates.get('mistake_severity', 0.0):.2f}")
    return " | ".join(parts)
