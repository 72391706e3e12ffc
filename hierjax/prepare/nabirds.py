"""NABirds v1 (Van Horn et al. 2015): 48,562 images of 555 visual categories of North
American birds, 23,929 train / 24,633 test.

Archive: `nabirds.tar.gz` with, under `nabirds/`:

    images/<class id, 4 digits>/<uuid without dashes>.jpg
    images.txt                "<uuid> <class id, 4 digits>/<file>.jpg"
    image_class_labels.txt    "<uuid> <class id>"
    train_test_split.txt      "<uuid> <1 train | 0 test>"
    bounding_boxes.txt        "<uuid> x y width height" (pixels)
    classes.txt               "<class id> <name with spaces>" (the 1,011 nodes of the tree)
    hierarchy.txt             "<child id> <parent id>" (every node but the root, 0 Birds)

No hierarchy ships with hierjax: `class_parent_group` is built from the archive's own
tree when the dataset is prepared, and stored in its metadata (a prepared dataset reads
it from there, without the archive). Its three levels:

    class    the classes that have images (555), in increasing class-id order
    parent   the class's parent in hierarchy.txt (the species of a sex / age / plumage
             category, else a family-level group)
    group    the class's ancestor just below the root (e.g. "Perching Birds")

A class right under a group has that group as its parent (a class right under the root
would be its own parent and group). Names are those of classes.txt, as "<name> (id N)"
where two nodes of one level share a name; coarse ids follow sorted names.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from hierjax.prepare import common
from hierjax.hierarchy import Hierarchy

ARCHIVE = "nabirds.tar.gz"
ROOT = "nabirds/"
TABLES = ("classes.txt", "hierarchy.txt", "image_class_labels.txt", "images.txt",
          "train_test_split.txt", "bounding_boxes.txt")
HIERARCHY = "class_parent_group"


def ancestry(c: int, parent: dict[int, int], where: str) -> list[int]:
    """c and its ancestors, the root excluded (the root is the node without a parent)."""
    if c not in parent:
        raise common.ArchiveError(f"{where}: class {c} has no parent in hierarchy.txt")
    path = [c]
    while parent[path[-1]] in parent:
        path.append(parent[path[-1]])
        if len(path) > len(parent):
            raise common.ArchiveError(f"{where}: hierarchy.txt has a cycle through {c}")
    return path


def build_tree(names: dict[int, str], parent: dict[int, int], fine_ids, where) -> Hierarchy:
    """The three-level Hierarchy of the module docstring from the archive's tables."""
    roots = {p for p in parent.values() if p not in parent}
    unnamed = sorted((set(parent) | set(parent.values()) | set(fine_ids)) - set(names))
    if len(roots) != 1 or unnamed:
        raise common.ArchiveError(
            f"{where}: hierarchy.txt is not one tree of the classes.txt classes (roots "
            f"{sorted(roots)}, unnamed ids {unnamed[:5]}); is this the official archive?")
    paths = [ancestry(c, parent, where) for c in fine_ids]
    node_ids = [[p[0] for p in paths], [p[min(1, len(p) - 1)] for p in paths],
                [p[-1] for p in paths]]
    class_names, ancestors = [], np.zeros((len(paths), 3), np.int64)
    for level, ids in enumerate(node_ids):
        nodes = sorted(set(ids))
        count = collections.Counter(names[n] for n in nodes)
        label = {n: names[n] if count[names[n]] == 1 else f"{names[n]} (id {n})" for n in nodes}
        if level:  # coarse ids in sorted name order, the hierjax convention
            nodes.sort(key=label.__getitem__)
        new_id = {n: i for i, n in enumerate(nodes)}
        class_names.append([label[n] for n in nodes])
        ancestors[:, level] = [new_id[n] for n in ids]
    return Hierarchy(("class", "parent", "group"), class_names, ancestors,
                     f"{where} hierarchy.txt")


def xywh(x, y, width, height) -> tuple[float, ...]:
    """A bounding_boxes.txt row (a TypeError / ValueError unless four numbers)."""
    return tuple(map(float, (x, y, width, height)))


class Tables(NamedTuple):
    """What the archive's tables say (parsed once: the tree and both splits use it)."""

    names: dict[int, str]  # class id -> name
    parent: dict[int, int]  # class id -> parent id
    images: dict[str, tuple[str, int, bool, tuple[float, ...]]]
    # ^ file under images/ -> (uuid, class id, is train, (x, y, width, height))

    @property
    def fine_ids(self) -> list[int]:
        """The ids of the classes with images, in increasing order (the fine classes)."""
        return sorted({image[1] for image in self.images.values()})


