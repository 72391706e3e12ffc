"""Predict the classes of image files, every level of the hierarchy, into a CSV file.

    python -m hierjax.predict --model MODEL_DIR IMAGES_OR_DIRS... --out preds.csv
        [--top_k 5] [--decode fine|marginal|joint] [--batch_size N]
    python -m hierjax.predict --workdir W [--checkpoint latest|best|STEP] IMAGES... --out ...

A folder contributes every image file under it (any format Pillow reads, recursively,
sorted); a file named directly is always tried. One row per image, in that order:
`file`, `error` (empty, or why the file could not be read: such a file gets no
predictions and the others go on), then for every level L, fine first: `L` (the decoded
class; the levels always form a path of the tree), `L_prob` (its probability), and
`L_top<i>`, `L_top<i>_prob` for i = 1..k (the k most probable classes of the level).
Images are decoded in threads and run in batches over every local device
(`hierjax.inference.Classifier`), with the preprocessing of evaluation.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import os
import re
from pathlib import Path

import numpy as np

from hierjax.errors import ConfigError


def list_images(paths) -> list[Path]:
    """The files of `paths`: a file as it is (even if missing: its row says so), a
    folder's image files recursively in sorted order."""
    from hierjax.data.folder_source import image_suffixes

    suffixes = image_suffixes()
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in suffixes)
        else:
            files.append(path)
    return files


def _prepare(classifier, path: Path):
    """(uint8 [S, S, 3], "") or (None, the reason the file could not be read)."""
    try:
        return classifier.preprocess(path.read_bytes(), str(path)), ""
    except Exception as e:  # noqa: BLE001 -- OSError, Pillow's and our DataError alike
        cause = e.__cause__ or e
        message = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(cause))
        return None, f"{type(cause).__name__}: {message}".replace("\n", " ")


def _chunks(classifier, files, size: int):
    """Lists of `_prepare` results, `size` files at a time; the next chunk is decoded
    while the caller runs the current one."""
    workers = min(32, (os.cpu_count() or 1) + 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = None
        for start in range(0, len(files), size):
            futures = [pool.submit(_prepare, classifier, f) for f in files[start:start + size]]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = futures
        if pending is not None:
            yield [f.result() for f in pending]


def header(classifier, top_k: int) -> list[str]:
    columns = ["file", "error"]
    for level, k in zip(classifier.level_names, classifier.top_k(top_k)):
        columns += [level, f"{level}_prob"]
        for i in range(1, k + 1):
            columns += [f"{level}_top{i}", f"{level}_top{i}_prob"]
    return columns


def predict_files(classifier, paths, out_csv, *, top_k: int = 5, decode: str | None = None
                  ) -> tuple[int, int]:
    """Writes the predictions of the images of `paths` to `out_csv` (module
    docstring); returns (images predicted, files that could not be read)."""
    from hierjax.reporting import ProgressBar

    files = list_images(paths)
    if not files:
        raise ConfigError(f"no image files in {', '.join(map(str, paths))}")
    size = classifier.batch_size
    bar = ProgressBar(-(-len(files) // size), images_per_step=size)
    done, failed = 0, 0
    Path(out_csv).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with open(Path(out_csv).expanduser(), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header(classifier, top_k))
        try:
            for n, chunk in enumerate(_chunks(classifier, files, size)):
                good = [image for image, error in chunk if image is not None]
                levels = (classifier.describe(classifier.run(np.stack(good), decode=decode,
                                                             top_k=top_k)) if good else {})
                row_of_good = 0
                for (image, error), path in zip(chunk, files[n * size:(n + 1) * size]):
                    if image is None:
                        writer.writerow([str(path), error])
                        failed += 1
                        continue
                    row = [str(path), ""]
                    for level in levels.values():
                        i = row_of_good
                        row += [level.label[i], f"{level.prob[i]:.6f}"]
                        for name, prob in zip(level.names[i], level.probs[i]):
                            row += [name, f"{prob:.6f}"]
                    writer.writerow(row)
                    row_of_good += 1
                done += len(good)
                bar.update(n + 1)
        finally:
            bar.close()
    return done, failed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hierjax.predict",
                                     description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="an exported model folder (python -m hierjax.export)")
    where.add_argument("--workdir", help="a run's workdir")
    parser.add_argument("--checkpoint", default="latest",
                        help="with --workdir: latest | best | a step number (default latest)")
    parser.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS",
                        help="image files and folders of images")
    parser.add_argument("--out", required=True, help="the CSV file to write")
    parser.add_argument("--top_k", type=int, default=5, help="classes per level (default 5)")
    parser.add_argument("--decode", choices=("fine", "marginal", "joint"),
                        help="fine | marginal | joint (default: the run's config.eval.decode)")
    parser.add_argument("--batch_size", type=int,
                        help="images per forward pass (default: the run's batch size)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top_k must be >= 1, got {args.top_k}")

    def command():
        from hierjax.inference import Classifier
        from hierjax.settings import check_decode

        if args.model:
            classifier = Classifier.load(args.model, batch_size=args.batch_size)
        else:
            from hierjax.restore import parse_checkpoint

            try:
                checkpoint = parse_checkpoint(args.checkpoint)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            classifier = Classifier.from_workdir(args.workdir, checkpoint,
                                                 batch_size=args.batch_size)
        check_decode(args.decode or "fine", classifier.settings.variant)
        done, failed = predict_files(classifier, args.images, args.out, top_k=args.top_k,
                                     decode=args.decode)
        print(f"Wrote {done} predictions to {args.out}"
              + (f"; {failed} file{'s' * (failed > 1)} could not be read (listed with "
                 "the error)" if failed else ""), flush=True)

    from hierjax.cli import run_command

    run_command(command)


if __name__ == "__main__":
    main()
