"""Benchmark of the GLM loss: forward + backward time against batch, feature size, classes.

    python -m hierjax.benchmarks.losses            # full table, written to BENCHMARKS.md
    python -m hierjax.benchmarks.losses --quick    # a few rows, printed only

Each row times `jax.jit(jax.value_and_grad(glm_loss))` on random features and a
3-level hierarchy (fine -> fine // 5 -> fine // 25), next to the per-class-pair loop of
`hierjax.benchmarks.glm_loop` on the same batch where that finishes in reasonable time.
"""

from __future__ import annotations

import argparse
import functools

import jax
import numpy as np

from hierjax.benchmarks import common, markdown
from hierjax.benchmarks.glm_loop import glm_loss_and_grad_loop
from hierjax.losses import glm_loss

K = 5
MARGINS = (1.0, 1.0, 1.0)
# (batch, feature size, classes, time the loop too)
FULL_ROWS = [
    (64, 2048, 200, True), (128, 2048, 200, True), (256, 2048, 200, True),
    (512, 2048, 200, False), (1024, 2048, 200, False),
    (256, 512, 200, True), (256, 2048, 10_000, True),
]
QUICK_ROWS = [(64, 512, 200, True), (256, 2048, 200, False), (256, 2048, 10_000, False)]


def make_batch(batch, dim, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, num_classes, size=batch)
    labels = np.stack([fine, fine // 5, fine // 25], axis=1).astype(np.int32)
    features = rng.normal(size=(batch, dim)).astype(np.float32)
    return features, labels


def run(rows, loop_repeats=3):
    step = jax.jit(jax.value_and_grad(functools.partial(glm_loss, k=K, margins=MARGINS)))
    results = []
    for batch, dim, num_classes, with_loop in rows:
        features, labels = make_batch(batch, dim, num_classes)
        x, y = jax.device_put(features), jax.device_put(labels)
        ms = common.time_ms(step, x, y, repeats=20)
        present = len(np.unique(labels[:, 0]))
        loop_ms = None
        if with_loop:
            loop = functools.partial(glm_loss_and_grad_loop, k=K, margins=MARGINS)
            loop_ms = common.time_ms(loop, features, labels, repeats=loop_repeats, warmup=0)
        results.append(dict(batch=batch, dim=dim, classes=num_classes, present=present,
                            ms=ms, loop_ms=loop_ms))
        loop_text = f"{loop_ms:9.1f} ms ({loop_ms / ms:5.0f}x)" if loop_ms else "-"
        print(f"B={batch:5d} D={dim:5d} C={num_classes:6d} present={present:4d}  "
              f"vectorised {ms:8.2f} ms   loop {loop_text}", flush=True)
    return results


def table(results):
    rows = []
    for r in results:
        loop = f"{r['loop_ms']:.1f}" if r["loop_ms"] else "not run"
        speed = f"{r['loop_ms'] / r['ms']:.0f}x" if r["loop_ms"] else ""
        rows.append([str(r["batch"]), str(r["dim"]), f"{r['classes']:,}", str(r["present"]),
                     f"{r['ms']:.2f}", loop, speed])
    return markdown.table(["batch B", "features D", "classes C", "present classes",
                           "glm_loss fwd+bwd (ms)", "per-pair loop (ms)", "speed-up"],
                          rows, align="rrrrrrr")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few rows, not written")
    parser.add_argument("--output", default=None, help="BENCHMARKS.md path to update")
    args = parser.parse_args()
    hardware = common.hardware_line()
    print(hardware, flush=True)
    results = run(QUICK_ROWS if args.quick else FULL_ROWS)
    if args.quick:
        return
    platform = jax.devices()[0].platform
    body = "\n".join([
        f"### GLM loss, forward + backward ({platform.upper()})",
        "",
        f"{hardware}. `python -m hierjax.benchmarks.losses`; k = {K}, h = 3, float32, "
        "median of 20 jitted calls (loop: median of 3).",
        "",
        table(results),
    ])
    path = common.write_section(f"glm-loss-{platform}", body, args.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
