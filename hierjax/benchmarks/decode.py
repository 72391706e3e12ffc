"""Training-input throughput against the peer a user would pick: hierjax's training input
(its grain pipeline) vs a PyTorch DataLoader doing what torchvision does.

    python -m hierjax.benchmarks.decode                 # the table
    python -m hierjax.benchmarks.decode --write         # ... and into BENCHMARKS.md
    python -m hierjax.benchmarks.decode --quick         # seconds: a smoke test

Both sides read the same photo-like JPEGs (`hierjax.benchmarks.photos`: 500 x 375 at
quality 90, ~100 KB, like CUB's photos) from a list of bytes in memory, with the same
number of worker processes, batches of 32, two batches of read-ahead per worker, and
produce size x size x 3 uint8 images: resize the shorter side to `resize` (bilinear,
antialiased), random size x size crop, horizontal flip with probability 1/2.

- hierjax: `hierjax_images_per_second` -- `hierjax.data.TrainInput` over the bytes (the
  pipeline training uses: record -> `TrainTransform` ("resize_random", numpy rng seeded
  by the record number) -> batch(32) in N worker processes); batches NHWC uint8 numpy
  arrays. The "hierjax, Pillow path" rows run the same input with
  `images.use_opencv(False)`: hierjax's fallback for non-JPEGs, which was the only path
  before OpenCV (the same per-image work as before it, up to where a flipped image is
  made contiguous).
- peer: `torch.utils.data.DataLoader(num_workers=N, batch_size=32)` over a Dataset
  that makes the Pillow calls torchvision makes (torchvision itself does not load next
  to the CPU build of torch installed here): `datasets.folder.pil_loader` =
  `Image.open(f).convert("RGB")`; `Resize(resize)` = `img.resize((w, h),
  Image.BILINEAR)` with the longer side `int(resize * long / short)` (PIL resizing is
  always antialiased); `RandomCrop(size)` = `torch.randint` for top then left,
  `img.crop((left, top, left + size, top + size))`; `RandomHorizontalFlip()` =
  `torch.rand(1) < 0.5` -> `img.transpose(Image.FLIP_LEFT_RIGHT)`; `PILToTensor()` =
  `torch.as_tensor(np.array(img, copy=True)).view(h, w, 3).permute(2, 0, 1)`; the
  default collate stacks to NCHW uint8 in shared memory.

Timing: each run starts its workers, takes N * 3 batches (worker start-up, imports and
the read-ahead drained) untimed, then times the next `--batches` batches per worker.
The sides alternate (hierjax, peer, hierjax Pillow path, hierjax, ...) `--repeats` times
per row; the table gives the median img/s and the range. "per worker" is img/s divided
by N. On a machine with fewer free cores than N + 1 the rows with more workers measure
the contention, not the loaders.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import numpy as np

from hierjax.benchmarks import markdown

BATCH = 32
PREFETCH = 2  # batches of read-ahead per worker, both sides (torch's default)


# --- hierjax: its real input pipeline (hierjax.data) -----------------------------------

class _JpegSource:
    """A record source over in-memory JPEG bytes, all of class 0."""

    def __init__(self, jpeg_bytes_list):
        from hierjax.hierarchy import Hierarchy

        self.data = list(jpeg_bytes_list)
        self.name, self.image_shape = "photos", None
        self.hierarchy = Hierarchy.from_parents(["photo"], [0], ["all"])
        self.labels_Nxh = np.zeros((len(self.data), 2), np.int32)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return {"image": self.data[index], "labels": self.labels_Nxh[index],
                "bbox": np.array([0, 0, 1, 1], np.float32)}


def _in_order(source, *, seed: int, epoch: int):
    return np.arange(len(source))


def hierjax_loader(jpeg_bytes_list, size: int, num_workers: int, batch: int = BATCH,
                   opencv: bool = True):
    """An iterator of uint8 [batch, size, size, 3] image batches from hierjax's training
    input (`hierjax.data.TrainInput` with its resize_random transform, resize = size *
    8 / 7: 448 -> 512, 224 -> 256) in num_workers worker processes."""
    from hierjax.data import TrainInput, images
    from hierjax.data.transforms import ImageSettings, TrainTransform

    images.use_opencv(opencv)  # read by the workers too: they import images anew
    transform = TrainTransform(ImageSettings(size=size, resize=size * 8 // 7,
                                             train_crop="resize_random"), seed=0)
    if not opencv:
        transform = _PillowTransform(transform)
    train = TrainInput(_JpegSource(jpeg_bytes_list), transform, batch_size=batch,
                       num_devices=1, seed=0, num_workers=num_workers, sampler=_in_order)
    return _Images(train)


class _PillowTransform:
    """The train transform with OpenCV switched off in the worker that runs it."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, record):
        from hierjax.data import images

        images.use_opencv(False)
        return self.transform.map(record)


