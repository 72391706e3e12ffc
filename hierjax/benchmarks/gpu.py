"""The whole GPU table in one command, written into BENCHMARKS.md.

    python -m hierjax.benchmarks.gpu                 # on a GPU host (about 6-8 min on one H100)
    python -m hierjax.benchmarks.gpu --tiny --no_write   # minutes on a CPU: tests it runs

Sections, each timed on every local device with the data already there unless said:
  * train step: ResNet-50 at 224 and 448 px and WRN-28-10 at 32 px, bfloat16, at two or
    three per-device batches, SM against OURS (the GLM + cascade overhead in percent of
    SM's step), and the model FLOP utilisation: FLOPs of one device's compiled step
    (XLA's cost analysis) per second over the device's peak dense bf16 FLOP/s;
  * GLM loss forward + backward at B = 256 .. 2048 (D = 2048, 200 classes);
  * the input pipeline (448 px photo-like JPEGs) with every host core as a worker;
  * end to end: `hierjax.main` against the bare pmapped step on the same settings.

A `--budget_s` wall-clock budget (default 420 s) is checked before each row: rows that
would start after it are listed as skipped, so the command always finishes and writes
what it measured. Heavy imports stay inside the functions, so a GPU host needs only the
packages hierjax itself installs (see README "GPU").
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import jax

from hierjax.benchmarks import common, markdown

# Peak dense bfloat16 FLOP/s per device, from the vendors' data sheets (without
# sparsity), keyed by a substring of jax's device_kind; the first match wins.
PEAK_BF16 = (
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
    ("A10", 125e12), ("V100", 125e12), ("TPU v5 lite", 197e12), ("TPU v4", 275e12),
)

# (name, model, size, small-input stem, per-device batches, batch of the SM/OURS
# comparison, extra keys)
GPU_STEP_ROWS = [("ResNet-50", "resnet50", 224, False, (128, 256), 256, {}),
                 ("ResNet-50", "resnet50", 448, False, (32, 64), 64, {}),
                 ("WRN-28-10", "wrn", 32, True, (128,), 128, {})]
TINY_STEP_ROWS = [("WRN-10-1", "wrn", 8, True, (4,), 4,
                   {"model.wrn_depth": 10, "model.wrn_width": 1})]
GPU_GLM_BATCHES = (256, 512, 1024, 2048)
TINY_GLM_BATCHES = (64, 128)


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    return next((peak for key, peak in PEAK_BF16 if key in kind), None)


class Budget:
    """Wall-clock budget: `left()` before starting a row; skipped rows are listed."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.perf_counter() < self.deadline:
            return True
        self.skipped.append(what)
        print(f"skipped (over the time budget): {what}", flush=True)
        return False


def train_step_section(rows, dtype: str, steps: int, budget: Budget) -> list[str]:
    from hierjax.benchmarks import train_step as bench

    peak = peak_flops(jax.devices()[0])
    lines = markdown.header(["model", "image", "batch / device", "variant",
                             "img/s (all devices)", "step (ms)", "GFLOP / device step", "MFU",
                             "OURS overhead"], align="lrrlrrrrr")
    for name, model, size, small, batches, compare, extra in rows:
        for per_device in batches:
            variants = ("SM", "OURS") if per_device == compare else ("SM",)
            sm_ms = None
            for variant in variants:
                what = f"{name} {size}px batch {per_device} {variant}"
                if not budget.allows(what):
                    continue
                ips, ms, flops = bench.benchmark_row(model, size, small, per_device,
                                                     dtype, variant, steps, extra)
                mfu = (f"{100 * flops / (ms / 1e3) / peak:.1f}%" if peak
                       else "n/a (peak unknown)")
                overhead = ""
                if variant == "SM":
                    sm_ms = ms
                elif sm_ms:
                    overhead = f"{100 * (ms - sm_ms) / sm_ms:+.2f}%"
                lines.append(markdown.row([name, str(size), str(per_device), variant,
                                           f"{ips:,.0f}", f"{ms:.2f}", f"{flops / 1e9:,.4g}",
                                           mfu, overhead]))
                print(lines[-1], flush=True)
    return lines


def glm_section(batches, budget: Budget) -> list[str]:
    from hierjax.benchmarks.losses import K, MARGINS, make_batch
    from hierjax.losses import glm_loss

    grad = jax.jit(jax.value_and_grad(functools.partial(glm_loss, k=K, margins=MARGINS)))
    lines = markdown.header(["B", "D", "classes", "GLM fwd + bwd (ms)"], align="rrrr")
    for b in batches:
        if not budget.allows(f"GLM B={b}"):
            continue
        features, labels = make_batch(b, 2048, 200)
        features, labels = jax.device_put(features), jax.device_put(labels)
        ms = common.time_ms(grad, features, labels, repeats=20, warmup=3)
        lines.append(markdown.row([str(b), "2048", "200", f"{ms:.3f}"]))
        print(lines[-1], flush=True)
    return lines


