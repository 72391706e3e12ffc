"""Input-pipeline throughput (images/s) at 448 px, per worker count, through the real
pipeline (`hierjax.data.build_input`) on photo-like JPEGs.

    python -m hierjax.benchmarks.pipeline                 # the table, into BENCHMARKS.md
    python -m hierjax.benchmarks.pipeline --quick         # small, printed only
    python -m hierjax.benchmarks.pipeline --workers=0,4,8,16 --images=2000

Writes an image folder (`data.name = "image_folder"`: ROOT/<split>/<class>/*.jpg and a
hierarchy CSV) of photo-like 500 x 375 JPEGs (`hierjax.benchmarks.photos`, about 105 KB
each) over 20 classes, then for each worker count times the training batches (resize
512, random 448 crop, flip, batches of 32) after the workers' start-up and a warm-up
batch, and one evaluation pass (resize 512, centre crop 448) after a first pass that
starts the evaluation workers. Images per second per worker is the total divided by
max(1, workers); 0 workers means threads of the main process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hierjax.benchmarks import common, markdown

BATCH = 32
CLASSES = 20


def write_image_folder(root: Path, num_train: int, num_eval: int) -> Path:
    """ROOT/{train,test}/c<k>/photo_*.jpg over CLASSES classes in 4 groups; returns the
    hierarchy CSV."""
    from hierjax.benchmarks import photos
    from hierjax.hierarchy import Hierarchy

    for split, count, seed in (("train", num_train, 0), ("test", num_eval, 1)):
        for c in range(CLASSES):
            photos.write_photos(root / split / f"c{c:02d}", -(-count // CLASSES),
                                seed=seed * 1000 + c)
    hierarchy = Hierarchy.from_parents([f"c{c:02d}" for c in range(CLASSES)],
                                       [c % 4 for c in range(CLASSES)],
                                       [f"g{g}" for g in range(4)], level_names=("fine", "group"))
    csv = root / "tree.csv"
    hierarchy.to_csv(csv)
    return csv


def measure(root: Path, csv: Path, workers: int, num_images: int) -> tuple[float, float]:
    """(train, eval) images per second with `workers` worker processes."""
    from hierjax import data, settings

    s = settings.resolve(settings.set_keys(settings.base_config(), {
        "data.name": "image_folder", "data.data_dir": str(root), "data.hierarchy": str(csv),
        "data.image_size": 448, "data.train_crop": "resize_random",
        "data.num_workers": workers, "batch_size": BATCH}))
    inputs = data.build_input(s, num_devices=1)
    try:
        for _ in range(max(1, workers) + 1):  # start-up and the read-ahead
            next(inputs.train)
        steps = num_images // BATCH
        start = time.perf_counter()
        for _ in range(steps):
            next(inputs.train)
        train_rate = BATCH * steps / (time.perf_counter() - start)
        for _ in inputs.eval.batches():  # starts the evaluation workers
            pass
        start = time.perf_counter()
        seen = sum(int(b["valid"].sum()) for b in inputs.eval.batches())
        eval_rate = seen / (time.perf_counter() - start)
    finally:
        inputs.close()
    return train_rate, eval_rate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="")
    parser.add_argument("--images", type=int, default=0, help="timed training images")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    default_workers = [0, 1, 2] if cores <= 2 else [0, 1, 2, 4, 8, cores]
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else [0, 1] if args.quick else default_workers)
    num_images = args.images or (64 if args.quick else 512)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = write_image_folder(root, num_train=64 if args.quick else 640,
                                 num_eval=20 if args.quick else 320)
        for w in workers:
            train_rate, eval_rate = measure(root, csv, w, num_images)
            rows.append(markdown.row([str(w), f"{train_rate:.0f}",
                                      f"{train_rate / max(1, w):.0f}", f"{eval_rate:.0f}"]))
            print(rows[-1], flush=True)
    body = "\n".join([
        "### Input pipeline (448 px, photo-like JPEGs)",
        "",
        f"{common.hardware_line()}. `python -m hierjax.benchmarks.pipeline"
        f"{' --quick' if args.quick else ''}`: an image folder of 500 x 375 photo-like "
        f"JPEGs (`hierjax.benchmarks.photos`); train = resize 512 + random crop 448 + "
        f"flip, batches of {BATCH}; eval = resize 512 + centre crop 448; {num_images} "
        "timed training images per row; 0 workers = threads of the training process.",
        "",
        *markdown.header(["workers", "train img/s", "train img/s per worker", "eval img/s"]),
        *rows,
    ])
    if not args.quick:
        common.write_section("pipeline", body)
    print(body)


if __name__ == "__main__":
    main()