class _Images:
    def __init__(self, train):
        self.train = train

    def __next__(self):
        return next(self.train)["image"][0]

    def close(self):
        self.train.close()


def hierjax_images_per_second(jpeg_bytes_list, size: int, num_workers: int,
                              batch: int = BATCH, *, opencv: bool = True,
                              batches_per_worker: int = 16) -> float:
    """img/s of hierjax's training input; start-up not timed. jpeg_bytes_list must hold
    enough records for the warm-up and timed batches."""
    iterator = hierjax_loader(jpeg_bytes_list, size, num_workers, batch, opencv)
    try:
        return _rate(iterator, num_workers, batch, batches_per_worker)
    finally:
        iterator.close()


# --- the peer: a torch DataLoader doing torchvision's Pillow calls --------------------

class _PeerDataset:
    """torch Dataset: Resize(resize) + RandomCrop(size) + RandomHorizontalFlip() +
    PILToTensor() on pil_loader's image, as torchvision does them (module docstring)."""

    def __init__(self, jpeg_bytes_list, size: int, resize: int):
        self.data, self.size, self.resize = list(jpeg_bytes_list), size, resize

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        import torch
        from PIL import Image

        img = Image.open(io.BytesIO(self.data[index])).convert("RGB")  # pil_loader
        w, h = img.size  # Resize: F.resize -> _compute_resized_output_size
        if w <= h:
            img = img.resize((self.resize, int(self.resize * h / w)), Image.BILINEAR)
        else:
            img = img.resize((int(self.resize * w / h), self.resize), Image.BILINEAR)
        w, h = img.size  # RandomCrop.get_params
        top = torch.randint(0, h - self.size + 1, size=(1,)).item()
        left = torch.randint(0, w - self.size + 1, size=(1,)).item()
        img = img.crop((left, top, left + self.size, top + self.size))
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = torch.as_tensor(np.array(img, copy=True))  # PILToTensor
        return tensor.view(img.size[1], img.size[0], 3).permute((2, 0, 1))


def peer_loader(jpeg_bytes_list, size: int, num_workers: int, batch: int = BATCH):
    """An iterator of uint8 [batch, 3, size, size] torch batches."""
    import torch

    dataset = _PeerDataset(jpeg_bytes_list, size, size * 8 // 7)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=False, drop_last=True, num_workers=num_workers,
        prefetch_factor=PREFETCH if num_workers else None,
        # Forking a process that runs JAX's threads can deadlock; grain spawns too.
        multiprocessing_context="spawn" if num_workers else None,
        generator=torch.Generator().manual_seed(0))
    return iter(loader)


def peer_images_per_second(jpeg_bytes_list, size: int, num_workers: int,
                           batch: int = BATCH, *, batches_per_worker: int = 16) -> float:
    iterator = peer_loader(jpeg_bytes_list, size, num_workers, batch)
    try:
        return _rate(iterator, num_workers, batch, batches_per_worker)
    finally:
        getattr(iterator, "_shutdown_workers", lambda: None)()


def _rate(iterator, num_workers: int, batch: int, batches_per_worker: int) -> float:
    """img/s over batches_per_worker * N batches after N * (PREFETCH + 1) warm-up ones."""
    workers = max(1, num_workers)
    for _ in range(workers * (PREFETCH + 1)):
        next(iterator)
    count = workers * batches_per_worker
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch / (time.perf_counter() - start)


def records_needed(num_workers: int, batches_per_worker: int, batch: int = BATCH) -> int:
    workers = max(1, num_workers)
    return workers * (PREFETCH + 1 + batches_per_worker) * batch


def geometry(jpeg_bytes_list, size: int, batch: int = BATCH):
    """((shape, dtype) of one hierjax batch, of one peer batch), made in-process."""
    data = [jpeg_bytes_list[i % len(jpeg_bytes_list)] for i in range(batch)]
    ours = next(hierjax_loader(data, size, 0, batch))
    theirs = next(peer_loader(data, size, 0, batch))
    return (ours.shape, str(ours.dtype)), (tuple(theirs.shape), str(theirs.dtype).replace(
        "torch.", ""))


# --- the table -----------------------------------------------------------------------

