"""A user's own images as a record source: `root/<split>/<fine class>/<image>` plus a
hierarchy CSV whose fine names are the folder names (format: hierjax/hierarchy/tree.py).

Every file whose extension Pillow can decode is an image (JPEG, PNG, WebP, BMP, GIF,
TIFF, ...); other files (notes, `.DS_Store`) are skipped. Every fine class of the CSV
must have images in the split: a class without any (no folder, or an empty one) is an
error, or with `allow_missing_classes` a warning naming them. `check_folder` (behind
`python -m hierjax.prepare image_folder --check ROOT --hierarchy tree.csv`) decodes
every file once and reports all problems at once, before a long job finds one.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from absl import logging

from hierjax.data.sources import WHOLE_IMAGE
from hierjax.errors import DataError, MissingDataError
from hierjax.hierarchy import Hierarchy


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The file extensions Pillow decodes, lower case with the dot."""
    from PIL import Image

    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


def _split_dir(root: str, split: str) -> Path:
    directory = Path(root).expanduser() / split
    if not directory.is_dir():
        raise MissingDataError(
            f"no folder {directory}: config.data.data_dir must hold one folder per split "
            f"({split!r} from config.data.train_split / eval_split)")
    return directory


def _hierarchy(hierarchy_csv: str) -> Hierarchy:
    if not hierarchy_csv:
        raise DataError(
            "config.data.hierarchy must be the path of a hierarchy CSV for "
            "config.data.name = 'image_folder' (format: hierjax/hierarchy/tree.py)")
    return Hierarchy.from_csv(hierarchy_csv)


def _listing(directory: Path, hierarchy: Hierarchy):
    """(image paths in sorted order, their fine ids, classes without images, folders that
    are not classes); the files of unknown folders are left out."""
    fine_id = {name: i for i, name in enumerate(hierarchy.class_names[0])}
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in fine_id]
    suffixes = image_suffixes()
    paths = [f for p in folders if p.name in fine_id for f in sorted(p.iterdir())
             if f.is_file() and f.suffix.lower() in suffixes]
    fine = np.array([fine_id[p.parent.name] for p in paths], np.int64)
    counts = np.bincount(fine, minlength=hierarchy.num_classes[0])
    empty = [hierarchy.class_names[0][c] for c in np.flatnonzero(counts == 0)]
    return paths, fine, empty, unknown


def _unknown_folders(directory: Path, unknown, hierarchy_csv: str) -> str:
    return (f"{directory}: folders {unknown[:5]} ({len(unknown)} in all) are not fine "
            f"classes of {hierarchy_csv}; rename them or add rows to the CSV")


class ImageFolderSource:
    """`root/<split>/<fine class name>/<image>` with the fine names of `hierarchy_csv`
    (module docstring). Files are taken in sorted order."""

    def __init__(self, root: str, split: str, hierarchy_csv: str, *,
                 allow_missing_classes: bool = False):
        directory = _split_dir(root, split)
        self.hierarchy = _hierarchy(hierarchy_csv)
        paths, fine, empty, unknown = _listing(directory, self.hierarchy)
        if unknown:
            raise DataError(_unknown_folders(directory, unknown, hierarchy_csv))
        if not paths:
            raise DataError(f"{directory} holds no images (no file with an extension Pillow "
                            "decodes)")
        if empty:
            listed = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more"
                                              if len(empty) > 10 else "")
            message = (f"{directory}: {len(empty)} classes of {hierarchy_csv} have no "
                       f"images: {listed}")
            if not allow_missing_classes:
                raise DataError(f"{message}. Add their images, remove them from the CSV, or "
                                "set config.data.allow_missing_classes=True to train without "
                                "them")
            logging.warning("%s (config.data.allow_missing_classes).", message)
        self.paths = [str(p) for p in paths]
        self.labels_Nxh = self.hierarchy.labels_for(fine).astype(np.int32)
        self.name = f"{directory}"
        self.image_shape = None  # encoded: decoded by the transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.name!r}, {len(self)} images)"

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        return {"image": Path(path).read_bytes(), "labels": self.labels_Nxh[index],
                "bbox": WHOLE_IMAGE, "name": path}


def check_folder(root: str, hierarchy_csv: str, splits=("train", "test"),
                 progress=None) -> list[str]:
    """Every problem of an image folder, one line each ([] when there is none): missing
    split folders, folders that are not classes of the CSV, classes without images,
    files whose extension no decoder claims, and files that do not decode. Decodes every
    image once; `progress(done, total)` is called as it goes."""
    from PIL import Image

    problems = []
    try:
        hierarchy = _hierarchy(hierarchy_csv)
    except (DataError, OSError, ValueError) as e:
        return [str(e)]
    to_decode = []
    for split in splits:
        try:
            directory = _split_dir(root, split)
            paths, _, empty, unknown = _listing(directory, hierarchy)
        except DataError as e:
            problems.append(str(e))
            continue
        if unknown:
            problems.append(_unknown_folders(directory, unknown, hierarchy_csv))
        problems += [f"{directory / name}: class {name!r} has no images" for name in empty]
        suffixes = image_suffixes()
        problems += [f"{f}: not an image file Pillow decodes (skipped in training)"
                     for p in sorted(directory.iterdir()) if p.is_dir()
                     for f in sorted(p.iterdir())
                     if f.is_file() and f.suffix.lower() not in suffixes]
        to_decode += paths
    for i, path in enumerate(to_decode):
        try:
            with Image.open(path) as image:
                image.convert("RGB").load()
        except Exception as e:  # Pillow raises many types for damaged files
            problems.append(f"{path}: unreadable ({type(e).__name__}: {e})")
        if progress is not None:
            progress(i + 1, len(to_decode))
    return problems
