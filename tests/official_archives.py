"""Tiny archives in the exact official layouts, for the builder and pipeline tests.

Each `write_<dataset>(directory, ...)` writes the dataset's official archive file(s)
into `directory` with a few classes and a few small random JPEGs, and returns the
expected contents: {split: [(filename, fine label, (x0, y0, x1, y1) box in pixels,
(width, height))]} so tests can check what the builder stored. The filename is the one
the builder stores; the box corners bound the covered pixel area (a 1-based inclusive
box xmin..xmax, as Aircraft, Cars and Dogs publish them, is x0 = xmin - 1, x1 = xmax).
CIFAR-100's images are random pixels in its pickles, the others small JPEGs.

`rename={class id: name}` misspells classes in an archive's class list, and
`rewrite_tar` drops or edits members, for the error tests.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from hierjax.hierarchy import shipped as hierarchies


def jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A small random JPEG (smooth, so it compresses like a photo)."""
    base = rng.integers(0, 256, size=(max(1, height // 4), max(1, width // 4), 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    """A tar archive holding `files` ({member path: bytes}) in the given order."""
    with tarfile.open(path, mode) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def read_tar(path: Path) -> dict[str, bytes]:
    """{member path: bytes} of every file of a tar(.gz), in archive order."""
    with tarfile.open(path, "r:*") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}


def rewrite_tar(path: Path, edit) -> Path:
    """Rewrites a tar archive in place with edit({member: bytes}) -> {member: bytes}
    (to drop or corrupt members in the error tests); keeps its compression.
    """
    mode = "w:gz" if str(path).endswith(("gz", ".tgz")) else "w"
    return write_tar(path, edit(read_tar(path)), mode)


def renamed(names, rename=None) -> list[str]:
    """names with {index: new name} applied (misspelt class lists for the error tests)."""
    return [(rename or {}).get(i, name) for i, name in enumerate(names)]


def text(lines) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def mat(**variables) -> bytes:
    """A MATLAB .mat file (v5, as scipy and MATLAB write it) of the given variables."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


def cell(strings, column: bool = False) -> np.ndarray:
    """A MATLAB cell array of strings: 1 x N, or N x 1 with column=True."""
    array = np.empty((len(strings), 1) if column else (1, len(strings)), dtype=object)
    array.flat[:] = list(strings)
    return array


def random_box(rng, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel corners (x0, y0, x1, y1) of a box inside a width x height image."""
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    return x0, y0, int(rng.integers(x0 + 2, width + 1)), int(rng.integers(y0 + 2, height + 1))


def write_cub(directory: Path, *, classes=(0, 1, 83), per_class: int = 3, seed: int = 0,
              rename=None, image=None):
    """CUB_200_2011.tgz with every class in classes.txt but images of `classes` only.

    rename ({class id: name}) misspells classes in classes.txt, for the error tests;
    image(rng, width, height) -> bytes replaces the tiny random JPEGs (the benchmark's
    photo-sized ones; the expected boxes then refer to the nominal width and height).
    """
    rng = np.random.default_rng(seed)
    names = hierarchies.load("cub/species_family_order").class_names[0]
    root = "CUB_200_2011/"
    files, rows = {}, {"images": [], "labels": [], "split": [], "boxes": []}
    expected = {"train": [], "test": []}
    image_id = 0
    for c in classes:
        folder = f"{c + 1:03d}.{names[c]}"
        for k in range(per_class):
            image_id += 1
            width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            relative = f"{folder}/{names[c]}_{k:04d}_{image_id}.jpg"
            files[root + "images/" + relative] = (image or jpeg)(rng, width, height)
            x, y = float(rng.integers(0, width // 2)), float(rng.integers(0, height // 2))
            w, h = float(width // 3), float(height // 3)
            train = k % 2 == 0
            rows["images"].append(f"{image_id} {relative}")
            rows["labels"].append(f"{image_id} {c + 1}")
            rows["split"].append(f"{image_id} {int(train)}")
            rows["boxes"].append(f"{image_id} {x} {y} {w} {h}")
            expected["train" if train else "test"].append(
                (relative, c, (x, y, x + w, y + h), (width, height)))
    tables = {
        "classes.txt": [f"{i + 1} {i + 1:03d}.{n}"
                        for i, n in enumerate(renamed(names, rename))],
        "images.txt": rows["images"],
        "image_class_labels.txt": rows["labels"],
        "train_test_split.txt": rows["split"],
        "bounding_boxes.txt": rows["boxes"],
    }
    for name, lines in tables.items():
        files[root + name] = ("\n".join(lines) + "\n").encode()
    write_tar(Path(directory) / "CUB_200_2011.tgz", files)
    return expected


def write_aircraft(directory: Path, *, classes=(0, 37, 73), per_class: int = 3, seed: int = 1,
                   rename=None):
    """fgvc-aircraft-2013b.tar.gz: image k of a class goes to train, val, test (k % 3).

    Every class is in variants.txt / families.txt / manufacturers.txt; boxes are written
    1-based inclusive, as in images_box.txt.
    """
    rng = np.random.default_rng(seed)
    tree = hierarchies.load("aircraft/variant_family_manufacturer")
    root = "fgvc-aircraft-2013b/data/"
    files, boxes = {}, []
    rows = {(level, split): [] for level in ("variant", "family", "manufacturer")
            for split in ("train", "val", "trainval", "test")}
    expected = {"train": [], "val": [], "trainval": [], "test": []}
    image_number = 34309
    for c in classes:
        for k in range(per_class):
            image_number += 1
            image_id = f"{image_number:07d}"
            width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            files[root + f"images/{image_id}.jpg"] = jpeg(rng, width, height)
            x0, y0, x1, y1 = random_box(rng, width, height)
            boxes.append(f"{image_id} {x0 + 1} {y0 + 1} {x1} {y1}")
            split = ("train", "val", "test")[k % 3]
            for s in (split, "trainval") if split != "test" else (split,):
                expected[s].append((f"{image_id}.jpg", c, (x0, y0, x1, y1), (width, height)))
                for l, level in enumerate(("variant", "family", "manufacturer")):
                    name = tree.class_names[l][tree.ancestors[c, l]]
                    rows[level, s].append(f"{image_id} {name}")
    files[root + "variants.txt"] = text(renamed(tree.class_names[0], rename))
    files[root + "families.txt"] = text(tree.class_names[1])
    files[root + "manufacturers.txt"] = text(tree.class_names[2])
    files[root + "images_box.txt"] = text(boxes)
    for (level, split), lines in rows.items():
        files[root + f"images_{level}_{split}.txt"] = text(lines)
        if level == "variant":
            files[root + f"images_{split}.txt"] = text(line.split()[0] for line in lines)
    write_tar(Path(directory) / "fgvc-aircraft-2013b.tar.gz", files)
    return expected


def write_cars(directory: Path, *, classes=(0, 3, 195), per_class: int = 3, seed: int = 2,
               rename=None):
    """The four Stanford Cars files: image k of a class is a test image when k % 3 == 1.

    cars_meta.mat names all 196 classes; boxes and classes are 1-based, as in the .mat
    files; the devkit's cars_test_annos.mat has no classes (like the official one).
    """
    rng = np.random.default_rng(seed)
    names = hierarchies.load("cars/model_bodytype").class_names[0]
    images = {"train": {}, "test": {}}
    annos = {"train": [], "test": []}
    expected = {"train": [], "test": []}
    for c in classes:
        for k in range(per_class):
            split = "test" if k % 3 == 1 else "train"
            fname = f"{len(images[split]) + 1:05d}.jpg"
            width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            images[split][f"cars_{split}/{fname}"] = jpeg(rng, width, height)
            x0, y0, x1, y1 = random_box(rng, width, height)
            annos[split].append((x0 + 1, y0 + 1, x1, y1, c + 1, fname))
            expected[split].append((f"cars_{split}/{fname}", c, (x0, y0, x1, y1),
                                    (width, height)))

    def struct(rows, with_class=True):
        """The 1 x N annotations struct array of the official .mat files."""
        fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (
            ["class"] if with_class else []) + ["fname"]
        array = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
        for i, (*box, c, fname) in enumerate(rows):
            array[0, i] = tuple([np.uint16(v) for v in box]
                                + ([np.uint8(c)] if with_class else []) + [fname])
        return array

    directory = Path(directory)
    for split in ("train", "test"):
        write_tar(directory / f"cars_{split}.tgz", images[split])
    write_tar(directory / "car_devkit.tgz", {
        "devkit/README.txt": b"This file gives documentation for the cars 196 dataset.\n",
        "devkit/cars_meta.mat": mat(class_names=cell(renamed(names, rename))),
        "devkit/cars_train_annos.mat": mat(annotations=struct(annos["train"])),
        "devkit/cars_test_annos.mat": mat(annotations=struct(annos["test"], False)),
        "devkit/eval_train.m": b"% evaluation script\n",
    })
    (directory / "cars_test_annos_withlabels.mat").write_bytes(
        mat(annotations=struct(annos["test"])))
    return expected


def voc_xml(folder: str, filename: str, width: int, height: int, boxes) -> bytes:
    """A Stanford Dogs annotation: Pascal-VOC XML, one <object> per box (1-based)."""
    objects = "".join(
        f"<object><name>dog</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for x0, y0, x1, y1 in boxes)
    return (f"<annotation><folder>{folder}</folder><filename>{filename}</filename>"
            f"<source><database>ImageNet database</database></source><size>"
            f"<width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<segment>0</segment>{objects}</annotation>").encode()


def write_dogs(directory: Path, *, classes=(0, 4, 59), per_class: int = 3, seed: int = 3,
               rename=None):
    """images.tar, annotation.tar, lists.tar: image k of a class is a test image when
    k % 3 == 1. The first image of each class has a second (ignored) dog box.

    WordNet ids are made up but increase with the class id, like the real ones; rename
    changes the breed in a class's directory names.
    """
    rng = np.random.default_rng(seed)
    names = renamed(hierarchies.load("dogs/suffix").class_names[0], rename)
    images, annotations = {}, {}
    lists = {"train": [], "test": []}
    expected = {"train": [], "test": []}
    for c in classes:
        wnid = f"n{2085620 + 1000 * c:08d}"
        for k in range(per_class):
            stem = f"{wnid}-{names[c]}/{wnid}_{1000 + k}"
            width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            images[f"Images/{stem}.jpg"] = jpeg(rng, width, height)
            x0, y0, x1, y1 = random_box(rng, width, height)
            boxes = [(x0 + 1, y0 + 1, x1, y1)] + ([(1, 1, 5, 5)] if k == 0 else [])
            annotations[f"Annotation/{stem}"] = voc_xml(
                wnid[1:], stem.split("/")[1], width, height, boxes)
            split = "test" if k % 3 == 1 else "train"
            lists[split].append((stem, c))
            expected[split].append((f"{stem}.jpg", c, (x0, y0, x1, y1), (width, height)))

    def list_mat(rows):
        return mat(file_list=cell([f"{s}.jpg" for s, _ in rows], column=True),
                   annotation_list=cell([s for s, _ in rows], column=True),
                   labels=np.array([[c + 1.0] for _, c in rows]))

    directory = Path(directory)
    write_tar(directory / "images.tar", images, "w")
    write_tar(directory / "annotation.tar", annotations, "w")
    write_tar(directory / "lists.tar", {
        "file_list.mat": list_mat(lists["train"] + lists["test"]),
        "train_list.mat": list_mat(lists["train"]),
        "test_list.mat": list_mat(lists["test"]),
    }, "w")
    return expected


# A small NABirds tree (ids as in classes.txt; 0 is the root). Classes with images:
# 95, 500, 817, 1005 (1005 and 817 sort the wrong way round as text; 500 sits right
# under its top-level group; 300 and 501 have no images).
NABIRDS_CLASSES = {
    0: ("Birds", None),
    1: ("Perching Birds", 0),
    2: ("Ducks, Geese, and Swans", 0),
    3: ("Hawks, Kites, Eagles, and Allies", 0),
    10: ("Tyrant Flycatchers", 1),
    95: ("Eastern Phoebe", 10),
    300: ("Red-tailed Hawk", 3),
    500: ("Mallard", 2),
    501: ("Wood Duck", 2),
    817: ("Red-tailed Hawk (Adult)", 300),
    1005: ("Red-tailed Hawk (Immature)", 300),
}
NABIRDS_WITH_IMAGES = (1005, 95, 817, 500)


def write_nabirds(directory: Path, *, classes=NABIRDS_WITH_IMAGES, per_class: int = 3,
                  seed: int = 4, tree=None):
    """nabirds.tar.gz: image k of a class is a test image when k % 3 == 1.

    tree ({class id: (name, parent id or None)}) replaces NABIRDS_CLASSES (for the error
    tests). Fine labels follow the sorted ids of the classes with images.
    """
    import uuid

    rng = np.random.default_rng(seed)
    tree = NABIRDS_CLASSES if tree is None else tree
    fine = {c: i for i, c in enumerate(sorted(classes))}
    root = "nabirds/"
    files = {}
    rows = {"images": [], "labels": [], "split": [], "boxes": [], "sizes": []}
    expected = {"train": [], "test": []}
    for c in classes:
        for k in range(per_class):
            image_id = str(uuid.UUID(bytes=rng.bytes(16)))
            relative = f"{c:04d}/{image_id.replace('-', '')}.jpg"
            width, height = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            files[root + "images/" + relative] = jpeg(rng, width, height)
            x0, y0, x1, y1 = random_box(rng, width, height)
            train = k % 3 != 1
            rows["images"].append(f"{image_id} {relative}")
            rows["labels"].append(f"{image_id} {c}")
            rows["split"].append(f"{image_id} {int(train)}")
            rows["boxes"].append(f"{image_id} {x0} {y0} {x1 - x0} {y1 - y0}")
            rows["sizes"].append(f"{image_id} {width} {height}")
            expected["train" if train else "test"].append(
                (relative, fine[c], (x0, y0, x1, y1), (width, height)))
    tables = {
        "README": ["NABirds V1"],
        "classes.txt": [f"{i} {name}" for i, (name, _) in sorted(tree.items())],
        "hierarchy.txt": [f"{i} {p}" for i, (_, p) in sorted(tree.items()) if p is not None],
        "images.txt": rows["images"],
        "image_class_labels.txt": rows["labels"],
        "train_test_split.txt": rows["split"],
        "bounding_boxes.txt": rows["boxes"],
        "sizes.txt": rows["sizes"],
    }
    for name, lines in tables.items():
        files[root + name] = text(lines)
    write_tar(Path(directory) / "nabirds.tar.gz", files)
    return expected


def write_cifar100(directory: Path, *, per_split=None, seed: int = 5, rename=None,
                   coarse_offset: int = 0):
    """cifar-100-python.tar.gz: {train,test,meta} pickles with bytes keys, the data as a
    uint8 [N, 3072] array of CHW rows (protocol 2, as the official Python 2 pickles).

    coarse_offset shifts the stored coarse labels (a wrong archive, for the error tests).
    """
    import pickle

    rng = np.random.default_rng(seed)
    tree = hierarchies.load("cifar100/class_superclass")
    per_split = per_split or {"train": (3, 41, 99, 3), "test": (0, 41)}
    root = "cifar-100-python/"
    files, expected = {}, {}
    for split, fine in per_split.items():
        images = rng.integers(0, 256, size=(len(fine), 32, 32, 3), dtype=np.uint8)
        filenames = [f"{tree.class_names[0][c]}_s_{100 + i:06d}.png" for i, c in enumerate(fine)]
        files[root + split] = pickle.dumps({
            b"filenames": [f.encode() for f in filenames],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": list(fine),
            b"coarse_labels": [(int(tree.ancestors[c, 1]) + coarse_offset) % 20 for c in fine],
            b"data": images.transpose(0, 3, 1, 2).reshape(len(fine), 3072),
        }, protocol=2)
        expected[split] = [(f, c, (0, 0, 32, 32), (32, 32)) for f, c in zip(filenames, fine)]
    files[root + "meta"] = pickle.dumps({
        b"fine_label_names": [n.encode() for n in renamed(tree.class_names[0], rename)],
        b"coarse_label_names": [n.encode() for n in tree.class_names[1]],
    }, protocol=2)
    files[root + "file.txt~"] = b""
    write_tar(Path(directory) / "cifar-100-python.tar.gz", files)
    return expected