def measure(photos_list, sizes, workers, repeats, batches_per_worker, pillow_rows=True,
            batch=BATCH):
    """rows: dicts with size, workers, side -> list of img/s (interleaved runs)."""
    sides = ["hierjax", "peer"] + (["hierjax-pillow"] if pillow_rows else [])
    rows = []
    for size in sizes:
        for n in workers:
            data = [photos_list[i % len(photos_list)]
                    for i in range(records_needed(n, batches_per_worker, batch))]
            rates = {side: [] for side in sides}
            for _ in range(repeats):
                for side in sides:
                    if side == "peer":
                        rate = peer_images_per_second(data, size, n, batch,
                                                      batches_per_worker=batches_per_worker)
                    else:
                        rate = hierjax_images_per_second(
                            data, size, n, batch, opencv=side == "hierjax",
                            batches_per_worker=batches_per_worker)
                    rates[side].append(rate)
                    print(f"  size {size}, {n} workers, {side}: {rate:.0f} img/s",
                          file=sys.stderr, flush=True)
            rows.append({"size": size, "workers": n, "rates": rates})
    return rows


def _cell(values):
    med = statistics.median(values)
    spread = f" ({min(values):.0f}-{max(values):.0f})" if len(values) > 1 else ""
    return f"{med:.0f}{spread}"


def table(rows, geometries) -> str:
    lines = markdown.header(["size (resize)", "workers", "side", "img/s median (range)",
                             "img/s per worker", "hierjax / peer", "batch geometry"])
    for row in rows:
        size, n, rates = row["size"], row["workers"], row["rates"]
        peer = statistics.median(rates["peer"])
        ours_geometry, peer_geometry = geometries[size]
        for side, values in rates.items():
            med = statistics.median(values)
            ratio = "1" if side == "peer" else f"{med / peer:.2f}"
            shape, dtype = peer_geometry if side == "peer" else ours_geometry
            name = {"hierjax": "hierjax (OpenCV path)",
                    "peer": "torch DataLoader + torchvision's Pillow ops",
                    "hierjax-pillow": "hierjax (Pillow path)"}[side]
            lines.append(markdown.row([f"{size} ({size * 8 // 7})", str(n), name, _cell(values),
                                       f"{med / max(1, n):.0f}", ratio,
                                       f"{' x '.join(map(str, shape))} {dtype}"]))
    return "\n".join(lines)


def main(argv=None):
    """Runs the comparison; returns (rows, geometries) as `table` takes them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny: a smoke test")
    parser.add_argument("--write", action="store_true", help="into BENCHMARKS.md")
    parser.add_argument("--sizes", default="448,224")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per worker")
    parser.add_argument("--photos", type=int, default=48, help="distinct JPEGs, cycled")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--no-pillow-rows", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.workers, args.repeats, args.batches, args.photos, args.batch = (
            "224", "1", 1, 2, 4, 8)
        args.no_pillow_rows = True
    from hierjax.benchmarks import photos

    sizes = [int(v) for v in args.sizes.split(",")]
    workers = [int(v) for v in args.workers.split(",")]
    photo_list = photos.photo_set(args.photos, ((500, 375),), seed=0)
    kb = np.mean([len(p) for p in photo_list]) / 1e3
    geometries = {size: geometry(photo_list, size, args.batch) for size in sizes}
    rows = measure(photo_list, sizes, workers, args.repeats, args.batches,
                   pillow_rows=not args.no_pillow_rows, batch=args.batch)
    body = table(rows, geometries)
    print(body)
    if args.write and not args.quick:
        from hierjax.benchmarks import common

        command = "python -m hierjax.benchmarks.decode " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write")
        header = (f"### Input pipeline against a torch DataLoader (per-image train "
                  f"transform)\n\n{common.hardware_line()}. `{command.strip()}`: "
                  f"{args.photos} photo-like 500 x 375 JPEGs (quality 90, mean {kb:.0f} KB)"
                  f" cycled; batches of {args.batch}; {args.batches} timed batches per "
                  f"worker after the warm-up; {args.repeats} interleaved repeats, median "
                  f"(range). Peer: what torchvision's Resize + RandomCrop + "
                  f"RandomHorizontalFlip + PILToTensor do, as Pillow calls in a torch "
                  f"DataLoader (module docstring).\n")
        common.write_section("decode-peer", header + "\n" + body)
    return rows, geometries


if __name__ == "__main__":
    # Through the module's import name, so that the worker processes (grain spawns
    # them) unpickle the transform from hierjax.benchmarks.decode, not from __main__.
    from hierjax.benchmarks.decode import main as _main

    _main()
