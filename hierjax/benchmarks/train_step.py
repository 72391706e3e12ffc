"""Training-step throughput (images/s) on synthetic in-memory batches, SM against OURS.

    python -m hierjax.benchmarks.train_step            # full table, into BENCHMARKS.md
    python -m hierjax.benchmarks.train_step --quick    # one small row, printed only

Each row times the pmapped `hierjax.train_step.train_step` over all local devices on one
fixed uint8 batch already on the devices (no input pipeline), for variant SM (flat
softmax) and OURS (skip-connected cascade + GLM on the global batch); the overhead column
is OURS's extra step time in percent of SM's.
"""

from __future__ import annotations

import argparse
import functools

import jax
import numpy as np

from hierjax import settings, train
from hierjax.benchmarks import common, markdown
from hierjax.hierarchy import Hierarchy
from hierjax.prefetch import replicate
from hierjax.train_step import AXIS, init_state, train_step

# (model, image size, small-input stem, per-device batch on GPU, per-device batch on CPU)
ROWS = [("resnet50", 224, False, 256, 8), ("resnet50", 448, False, 64, 2),
        ("wrn", 32, True, 256, 16)]
QUICK_ROWS = [("resnet18", 32, True, 64, 8)]


def make_config(model, size, small_input, dtype, variant, extra=None):
    """Resolved settings of the row: GLM at the paper's lambda = 0.8 for OURS; `extra`
    dotted keys on top (e.g. {"model.wrn_depth": 10})."""
    return settings.resolve(settings.set_keys(settings.base_config(), {
        "model.name": model, "model.small_input": small_input, "model.dtype": dtype,
        "data.image_size": size, "variant": variant,
        "loss.glm_weight": 0.8 if variant == "OURS" else None, **(extra or {})}))


def benchmark_row(model, size, small_input, per_device, dtype, variant, steps, extra=None):
    """(images per second, median step ms, FLOPs of one device's step) of the pmapped
    train step. The step is compiled once: the same executable is timed and gives the
    FLOPs (XLA's cost analysis of the per-device program, collectives and the GLM term
    on the all-gathered batch included)."""
    num_devices = jax.local_device_count()
    hierarchy = _cub_sized_hierarchy()  # 200 fine / 40 / 10 classes: CUB-sized heads
    config = make_config(model, size, small_input, dtype, variant, extra)
    ctx = train.build_context(config, hierarchy, total_steps=1000, steps_per_epoch=100)
    state = init_state(jax.random.key(0), ctx, (size, size, 3))
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 200, size=(num_devices, per_device))
    batch = {"image": rng.integers(0, 256, (num_devices, per_device, size, size, 3),
                                   dtype=np.uint8),
             "labels": hierarchy.labels_for(fine).astype(np.int32)}
    batch = jax.pmap(lambda x: x)(batch)  # on the devices, laid out as pmap wants it
    step = jax.pmap(functools.partial(train_step, ctx=ctx), axis_name=AXIS,
                    in_axes=(0, 0, None), donate_argnums=(0,))
    replicated = replicate(state)
    key = jax.random.key(1)
    compiled = step.lower(replicated, batch, key).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0]
    holder = [replicated]

    def run():
        holder[0], scalars = compiled(holder[0], batch, key)
        return scalars

    ms = common.time_ms(run, repeats=steps, warmup=2)
    return (num_devices * per_device / (ms / 1e3), ms,
            float(analysis.get("flops", float("nan"))))


def _cub_sized_hierarchy() -> Hierarchy:
    return Hierarchy(level_names=("fine", "mid", "top"),
                     class_names=tuple(tuple(map(str, range(n))) for n in (200, 40, 10)),
                     ancestors=np.stack([np.arange(200), np.arange(200) // 5,
                                         np.arange(200) // 20], 1).astype(np.int32))


def _rate(images_per_s):
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small row, not written")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per row")
    parser.add_argument("--output", default=None, help="BENCHMARKS.md path to update")
    args = parser.parse_args()
    on_gpu = jax.devices()[0].platform == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    steps = args.steps or (20 if on_gpu else 8)
    hardware = common.hardware_line()
    print(hardware, flush=True)
    lines = markdown.header(["model", "image", "batch (global)", "dtype", "SM img/s",
                             "OURS img/s", "SM step (ms)", "OURS step (ms)",
                             "GLM + cascade overhead"], align="lrrlrrrrr")
    for model, size, small, gpu_batch, cpu_batch in (QUICK_ROWS if args.quick else ROWS):
        per_device = gpu_batch if on_gpu else cpu_batch
        name = "WRN-28-10" if model == "wrn" else model.replace("resnet", "ResNet-")
        results = {v: benchmark_row(model, size, small, per_device, dtype, v, steps)
                   for v in ("SM", "OURS")}
        (sm_ips, sm_ms, _), (ours_ips, ours_ms, _) = results["SM"], results["OURS"]
        overhead = 100.0 * (ours_ms - sm_ms) / sm_ms
        global_batch = per_device * jax.local_device_count()
        lines.append(markdown.row([name, str(size), str(global_batch), dtype, _rate(sm_ips),
                                   _rate(ours_ips), f"{sm_ms:.1f}", f"{ours_ms:.1f}",
                                   f"{overhead:+.1f}%"]))
        print(lines[-1], flush=True)
    if args.quick:
        return
    platform = jax.devices()[0].platform
    body = "\n".join([
        f"### Training step throughput ({platform.upper()})", "",
        f"{hardware}. `python -m hierjax.benchmarks.train_step`; one fixed synthetic "
        f"batch on the devices, 200/40/10-class hierarchy, SGD, median of {steps} steps "
        "after 2 warm-up steps. OURS = skip-connected cascade + GLM (k = 5) on the "
        "all-gathered batch.", "", *lines])
    print(f"wrote {common.write_section(f'train-step-{platform}', body, args.output)}")


if __name__ == "__main__":
    main()
