"""Preparing datasets from their official archives: TF-free tensorflow-datasets builders.

One module a dataset (its docstring gives the official archive layout and counts):
`aircraft` (FGVC-Aircraft), `cars` (Stanford Cars), `cifar100`, `cub` (CUB-200-2011),
`dogs` (Stanford Dogs) and `nabirds` (its hierarchy is read from the archive).

`python -m hierjax.prepare <dataset> --manual_dir=DIR --data_dir=DIR` prepares one from
its official archive(s); `builder(name, data_dir)` opens a prepared one.
`python -m hierjax.prepare image_folder --check ROOT --hierarchy tree.csv` checks a folder
of your own images (every file decodes, every class has images, folders match the CSV)
and exits 1 listing every problem. The stored
example layout is in `hierjax.prepare.common`. Only the builder modules import
tensorflow_datasets, and only the file-backed input path imports them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hierjax.errors import MissingDataError

# hierjax dataset name -> "module:Builder class"
BUILDERS = {
    "aircraft": "aircraft:Aircraft",
    "cars": "cars:Cars",
    "cifar100": "cifar100:Cifar100",
    "cub": "cub:Cub",
    "dogs": "dogs:Dogs",
    "nabirds": "nabirds:Nabirds",
}


def builder_class(name: str):
    """The builder class of a hierjax dataset name (a key of BUILDERS)."""
    if name not in BUILDERS:
        raise ValueError(
            f"unknown dataset {name!r}; the prepared datasets are "
            f"{', '.join(sorted(BUILDERS))}")
    module, cls = BUILDERS[name].split(":")
    return getattr(importlib.import_module(f"hierjax.prepare.{module}"), cls)


def builder(name: str, data_dir: str):
    """The builder of `name` over data_dir, which must hold the prepared dataset."""
    b = builder_class(name)(data_dir=data_dir)
    if not b.is_prepared():
        raise MissingDataError(
            f"dataset {name!r} is not prepared in {data_dir} (config.data.data_dir): "
            f"no {b.data_path}. Prepare it once with\n"
            f"  python -m hierjax.prepare {name} --manual_dir=DIR_WITH_ARCHIVES "
            f"--data_dir={data_dir}")
    return b


def check_image_folder(root: str, hierarchy_csv: str, splits: str) -> int:
    """Prints every problem of an image folder (hierjax.data.folder_source.check_folder);
    returns the exit status: 0 when there is none, 1 otherwise."""
    from hierjax.data.folder_source import check_folder

    def progress(done, total):
        if done == total or done % 500 == 0:
            print(f"\rchecked {done}/{total} images", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    problems = check_folder(root, hierarchy_csv, tuple(splits.split(",")), progress=progress)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {root}" if problems
          else f"{root}: every image decodes and every class has images")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hierjax.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=sorted(BUILDERS) + ["image_folder"])
    parser.add_argument("--manual_dir", help="folder holding the official archive(s)")
    parser.add_argument("--data_dir", help="where the prepared dataset is written")
    parser.add_argument("--list", action="store_true",
                        help="print the archives each dataset needs and exit")
    parser.add_argument("--check", metavar="ROOT",
                        help="image_folder: check ROOT/<split>/<class>/* before training")
    parser.add_argument("--hierarchy", help="image_folder: the hierarchy CSV")
    parser.add_argument("--splits", default="train,test", help="image_folder: splits")
    args = parser.parse_args(argv)
    if args.dataset == "image_folder":
        if not (args.check and args.hierarchy):
            parser.error("image_folder takes --check ROOT --hierarchy tree.csv")
        return check_image_folder(args.check, args.hierarchy, args.splits)
    if args.list:
        for name in sorted(BUILDERS):
            print(f"{name}:\n{builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS}\n")
        return 0
    if not (args.dataset and args.manual_dir and args.data_dir):
        parser.error("give a dataset, --manual_dir and --data_dir (or --list)")
    import tensorflow_datasets as tfds

    from hierjax.prepare.common import ArchiveError

    manual_dir, data_dir = (os.path.expanduser(d) for d in (args.manual_dir, args.data_dir))
    builder = builder_class(args.dataset)(data_dir=data_dir, file_format="array_record")
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except ArchiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{s} {info.num_examples}" for s, info in builder.info.splits.items())
    print(f"Prepared {args.dataset} in {builder.data_path} ({splits} examples).")
    return 0
