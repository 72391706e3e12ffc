"""End-to-end training throughput of `hierjax.main` against the bare jitted train step.

    python -m hierjax.benchmarks.end_to_end \
        --config=configs/cifar100_wrn.py:depth=10,width=1 --config.batch_size=64 --runs=5
    python -m hierjax.benchmarks.end_to_end --config=... --tree=/path/to/other/checkout
    python -m hierjax.benchmarks.end_to_end --config=configs/default.py \
        --config.data.image_size=448 --photo_folder=512 ...     # file-backed, 448 px

End to end: `python -m hierjax.main` with the given config in a fresh workdir, `--steps`
steps logged every `--log_every`, no evaluation or checkpoint before the end; its
throughput is the median of the `images_per_s` of metrics.jsonl's training rows after
the first two (the first includes compilation). Bare step: in this process, the pmapped
`train_step` of the same settings on every local device, on one real batch of the same
input already on the devices, `--steps` / 2 steps in chunks of `--log_every` (each
dispatched back to back, then waited for); its throughput is the median over chunks.
The two alternate `--runs` times, and the table gives each median and their ratio.
`--tree` runs `hierjax.main` of another checkout instead (for a before/after
comparison; that checkout must log `images_per_s`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from hierjax.benchmarks import common, markdown
from hierjax.benchmarks.throughput import bare_step_images_per_second, main_images_per_second

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of both measurements.")
_RUNS = flags.DEFINE_integer("runs", 3, "Alternating repeats of each measurement.")
_STEPS = flags.DEFINE_integer("steps", 240, "Training steps per run.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 20, "Steps per metrics.jsonl row.")
_TREE = flags.DEFINE_string("tree", "", "Checkout whose hierjax.main to run (default: this).")
_WRITE = flags.DEFINE_string("write", "", "BENCHMARKS.md section name to write the table to.")
_PHOTO_FOLDER = flags.DEFINE_integer(
    "photo_folder", 0, "If > 0: train on an image folder of this many photo-like 500 x 375 "
    "JPEGs (hierjax.benchmarks.photos, 16 classes under 4 groups) written to a temporary "
    "directory, instead of the config's data (the file-backed measurement).")
flags.mark_flags_as_required(["config"])


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


def main(argv):
    with tempfile.TemporaryDirectory() as folder:
        data_keys = {}
        if _PHOTO_FOLDER.value:
            from hierjax.benchmarks import pipeline

            print(f"writing {_PHOTO_FOLDER.value} photo-like JPEGs to {folder} ...", flush=True)
            csv = pipeline.write_image_folder(Path(folder), num_train=_PHOTO_FOLDER.value,
                                              num_eval=16)
            data_keys = {"data.name": "image_folder", "data.data_dir": folder,
                         "data.hierarchy": str(csv)}
        measure(data_keys)


def measure(data_keys: dict) -> None:
    from hierjax import settings as settings_lib

    config = settings_lib.set_keys(_CONFIG.value.copy_and_resolve_references(), data_keys)
    s = settings_lib.resolve(config)
    argv = [*sys.argv, *(f"--config.{key}={value}" for key, value in data_keys.items())]
    tree = Path(_TREE.value or common.REPO_ROOT)
    e2e, bare = [], []
    for run in range(_RUNS.value):
        e2e.append(main_images_per_second(argv, tree, steps=_STEPS.value,
                                          log_every=_LOG_EVERY.value))
        bare.append(bare_step_images_per_second(s, _STEPS.value // 2,
                                                chunk=_LOG_EVERY.value))
        print(f"run {run}: hierjax.main {_rate(e2e[-1])} img/s, "
              f"bare step {_rate(bare[-1])} img/s", flush=True)
    m_e2e, m_bare = statistics.median(e2e), statistics.median(bare)
    body = "\n".join([
        f"{common.hardware_line()}. `python -m hierjax.benchmarks.end_to_end "
        f"{' '.join(sys.argv[1:])}`: variant {s.variant}, {s.model.name}, "
        f"{s.data.name} ({s.data.image_size} px), batch {s.batch_size}, "
        f"{s.data.num_workers} workers; medians of "
        f"{_RUNS.value} alternating runs.",
        "",
        markdown.table(
            ["measurement", "img/s (median)", "runs", "ratio to the bare step"],
            [["`hierjax.main`, steady state", _rate(m_e2e), ", ".join(map(_rate, e2e)),
              f"{m_e2e / m_bare:.2f}"],
             ["bare pmapped train step, batch on the devices", _rate(m_bare),
              ", ".join(map(_rate, bare)), "1.00"]], align="lrlr"),
    ])
    print(body)
    if _WRITE.value:
        common.write_section(_WRITE.value, body)


if __name__ == "__main__":
    app.run(main)
