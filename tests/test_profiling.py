import glob
import re

import jax
import jax.numpy as jnp
import pytest

from hierjax.profiling import StepProfiler, annotate


@jax.jit
def train_step(x):
    return jnp.tanh(x @ x) * 0.5


def run(profiler, steps):
    x = jnp.ones((32, 32))
    for step in steps:
        profiler.maybe_start(step, x)
        with annotate(step), jax.profiler.TraceAnnotation(f"marker_step_{step}"):
            x = train_step(x)
        profiler.maybe_stop(step + 1, x)
    profiler.close(x)


def traced_markers(logdir):
    (path,) = glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")
    with open(path, "rb") as f:
        return sorted(set(re.findall(rb"marker_step_\d+", f.read())))


def test_traces_exactly_the_window(tmp_path):
    run(StepProfiler(tmp_path, start_step=2, num_steps=2), range(6))
    assert traced_markers(tmp_path) == [b"marker_step_2", b"marker_step_3"]


def test_close_stops_a_window_cut_short_and_resume_steps(tmp_path):
    # Resumed at step 3, training ends at step 5, window asks for steps 4..13.
    run(StepProfiler(tmp_path, start_step=4, num_steps=10), range(3, 6))
    assert traced_markers(tmp_path) == [b"marker_step_4", b"marker_step_5"]
    # A trace can be started again, so none was left running.
    run(StepProfiler(tmp_path / "again", start_step=0, num_steps=1), range(2))
    assert traced_markers(tmp_path / "again") == [b"marker_step_0"]


def test_disabled_profiler_writes_nothing(tmp_path):
    run(StepProfiler(tmp_path / "off", start_step=0, num_steps=0), range(3))
    run(StepProfiler(tmp_path / "late", start_step=1, num_steps=2), range(5, 7))
    assert not (tmp_path / "off").exists() and not (tmp_path / "late").exists()


def test_rejects_negative_window(tmp_path):
    with pytest.raises(ValueError, match="num_steps >= 0"):
        StepProfiler(tmp_path, start_step=0, num_steps=-1)