def read_tables(path: Path) -> Tables:
    """The parsed tables of the archive; an ArchiveError when they do not parse."""
    data = common.read_tar_files(path, [ROOT + t for t in TABLES])
    rows = {t: common.text_rows(data[ROOT + t]) for t in TABLES}
    try:
        names = {int(i): name for i, name in (  # class names hold spaces
            line.split(None, 1) for line in data[ROOT + "classes.txt"].decode(
                "utf-8").splitlines() if line.strip())}
        parent = {int(child): int(up) for child, up in rows["hierarchy.txt"]}
        per_image = {t: {row[0]: row[1:] for row in rows[t]} for t in TABLES[2:]}
        for table, by_uuid in per_image.items():
            if by_uuid.keys() != per_image["images.txt"].keys():
                raise ValueError(f"{table} and images.txt list different images")
        images = {
            file: (u, int(per_image["image_class_labels.txt"][u][0]),
                   per_image["train_test_split.txt"][u][0] == "1",
                   xywh(*per_image["bounding_boxes.txt"][u]))
            for u, (file, *_) in per_image["images.txt"].items()}
    except (ValueError, IndexError, TypeError) as e:
        raise common.ArchiveError(
            f"{path}: its tables are not the NABirds ones ({type(e).__name__}: {e}); is "
            "this the official archive?") from None
    return Tables(names, parent, images)


class Nabirds(common.Builder):
    """NABirds: visual categories with a parent / top-group hierarchy from the archive."""

    name = "hierjax_nabirds"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "nabirds"
    ARCHIVES = {ARCHIVE: "https://dl.allaboutbirds.org/nabirds (a request form)"}
    _tree: Hierarchy | None = None
    _info_cache: tfds.core.DatasetInfo | None = None
    _tables_cache: tuple[Path, Tables] | None = None

    @property
    def info(self) -> tfds.core.DatasetInfo:
        # tfds caches `info` for the builder's lifetime, but the classes are known only
        # once download_and_prepare names the manual dir: this cache can be reset then.
        if self._info_cache is None:
            self._info_cache = self._info()
        return self._info_cache

    def _info(self):
        if self._tree is None:
            metadata = Path(self.data_path) / "metadata.json"  # written when prepared
            if metadata.is_file():
                self._tree = common.hierarchies_from_metadata(
                    json.loads(metadata.read_text()), str(self.data_path))[HIERARCHY]
        if self._tree is None:  # not prepared yet: download_and_prepare rebuilds this
            return tfds.core.DatasetInfo(builder=self, description=self.__doc__)
        return super()._info()

    def hierarchies(self):
        if self._tree is None:
            raise RuntimeError(f"{self.name} is not prepared; its classes are unknown")
        return {HIERARCHY: self._tree}

    def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs):
        config = download_config or tfds.download.DownloadConfig()
        # tfds reuses an existing data_path unless told to overwrite; only else read.
        if not self.data_path.exists() or config.download_mode.overwrite_dataset:
            manual_dir = config.manual_dir or (
                Path(download_dir or Path(self.data_dir_root) / "downloads") / "manual")
            path = common.archive_path(Path(manual_dir), ARCHIVE, self.ARCHIVES[ARCHIVE])
            tables = self._tables(path)
            self._tree = build_tree(tables.names, tables.parent, tables.fine_ids, str(path))
            file_format = self.info.file_format
            self._info_cache = None  # the features and metadata of the archive's classes
            self.__dict__.pop("_hierarchy_cache", None)
            self.info.set_file_format(file_format)
        super().download_and_prepare(
            download_dir=download_dir, download_config=download_config, **kwargs)

    def _tables(self, path: Path) -> Tables:
        if self._tables_cache is None or self._tables_cache[0] != path:
            self._tables_cache = (path, read_tables(path))
        return self._tables_cache[1]

    def _generate_examples(self, split, archives):
        path = archives[ARCHIVE]
        tables = self._tables(path)
        fine = {c: i for i, c in enumerate(tables.fine_ids)}
        wanted = {file: image for file, image in tables.images.items()
                  if image[2] == (split == "train")}
        wanted = {file: (file, fine[class_id], (x, y, x + w, y + h))
                  for file, (_, class_id, _, (x, y, w, h)) in wanted.items()}
        return self.image_examples(path, ROOT + "images/", wanted, split, "images.txt")
