"""Checkpoints of the train state and the input position, plus SIGTERM handling.

Each step directory holds two items: `state` (a pytree of arrays, e.g. a flax
TrainState) and `data` (a small JSON dict such as {"epoch": 3, "batch_in_epoch": 17}),
so a resumed run continues both the optimisation and the input pipeline.

Typical loop:

    ckpt = Checkpointer(workdir / "checkpoints", save_interval_steps=1000,
                        max_to_keep=2, keep_best=1)
    with PreemptionFlag() as preempted:
        for step in range(start, total):
            state = train_step(state, batch)
            done, stop = step + 1, preempted.is_set()
            last = stop or done == total  # always save these, interval or not
            if last or ckpt.should_save(done):
                ckpt.save(done, state, data_state, metrics=eval_metrics_or_none,
                          force=last)
            if stop:
                break
    ckpt.close()  # waits for the async writes
"""

import math
import signal
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies


class Checkpointer:
    """Periodic, async checkpoints that keep the latest N and the best N steps.

    Args:
      directory: where step directories go (created if missing), e.g.
        `workdir/checkpoints`.
      save_interval_steps: `save` writes when step % save_interval_steps == 0
        (or when forced, or at a multi-host preemption sync point).
      max_to_keep: how many of the most recent checkpoints to keep (>= 1, so
        there is always something to resume from).
      keep_best: additionally keep this many checkpoints with the highest
        `best_metric`; checkpoints saved without metrics are never "best" and are
        only kept while they are among the latest `max_to_keep`.
      best_metric: key of the `metrics` dict that ranks checkpoints (higher is better).
      async_save: write in a background thread; `save` only blocks for the
        device-to-host copy, so the state may be donated right after it returns.
    """

    def __init__(
        self,
        directory,
        *,
        save_interval_steps: int,
        max_to_keep: int,
        keep_best: int = 0,
        best_metric: str = "top1/0",
        async_save: bool = True,
    ):
        if save_interval_steps < 1 or max_to_keep < 1 or keep_best < 0:
            raise ValueError(
                "Checkpointer needs save_interval_steps >= 1, max_to_keep >= 1 and "
                f"keep_best >= 0; got {save_interval_steps}, {max_to_keep}, {keep_best}."
            )
        self.directory = epath.Path(directory)
        self._best_metric = best_metric
        keep = [policies.LatestN(n=max_to_keep)]
        if keep_best:
            keep.append(
                policies.BestN(
                    get_metric_fn=self._score,
                    n=keep_best,
                    # Otherwise every metric-less save would be kept forever.
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.AnySavePolicy(
                [
                    policies.FixedIntervalPolicy(save_interval_steps),
                    policies.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=policies.AnyPreservationPolicy(keep),
            # Without best_fn orbax neither stores the metrics nor knows best_step().
            best_fn=self._score,
            best_mode="max",
            enable_async_checkpointing=async_save,
            # Removes half-written steps left by a job killed while saving.
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def _score(self, metrics: Mapping[str, float]) -> float:
        # Checkpoints from a run that ranked by another metric count as worst.
        return metrics.get(self._best_metric, -math.inf)

    def save(
        self,
        step: int,
        state: Any,
        data_state: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves if the interval policy says so (or `force`); returns whether it did.

        `data_state` must be JSON-serialisable (python numbers, not numpy ones).
        `metrics` (scalars, e.g. the latest eval results) rank the checkpoint for
        keep_best and must then contain `best_metric`. A step that is already on
        disk is skipped, so a forced save right after a periodic one is harmless.
        """
        if step in self._manager.all_steps():
            return False
        if metrics is not None:
            if self._best_metric not in metrics:
                raise ValueError(
                    f"Checkpoint metrics for step {step} lack the ranking metric "
                    f"{self._best_metric!r} (got {sorted(metrics)}); pass it, pass "
                    "metrics=None, or set best_metric to one of those keys."
                )
            metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
        )
        return self._manager.save(step, args=args, metrics=metrics, force=force)

    def should_save(self, step: int) -> bool:
        """Whether a non-forced `save(step, ...)` would write; lets the caller skip
        gathering the state (e.g. unreplicating it) on the other steps."""
        return step not in self._manager.all_steps() and self._manager.should_save(step)

    def latest_step(self) -> int | None:
        """The newest saved step, or None when the directory has no checkpoint."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The saved step with the highest `best_metric`, or None if none has metrics."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        """All steps currently kept, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, state_template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Returns (state, data_state) of `step` (default: the latest).

        The state takes the structure, dtypes and shardings of `state_template`
        (real arrays or jax.ShapeDtypeStruct; numpy leaves come back as numpy).
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"No checkpoint found in {self.directory}. Check the workdir, or "
                    "call latest_step() first and start from scratch when it is None."
                )
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; "
                f"kept steps: {self.all_steps()}."
            )
        # orbax accepts numpy arrays but not numpy scalars as restore targets.
        template = jax.tree.map(
            lambda x: np.asarray(x) if isinstance(x, np.generic) else x, state_template
        )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(template), data=ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:  # orbax/tensorstore raise many types; add the remedy.
            raise RuntimeError(
                f"Could not restore checkpoint step {step} from {self.directory}: {e}\n"
                f"If that step is incomplete or corrupt, delete {self.directory / str(step)} "
                "to resume from the previous one; if the model or optimizer config "
                "changed, restore with the config the checkpoint was written with."
            ) from e
        return restored.state, restored.data

    def wait(self) -> None:
        """Blocks until pending async saves (and old-step deletions) are done."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PreemptionFlag:
    """Turns SIGTERM into a flag that the training loop polls with `is_set()`.

    Schedulers send SIGTERM some time before killing a job. Instead of dying
    mid-step, the loop sees the flag, saves with `force=True`, waits for the write
    and exits. Signal handlers can only be installed from the main thread, so
    create this there. Single-process jobs only: on multi-host jobs the hosts
    must agree on the step, which orbax's preemption sync point (already part of
    the Checkpointer's save policy) handles. `close()` restores the previous handler.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionFlag must be created in the main thread (Python only "
                "delivers signals there)."
            )
        self._event = threading.Event()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def _on_signal(self, signum, frame) -> None:
        del signum, frame
        self._event.set()

    def is_set(self) -> bool:
        """True once a handled signal has arrived."""
        return self._event.is_set()

    def close(self) -> None:
        """Reinstalls the handlers that were active before."""
        for sig, handler in self._previous.items():
            # None means the old handler was not set from Python; default is closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def __enter__(self) -> "PreemptionFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
