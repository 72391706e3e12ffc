"""Stanford Dogs (Khosla et al. 2011): 20,580 images of 120 breeds, 12,000 train / 8,580
test.

Three official files:

    images.tar       Images/<wnid>-<Breed>/<wnid>_<n>.jpg, e.g.
                     Images/n02085620-Chihuahua/n02085620_10074.jpg
    annotation.tar   Annotation/<wnid>-<Breed>/<wnid>_<n>: Pascal-VOC XML (no extension)
                     with one <object><bndbox> per dog; the first one is stored
    lists.tar        train_list.mat, test_list.mat (and file_list.mat): file_list (N x 1
                     cell of "<wnid>-<Breed>/<wnid>_<n>.jpg") and labels (N x 1, 1-based)

Class i is the i-th breed directory in sorted WordNet-id order, named as the directory
without its WordNet id ("n02085620-Chihuahua" -> "Chihuahua"). Hierarchy: `suffix`
(120 breeds / 78 groups, see `hierjax.hierarchy.shipped`). Boxes: VOC xmin, ymin, xmax, ymax,
1-based inclusive pixels. The stored filename is the file_list entry.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import tensorflow_datasets as tfds

from hierjax.hierarchy import shipped
from hierjax.prepare import common

SOURCE = "http://vision.stanford.edu/aditya86/ImageNetDogs/"
IMAGES, ANNOTATIONS, LISTS = "images.tar", "annotation.tar", "lists.tar"
HIERARCHY = "suffix"


def voc_box(data: bytes, where: str) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the first object of a Pascal-VOC annotation."""
    try:
        box = ET.fromstring(data).find("object/bndbox")
        return tuple(float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (ET.ParseError, AttributeError, TypeError, ValueError):
        raise common.ArchiveError(
            f"{where} is not a Pascal-VOC annotation with an object bndbox; is "
            f"{ANNOTATIONS} the official file?") from None


class Dogs(common.Builder):
    """Stanford Dogs: breeds with a name-suffix hierarchy."""

    name = "hierjax_dogs"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "dogs"
    ARCHIVES = {IMAGES: SOURCE, ANNOTATIONS: SOURCE, LISTS: SOURCE}

    def hierarchies(self):
        return {HIERARCHY: shipped.load(f"dogs/{HIERARCHY}")}

    def _labels(self, split, path) -> dict[str, int]:
        """{file_list entry: fine id} of a split; every breed name checked."""
        name = f"{split}_list.mat"
        mat = common.load_mat(common.read_tar_files(path, [name])[name], f"{path}:{name}")
        if "file_list" not in mat or "labels" not in mat:
            raise common.ArchiveError(f"{path}:{name} has no file_list and labels")
        files = [str(f) for f in np.atleast_1d(mat["file_list"])]
        labels = [int(label) - 1 for label in np.atleast_1d(mat["labels"])]
        fine_names = self._hierarchies_cached()[HIERARCHY].class_names[0]
        for file, label in zip(files, labels):
            breed = file.split("/")[0].partition("-")[2]
            if not 0 <= label < len(fine_names) or breed != fine_names[label]:
                expected = fine_names[label] if 0 <= label < len(fine_names) else "none"
                raise common.ArchiveError(
                    f"{path}:{name}: {file} has label {label + 1}, the breed {expected!r} "
                    f"of the shipped hierarchy, but its directory names {breed!r}; is "
                    "this the official file?")
        return dict(zip(files, labels))

    def _generate_examples(self, split, archives):
        labels = self._labels(split, archives[LISTS])
        wanted = {"Annotation/" + f.rsplit(".", 1)[0]: f for f in labels}
        boxes = {wanted[member]: voc_box(data, f"{archives[ANNOTATIONS]}:{member}")
                 for member, data in common.iter_tar(archives[ANNOTATIONS], wanted.__contains__)}
        if len(boxes) != len(labels):
            missing = next(f for f in labels if f not in boxes)
            raise common.ArchiveError(
                f"{archives[ANNOTATIONS]} lacks {len(labels) - len(boxes)} annotation(s) "
                f"of {split} images (e.g. of {missing}); download it again.")
        # 1-based inclusive pixel indices -> corners of the covered pixel area.
        wanted = {file: (file, fine, (boxes[file][0] - 1, boxes[file][1] - 1, *boxes[file][2:]))
                  for file, fine in labels.items()}
        return self.image_examples(archives[IMAGES], "Images/", wanted, split,
                                   f"{split}_list.mat")
