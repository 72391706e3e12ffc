"""CIFAR-100 (Krizhevsky 2009): 60,000 32x32 colour images of 100 classes in 20
superclasses, 50,000 train / 10,000 test.

Archive: `cifar-100-python.tar.gz` with `cifar-100-python/{train,test,meta}`, Python
pickles with bytes keys: train / test hold b"data" (uint8 [N, 3072], each row the
1024 red, then green, then blue values of a 32x32 image in row-major order),
b"fine_labels", b"coarse_labels" and b"filenames"; meta holds b"fine_label_names" and
b"coarse_label_names". Images are stored as lossless PNG (the archive has raw pixels);
bbox is the whole image. Hierarchy: `class_superclass` (100 / 20, see
`hierjax.hierarchy.shipped`), checked against the archive's own coarse labels.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import tensorflow_datasets as tfds

from hierjax.hierarchy import shipped
from hierjax.prepare import common

ARCHIVE = "cifar-100-python.tar.gz"
ROOT = "cifar-100-python/"
HIERARCHY = "class_superclass"


def unpickle(data: bytes, where: str) -> dict:
    # Unpickling can run code: it is only acceptable because this is the official
    # archive that the user downloaded and supplied (the format leaves no other way).
    try:
        return pickle.loads(data, encoding="bytes")
    except Exception as e:  # pickle raises many types for a bad file
        raise common.ArchiveError(
            f"{where} is not a readable CIFAR-100 pickle ({type(e).__name__}: {e}); "
            "download the archive again.") from None


def png(pixels: np.ndarray) -> bytes:
    """A lossless PNG of an HWC uint8 image."""
    from PIL import Image  # only preparation encodes images

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Cifar100(common.Builder):
    """CIFAR-100: classes with the official superclass hierarchy."""

    name = "hierjax_cifar100"
    VERSION = tfds.core.Version("1.0.0")
    KEY = "cifar100"
    ARCHIVES = {ARCHIVE: "https://www.cs.toronto.edu/~kriz/cifar.html"}
    IMAGE_FORMAT = "png"

    def hierarchies(self):
        return {HIERARCHY: shipped.load(f"cifar100/{HIERARCHY}")}

    def _generate_examples(self, split, archives):
        path = archives[ARCHIVE]
        files = common.read_tar_files(path, [ROOT + "meta", ROOT + split])
        meta = unpickle(files[ROOT + "meta"], f"{path}:{ROOT}meta")
        batch = unpickle(files[ROOT + split], f"{path}:{ROOT}{split}")
        tree = self._hierarchies_cached()[HIERARCHY]
        for level, key in enumerate((b"fine_label_names", b"coarse_label_names")):
            names = [n.decode() for n in meta.get(key, [])]
            common.check_class_names(tree.class_names[level], names, f"{path} meta {key}")
        try:
            pixels = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            fine, coarse, filenames = (
                batch[k] for k in (b"fine_labels", b"coarse_labels", b"filenames"))
        except (KeyError, ValueError):
            raise common.ArchiveError(
                f"{path}:{ROOT}{split} lacks data or labels, or its data is not N x 3072; "
                "is this the official archive?") from None
        if not len(pixels) == len(fine) == len(coarse) == len(filenames):
            raise common.ArchiveError(
                f"{path}:{ROOT}{split} holds {len(pixels)} images but {len(fine)} / "
                f"{len(coarse)} / {len(filenames)} labels / filenames; download it again.")
        fine, coarse = np.asarray(fine, np.int64), np.asarray(coarse, np.int64)
        if fine.size and not 0 <= fine.min() <= fine.max() < tree.num_classes[0]:
            raise common.ArchiveError(f"{path}:{ROOT}{split} has fine labels outside 0..99")
        bad = np.flatnonzero(tree.ancestors[fine, 1] != coarse)
        if bad.size:
            i = bad[0]
            parent = tree.ancestors[fine[i], 1]
            raise common.ArchiveError(
                f"{path}:{ROOT}{split}: image {i} of class {tree.class_names[0][fine[i]]!r} "
                f"has coarse label {coarse[i]}, but the shipped hierarchy puts the class "
                f"under {parent} ({tree.class_names[1][parent]!r}); is this the official "
                "archive?")
        for i, image in enumerate(pixels.transpose(0, 2, 3, 1)):  # CHW -> HWC
            yield f"{split}_{i:05d}", self.example(
                png(image), int(fine[i]), common.FULL_IMAGE, filenames[i].decode())
