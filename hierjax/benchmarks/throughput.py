"""Throughput measurements shared by the benchmark commands (no flags defined here, so
any command may import it): `hierjax.main` end to end in a subprocess, and the bare
pmapped train step in this process."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _overrides(argv) -> list[str]:
    return [a for a in argv if a.startswith("--config.") or a.startswith("--config=")]


def main_images_per_second(argv, tree: Path, *, steps: int, log_every: int) -> float:
    """Median steady-state img/s of one `hierjax.main` run of the `--config` flags in
    `argv`: the training rows' `images_per_s` after the first two."""
    with tempfile.TemporaryDirectory() as workdir:
        every = log_every
        cmd = [sys.executable, "-m", "hierjax.main", f"--workdir={workdir}",
               *_overrides(argv), f"--config.num_steps={steps}",
               f"--config.log_every_steps={every}", f"--config.eval_every_steps={10**9}",
               f"--config.checkpoint_every_steps={10**9}"]
        out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"hierjax.main failed:\n{out.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").open()]
    rates = [r["images_per_s"] for r in rows if r["split"] == "train"][2:]
    return statistics.median(rates)


def bare_step_images_per_second(settings, steps: int, chunk: int = 20) -> float:
    """img/s of the pmapped train step alone on one batch already on the devices: the
    median over chunks of `chunk` steps (dispatched back to back, then waited for), as
    `main_images_per_second` takes the median over its rows of `log_every` steps."""
    import jax

    from hierjax import data, train
    from hierjax.prefetch import DevicePrefetch, replicate
    from hierjax.train_step import AXIS, init_state, train_step

    inputs = data.build_input(settings, num_devices=jax.local_device_count())
    try:
        batch = next(DevicePrefetch(inputs.train, size=1))
        ctx = train.build_context(settings, inputs.hierarchy, total_steps=10**6,
                                  steps_per_epoch=inputs.train.steps_per_epoch)
        state = replicate(init_state(jax.random.key(0), ctx, inputs.image_shape))
    finally:
        inputs.close()
    step = jax.pmap(functools.partial(train_step, ctx=ctx), axis_name=AXIS,
                    in_axes=(0, 0, None), donate_argnums=(0,))
    key = jax.random.key(1)
    state, scalars = step(state, batch, key)  # compile
    jax.block_until_ready(scalars)
    rates = []
    for _ in range(max(1, steps // chunk)):
        start = time.perf_counter()
        for _ in range(min(chunk, steps)):
            state, scalars = step(state, batch, key)
        jax.block_until_ready((state, scalars))
        rates.append(min(chunk, steps) * settings.batch_size / (time.perf_counter() - start))
    return statistics.median(rates)
