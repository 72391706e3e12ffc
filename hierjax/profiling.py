"""A jax.profiler trace over an exact window of training steps."""

import logging
import os
from typing import Any

import jax

log = logging.getLogger(__name__)


def annotate(step: int) -> jax.profiler.StepTraceAnnotation:
    """Marks one train step in the trace, for the profiler's per-step breakdown."""
    return jax.profiler.StepTraceAnnotation("train", step_num=step)


class StepProfiler:
    """Traces steps start_step .. start_step + num_steps - 1 into `logdir`.

    Call `maybe_start(step, state)` before running train step `step` and
    `maybe_stop(done, state)` after it, where `done` counts the steps completed,
    and `close(state)` after the loop. Since JAX dispatches asynchronously, the
    state is waited for at both ends, so the trace holds exactly the window's
    device work and nothing queued before it. Disabled when num_steps == 0, or
    when a resumed run starts past start_step. The trace lands in
    `logdir/plugins/profile/<run>/`, readable by TensorBoard's profile plugin or
    xprof.
    """

    def __init__(self, logdir, start_step: int, num_steps: int):
        if num_steps < 0 or start_step < 0:
            raise ValueError(
                f"StepProfiler needs start_step >= 0 and num_steps >= 0, got "
                f"start_step={start_step}, num_steps={num_steps}."
            )
        self._logdir = os.fspath(logdir)
        self._start = start_step
        self._stop = start_step + num_steps
        self._active = False

    def maybe_start(self, step: int, state: Any) -> None:
        """Starts the trace if `step` is the window's first step."""
        if not self._active and step == self._start and self._stop > self._start:
            jax.block_until_ready(state)
            jax.profiler.start_trace(self._logdir)
            self._active = True
            log.info("Profiling steps %d to %d into %s.", self._start, self._stop - 1, self._logdir)

    def maybe_stop(self, done: int, state: Any) -> None:
        """Stops the trace once `done` steps complete the window."""
        if self._active and done >= self._stop:
            self._finish(state)

    def close(self, state: Any = None) -> None:
        """Stops a trace still running (training ended inside the window)."""
        if self._active:
            self._finish(state)

    def _finish(self, state: Any) -> None:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        self._active = False
        log.info("Wrote the profile trace to %s.", self._logdir)
