"""CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species, 5,994 train / 5,794 test.

Archive: `CUB_200_2011.tgz` with `CUB_200_2011/{classes,images,image_class_labels,
train_test_split,bounding_boxes}.txt` and `CUB_200_2011/images/NNN.Class_name/*.jpg`.
Hierarchies (all stored with every example): `species_family_order` (200/38/13, the
default), `species_genus_family_order` (200/122/37/13) and `suffix` (200 -> 70); see
`hierjax.hierarchy.shipped`. Boxes: `bounding_boxes.txt` (x, y, width, height in pixels).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from hierjax.hierarchy import shipped
from hierjax.prepare import common

ARCHIVE = "CUB_200_2011.tgz"
ROOT = "CUB_200_2011/"
TABLES = ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt",
          "bounding_boxes.txt")


class Cub(common.Builder):
    """CUB-200-2011 birds: species with family / order / genus / name-suffix hierarchies."""

    name = "hierjax_cub"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "cub"
    ARCHIVES = {ARCHIVE: "https://data.caltech.edu/records/65de6-vp158"}

    def hierarchies(self):
        return {name: shipped.load(f"cub/{name}")
                for name in ("species_family_order", "species_genus_family_order", "suffix")}

    def _generate_examples(self, split, archives):
        path = archives[ARCHIVE]
        tables = {name: common.text_rows(data) for name, data in
                  common.read_tar_files(path, [ROOT + t for t in TABLES]).items()}
        classes = [row[1].split(".", 1)[1] for row in tables[ROOT + "classes.txt"]]
        fine_names = self._hierarchies_cached()["species_family_order"].class_names[0]
        common.check_class_names(fine_names, classes, f"{path} classes.txt")
        label = {row[0]: int(row[1]) - 1 for row in tables[ROOT + "image_class_labels.txt"]}
        is_train = {row[0]: row[1] == "1" for row in tables[ROOT + "train_test_split.txt"]}
        box = {row[0]: tuple(map(float, row[1:5])) for row in tables[ROOT + "bounding_boxes.txt"]}
        wanted = {}
        for i, file in tables[ROOT + "images.txt"]:
            if is_train[i] == (split == "train"):
                x, y, w, h = box[i]
                wanted[file] = (file, label[i], (x, y, x + w, y + h))
        return self.image_examples(path, ROOT + "images/", wanted, split, "images.txt")