def pipeline_section(num_images: int, budget: Budget) -> list[str]:
    from hierjax.benchmarks import pipeline

    workers = os.cpu_count() or 1
    lines = markdown.header(["workers", "train img/s", "eval img/s"], align="rrr")
    if not budget.allows(f"input pipeline, {workers} workers"):
        return lines
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = pipeline.write_image_folder(root, num_train=max(64, num_images // 2),
                                          num_eval=20)
        train_rate, eval_rate = pipeline.measure(root, csv, workers, num_images)
    lines.append(markdown.row([str(workers), f"{train_rate:,.0f}", f"{eval_rate:,.0f}"]))
    print(lines[-1], flush=True)
    return lines


def end_to_end_section(overrides: dict, steps: int, budget: Budget) -> list[str]:
    """`overrides`: {config key: value}, given to `hierjax.main` as `--config.KEY=VALUE`
    and to the bare step as the same keys."""
    from hierjax import settings
    from hierjax.benchmarks import throughput

    lines = markdown.header(["measurement", "img/s"], align="lr")
    if not budget.allows("end to end"):
        return lines
    config = settings.base_config()
    settings.set_keys(config, overrides)
    s = settings.resolve(config)
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    e2e = throughput.main_images_per_second(["--config=configs/default.py", *flags],
                                            common.REPO_ROOT, steps=steps,
                                            log_every=max(steps // 8, 1))
    bare = throughput.bare_step_images_per_second(s, steps // 2, chunk=max(steps // 8, 1))
    lines += map(markdown.row, [["`hierjax.main`, steady state", f"{e2e:,.0f}"],
                                ["bare pmapped train step", f"{bare:,.0f}"],
                                ["ratio", f"{e2e / bare:.2f}"]])
    print("\n".join(lines[2:]), flush=True)
    return lines


def _end_to_end_overrides(tiny: bool, dtype: str) -> dict:
    cifar = common.REPO_ROOT.parent / "shared" / "data" / "cifar100"
    data = ({"data.name": "cifar100", "data.data_dir": str(cifar)}
            if cifar.exists() and not tiny else
            {"data.name": "synthetic", "data.image_size": 32})
    model = ({"model.name": "wrn", "model.wrn_depth": 10, "model.wrn_width": 1,
              "batch_size": 16} if tiny else
             {"model.name": "wrn", "model.wrn_depth": 16, "model.wrn_width": 4,
              "batch_size": 256 * jax.local_device_count()})
    return {**data, **model, "model.dtype": dtype, "variant": "OURS"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes (a CPU check that every section runs)")
    parser.add_argument("--budget_s", type=float, default=420.0)
    parser.add_argument("--no_write", action="store_true", help="print only")
    parser.add_argument("--output", default=None, help="BENCHMARKS.md path to update")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    if not on_gpu and not args.tiny:
        parser.error(f"no GPU ({device.platform}); run on a GPU host, or with --tiny to "
                     "check the command on this machine")
    dtype = "bfloat16" if on_gpu else "float32"
    budget = Budget(args.budget_s)
    hardware = common.hardware_line()
    print(hardware, flush=True)
    started = time.perf_counter()
    step_lines = train_step_section(TINY_STEP_ROWS if args.tiny else GPU_STEP_ROWS, dtype,
                                    steps=3 if args.tiny else 20, budget=budget)
    glm_lines = glm_section(TINY_GLM_BATCHES if args.tiny else GPU_GLM_BATCHES, budget)
    pipe_lines = pipeline_section(64 if args.tiny else 1024, budget)
    e2e_overrides = _end_to_end_overrides(args.tiny, dtype)
    e2e_lines = end_to_end_section(e2e_overrides, 12 if args.tiny else 240, budget)
    e2e_flags = " ".join(f"--config.{key}={value}" for key, value in e2e_overrides.items())
    elapsed = time.perf_counter() - started
    skipped = (f" Skipped (over the {args.budget_s:.0f} s budget): "
               f"{'; '.join(budget.skipped)}." if budget.skipped else "")
    body = "\n".join([
        f"### GPU table ({device.platform.upper()}{', tiny check' if args.tiny else ''})",
        "",
        f"{hardware}. `python -m hierjax.benchmarks.gpu{' --tiny' if args.tiny else ''}`, "
        f"{elapsed:.0f} s in all.{skipped}",
        "",
        f"Train step ({dtype}; one fixed batch on the devices; 200/40/10-class "
        "hierarchy; MFU = XLA cost-analysis FLOPs of one device's step per second over "
        "the device's peak dense bf16 FLOP/s):",
        "", *step_lines, "",
        "GLM loss, forward + backward (`jax.jit(jax.value_and_grad(glm_loss))`, k = 5):",
        "", *glm_lines, "",
        "Input pipeline, every host core a worker (448 px, photo-like JPEGs, "
        "`hierjax.benchmarks.pipeline`):", "", *pipe_lines, "",
        f"End to end (`hierjax.main {e2e_flags}` against its bare step):",
        "", *e2e_lines,
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {common.write_section(f'gpu-{device.platform}', body, args.output)}")


if __name__ == "__main__":
    main()
