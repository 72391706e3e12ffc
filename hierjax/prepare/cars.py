"""Stanford Cars (Krause et al. 2013): 16,185 images of 196 car models, 8,144 train /
8,041 test.

Four official files:

    cars_train.tgz                   cars_train/00001.jpg ... 08144.jpg
    cars_test.tgz                    cars_test/00001.jpg ... 08041.jpg
    car_devkit.tgz                   devkit/cars_meta.mat (class_names: 1 x 196 cell)
                                     devkit/cars_train_annos.mat (annotations: 1 x 8144
                                     struct bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname)
    cars_test_annos_withlabels.mat   the test annotations with their classes (the
                                     devkit's cars_test_annos.mat has no classes)

Classes are 1-based in the .mat files; boxes are 1-based inclusive pixel indices.
Hierarchy: `model_bodytype` (196 models / 9 body types, see `hierjax.hierarchy.shipped`).
The stored filename is the member path, e.g. `cars_test/00001.jpg` (the two splits
reuse the same file names).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from hierjax.hierarchy import shipped
from hierjax.prepare import common

SOURCE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html, or a mirror of it"
DEVKIT, TEST_LABELS = "car_devkit.tgz", "cars_test_annos_withlabels.mat"
META, TRAIN_ANNOS = "devkit/cars_meta.mat", "devkit/cars_train_annos.mat"
HIERARCHY = "model_bodytype"


class Cars(common.Builder):
    """Stanford Cars: models with a body-type hierarchy."""

    name = "hierjax_cars"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "cars"
    ARCHIVES = {"cars_train.tgz": SOURCE, "cars_test.tgz": SOURCE, DEVKIT: SOURCE,
                TEST_LABELS: SOURCE}

    def hierarchies(self):
        return {HIERARCHY: shipped.load(f"cars/{HIERARCHY}")}

    def _annotations(self, split, archives) -> dict[str, tuple[int, tuple[float, ...]]]:
        """{file name: (fine id, 1-based box)} of a split, class names checked."""
        devkit = common.read_tar_files(archives[DEVKIT], [META, TRAIN_ANNOS])
        where = f"{archives[DEVKIT]}:{META}"
        names = common.load_mat(devkit[META], where).get("class_names")
        if names is None:
            raise common.ArchiveError(f"{where} has no class_names; is it the official file?")
        names = [str(n) for n in np.atleast_1d(names)]
        fine_names = self._hierarchies_cached()[HIERARCHY].class_names[0]
        common.check_class_names(fine_names, names, where)
        if split == "train":
            data, where = devkit[TRAIN_ANNOS], f"{archives[DEVKIT]}:{TRAIN_ANNOS}"
        else:
            data, where = archives[TEST_LABELS].read_bytes(), str(archives[TEST_LABELS])
        mat = common.load_mat(data, where)
        try:
            annos = np.atleast_1d(mat["annotations"])
            rows = zip(*(annos[k] for k in ("fname", "class", "bbox_x1", "bbox_y1",
                                             "bbox_x2", "bbox_y2")))
            result = {str(f): (int(c) - 1, tuple(map(float, box))) for f, c, *box in rows}
        except (KeyError, ValueError, IndexError):
            raise common.ArchiveError(
                f"{where} has no annotations struct with fname, class and bbox_* fields; "
                "is it the official file (for the test split: the one *with labels*)?"
            ) from None
        bad = [f for f, (c, _) in result.items() if not 0 <= c < len(fine_names)]
        if bad:
            raise common.ArchiveError(f"{where}: {bad[0]} has a class outside 1..196")
        return result

    def _generate_examples(self, split, archives):
        annos = self._annotations(split, archives)
        # 1-based inclusive pixel indices -> corners of the covered pixel area.
        wanted = {name: (f"cars_{split}/{name}", fine, (x1 - 1, y1 - 1, x2, y2))
                  for name, (fine, (x1, y1, x2, y2)) in annos.items()}
        return self.image_examples(archives[f"cars_{split}.tgz"], f"cars_{split}/", wanted,
                                   split, "the annotations")
