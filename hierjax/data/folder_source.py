"""A user's own images as a record source: `root/<split>/<fine class>/<image>` plus a
hierarchy CSV whose fine names are the folder names (format: hierjax/hierarchy/tree.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hierjax.data.sources import WHOLE_IMAGE
from hierjax.hierarchy import Hierarchy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageFolderSource:
    """`root/<split>/<fine class name>/<image>` with the fine names of `hierarchy_csv`.

    Every class folder must name a fine class of the hierarchy; classes without a
    folder are allowed (a split may lack some). Files are taken in sorted order.
    """

    def __init__(self, root: str, split: str, hierarchy_csv: str):
        directory = Path(root).expanduser() / split
        if not directory.is_dir():
            raise FileNotFoundError(
                f"no folder {directory}: config.data.data_dir must hold one folder per "
                f"split ({split!r} from config.data.train_split / eval_split)")
        if not hierarchy_csv:
            raise ValueError(
                "config.data.hierarchy must be the path of a hierarchy CSV for "
                "config.data.name = 'image_folder' (format: hierjax/hierarchy/tree.py)")
        self.hierarchy = Hierarchy.from_csv(hierarchy_csv)
        fine_id = {name: i for i, name in enumerate(self.hierarchy.class_names[0])}
        folders = sorted(p for p in directory.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name not in fine_id]
        if unknown:
            raise ValueError(
                f"{directory}: folders {unknown[:5]} ({len(unknown)} in all) are not fine "
                f"classes of {hierarchy_csv}; rename them or add rows to the CSV")
        self.paths = [str(f) for p in folders for f in sorted(p.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.paths:
            raise ValueError(f"{directory} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        fine = np.array([fine_id[Path(f).parent.name] for f in self.paths])
        self.labels_Nxh = self.hierarchy.labels_for(fine).astype(np.int32)
        self.name = f"{directory}"
        self.image_shape = None  # encoded: decoded by the transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.name!r}, {len(self)} images)"

    def __getitem__(self, index: int) -> dict:
        return {"image": Path(self.paths[index]).read_bytes(), "labels": self.labels_Nxh[index],
                "bbox": WHOLE_IMAGE}
