"""Input-pipeline throughput (images/s) of the grain pipeline at 448 px, per worker count.

    python -m hierjax.benchmarks.pipeline                 # the table, into BENCHMARKS.md
    python -m hierjax.benchmarks.pipeline --quick         # small, printed only
    python -m hierjax.benchmarks.pipeline --workers=0,4,8,16 --images=2000

Prepares a CUB-format dataset (`hierjax.prepare cub`) from an archive in the official
layout whose JPEGs have CUB's typical size (500 x 375, quality 90; random smooth
content, as no real photos are available offline), then times
`GrainTrainIterator` batches of 32 (resize 512, random crop 448, flip) and the
evaluation pass (resize 512, centre crop 448) for each worker count after a warm-up
batch, reading from the prepared array_record files. Images per second per worker is
the total divided by max(1, workers).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hierjax.benchmarks import common

BATCH = 32


def write_archive(directory: Path, num_images: int, width: int, height: int) -> None:
    """CUB_200_2011.tgz with num_images photo-sized JPEGs over 20 classes."""
    from PIL import Image

    sys.path.insert(0, str(common.REPO_ROOT / "tests"))
    import official_archives  # the test helper that knows the official layout

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(base).resize((width, height), Image.BICUBIC).save(buffer, "JPEG",
                                                                      quality=90)
    photo = buffer.getvalue()
    official_archives.write_cub(directory, classes=tuple(range(0, 200, 10)),
                                per_class=-(-2 * num_images // 20), seed=0,
                                image=lambda *_: photo)


def measure(tfds_dir: str, workers: int, num_images: int) -> tuple[float, float]:
    """(train, eval) images per second with `workers` grain processes."""
    from hierjax.data import files

    settings = files.ImageSettings(size=448, resize=512)
    train = files.TfdsSource("cub", tfds_dir, "train")
    iterator = files.GrainTrainIterator(train, settings, global_batch_size=BATCH,
                                        num_devices=1, seed=0, num_workers=workers)
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_images // BATCH):
        next(iterator)
    train_rate = BATCH * (num_images // BATCH) / (time.perf_counter() - start)
    iterator.close()

    test = files.TfdsSource("cub", tfds_dir, "test")
    batches = files.grain_eval_batches(test, settings, global_batch_size=BATCH, num_devices=1,
                                       num_workers=workers)
    next(batches)
    start, seen = time.perf_counter(), 0
    for batch in batches:
        seen += batch["image"].shape[1]
    eval_rate = seen / (time.perf_counter() - start)
    return train_rate, eval_rate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="")
    parser.add_argument("--images", type=int, default=0)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    default_workers = [0, 1, 2] if cores <= 2 else [0, 1, 2, 4, 8, cores]
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else [0, 1] if args.quick else default_workers)
    num_images = args.images or (64 if args.quick else 512)
    with tempfile.TemporaryDirectory() as tmp:
        write_archive(Path(tmp), num_images + 2 * BATCH, 500, 375)
        from hierjax import prepare

        prepare.main(["cub", f"--manual_dir={tmp}", f"--data_dir={tmp}/tfds"])
        rows = []
        for w in workers:
            train_rate, eval_rate = measure(f"{tmp}/tfds", w, num_images)
            rows.append(f"| {w} | {train_rate:.0f} | {train_rate / max(1, w):.0f} | "
                        f"{eval_rate:.0f} |")
            print(rows[-1], flush=True)
    body = "\n".join([
        "## Input pipeline (grain, 448 px)",
        "",
        f"{common.hardware_line()}. `python -m hierjax.benchmarks.pipeline"
        f"{' --quick' if args.quick else ''}`: CUB-format array_record files of "
        f"500 x 375 JPEGs; train = resize 512 + random crop 448 + flip, batches of "
        f"{BATCH}; eval = resize 512 + centre crop 448; {num_images} images per row.",
        "",
        "| grain workers | train img/s | train img/s per worker | eval img/s |",
        "|---|---|---|---|",
        *rows,
    ])
    if not args.quick:
        common.write_section("pipeline", body)
    print(body)


if __name__ == "__main__":
    main()
