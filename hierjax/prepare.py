"""Prepare a dataset from its official archive(s), without TensorFlow.

    python -m hierjax.prepare cub --manual_dir=~/archives --data_dir=~/tfds

reads `~/archives/CUB_200_2011.tgz` and writes array_record files to
`~/tfds/hierjax_cub/1.0.0/`, showing progress per split. Then train with
`--config.data.data_dir=~/tfds`. The archives each dataset needs are listed by
`python -m hierjax.prepare --list`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    from hierjax import datasets

    parser = argparse.ArgumentParser(prog="python -m hierjax.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=sorted(datasets.BUILDERS))
    parser.add_argument("--manual_dir", help="folder holding the official archive(s)")
    parser.add_argument("--data_dir", help="where the prepared dataset is written")
    parser.add_argument("--list", action="store_true",
                        help="print the archives each dataset needs and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in sorted(datasets.BUILDERS):
            print(f"{name}:\n{datasets.builder_class(name).MANUAL_DOWNLOAD_INSTRUCTIONS}\n")
        return 0
    if not (args.dataset and args.manual_dir and args.data_dir):
        parser.error("give a dataset, --manual_dir and --data_dir (or --list)")
    import tensorflow_datasets as tfds

    from hierjax.datasets.common import ArchiveError

    manual_dir, data_dir = (os.path.expanduser(d) for d in (args.manual_dir, args.data_dir))
    builder = datasets.builder_class(args.dataset)(data_dir=data_dir, file_format="array_record")
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except ArchiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{s} {info.num_examples}" for s, info in builder.info.splits.items())
    print(f"Prepared {args.dataset} in {builder.data_path} ({splits} examples).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
