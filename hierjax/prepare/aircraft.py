"""FGVC-Aircraft 2013b (Maji et al. 2013): 10,000 images of 100 aircraft variants,
3,334 train / 3,333 val / 3,333 test (trainval = train + val, 6,667).

Archive: `fgvc-aircraft-2013b.tar.gz`, everything under `fgvc-aircraft-2013b/data/`:

    images/<id>.jpg                  7-digit ids, e.g. images/0034309.jpg
    variants.txt, families.txt, manufacturers.txt
                                     one class name a line (100 / 70 / 30)
    images_variant_<split>.txt       "<id> <variant name>" (names may hold spaces)
    images_family_<split>.txt, images_manufacturer_<split>.txt   the same, coarser
    images_box.txt                   "<id> xmin ymin xmax ymax", 1-based inclusive pixels

for <split> in train, val, trainval, test. Hierarchy: `variant_family_manufacturer`
(100 / 70 / 30, see `hierjax.hierarchy.shipped`); the archive's own family and manufacturer
label of every image is checked against it.

Every image carries a 20-pixel copyright banner at the bottom. It is stored as published
(not cropped here); the usual protocol crops it in the input pipeline. Boxes are in the
coordinates of the whole image, banner included.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from hierjax.hierarchy import shipped
from hierjax.prepare import common

ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
ROOT = "fgvc-aircraft-2013b/data/"
HIERARCHY = "variant_family_manufacturer"
# Level l of the hierarchy <-> the archive's class list and per-image label files.
LEVELS = (("variants.txt", "variant"), ("families.txt", "family"),
          ("manufacturers.txt", "manufacturer"))


def named_rows(data: bytes) -> dict[str, str]:
    """{image id: class name} of an images_<level>_<split>.txt file."""
    rows = {}
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            image_id, _, name = line.strip().partition(" ")
            rows[image_id] = name
    return rows


def lines(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


class Aircraft(common.Builder):
    """FGVC-Aircraft: variants with a family / manufacturer hierarchy."""

    name = "hierjax_aircraft"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "aircraft"
    ARCHIVES = {ARCHIVE: "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"}
    SPLITS = ("train", "val", "trainval", "test")

    def hierarchies(self):
        return {HIERARCHY: shipped.load(f"aircraft/{HIERARCHY}")}

    def _labels(self, path, split, tables) -> dict[str, int]:
        """{image id: fine id} of a split, after checking the archive's class lists
        and coarse labels against the shipped hierarchy.
        """
        tree = self._hierarchies_cached()[HIERARCHY]
        label_files = [f"images_{level}_{split}.txt" for _, level in LEVELS]
        for names, (file, _) in zip(tree.class_names, LEVELS):
            common.check_class_names(names, lines(tables[ROOT + file]), f"{path} {file}")
        per_level = [named_rows(tables[ROOT + f]) for f in label_files]
        fine_id = {name: i for i, name in enumerate(tree.class_names[0])}
        labels = {}
        for image_id, variant in per_level[0].items():
            if variant not in fine_id:
                raise common.ArchiveError(
                    f"{path} {label_files[0]}: image {image_id} has the unknown variant "
                    f"{variant!r}; is this the official fgvc-aircraft-2013b archive?")
            fine = labels[image_id] = fine_id[variant]
            for level in (1, 2):
                expected = tree.class_names[level][tree.ancestors[fine, level]]
                found = per_level[level].get(image_id)
                if found != expected:
                    raise common.ArchiveError(
                        f"{path} {label_files[level]}: image {image_id} (variant "
                        f"{variant!r}) is labelled {found!r}, but the shipped hierarchy "
                        f"puts {variant!r} under {expected!r}; is this the official file?")
        return labels

    def _generate_examples(self, split, archives):
        path = archives[ARCHIVE]
        files = [name for name, _ in LEVELS] + ["images_box.txt"] + [
            f"images_{level}_{split}.txt" for _, level in LEVELS]
        tables = common.read_tar_files(path, [ROOT + f for f in files])
        labels = self._labels(path, split, tables)
        boxes = {row[0]: tuple(map(float, row[1:5]))
                 for row in common.text_rows(tables[ROOT + "images_box.txt"])}
        # 1-based inclusive pixel indices -> corners of the covered pixel area.
        wanted = {}
        for image_id, fine in labels.items():
            if image_id not in boxes:
                raise common.ArchiveError(f"{path} images_box.txt has no box for {image_id}")
            xmin, ymin, xmax, ymax = boxes[image_id]
            wanted[f"{image_id}.jpg"] = (f"{image_id}.jpg", fine, (xmin - 1, ymin - 1, xmax, ymax))
        return self.image_examples(path, ROOT + "images/", wanted, split,
                                   f"images_variant_{split}.txt")
