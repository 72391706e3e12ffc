"""What every hierjax tfds builder shares: archive reading, features, hierarchy metadata.

The builders prepare array_record files without TensorFlow: they read the official
archives straight from `manual_dir` (streamed with `tarfile`, nothing extracted to
disk) and store, per example,

    image     the original encoded bytes (JPEG as published; PNG for CIFAR-100's arrays)
    label     the fine class (tfds ClassLabel; the dataset's official class order)
    labels    {hierarchy name: int32 [h]}: the example's class at every level of every
              hierarchy the dataset ships with, fine level first
    bbox      the object box (tfds BBox: ymin, xmin, ymax, xmax in 0..1); the whole
              image for datasets without boxes
    filename  the image's path inside the archive

and, in the dataset's metadata, each hierarchy's level and class names and ancestor
table, so `hierarchies_from_metadata` rebuilds the `Hierarchy` objects from the prepared
files alone.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from hierjax.errors import UserError
from hierjax.hierarchy import Hierarchy


class ArchiveError(UserError, ValueError):
    """An official archive is missing, truncated or not the expected file."""


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the hierjax builders: a fixed example layout and the manual archives.

    Subclasses set `KEY` (the hierjax dataset name), `ARCHIVES` ({file name: where to
    get it}), `SPLITS`, `hierarchies()` (the first one's fine level names the labels) and
    `_generate_examples(split, archives)` ({file name: path}, each checked to exist).
    """

    KEY: str = ""
    ARCHIVES: Mapping[str, str] = {}
    SPLITS: tuple[str, ...] = ("train", "test")
    IMAGE_FORMAT = "jpeg"

    def __init_subclass__(cls, **kwargs):
        # tfds only hands out dl_manager.manual_dir when this attribute is set.
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = "\n".join(
            [f"Put the official archive(s) of {cls.KEY} in --manual_dir:"]
            + [f"  {name}  ({source})" for name, source in cls.ARCHIVES.items()])
        super().__init_subclass__(**kwargs)

    def hierarchies(self) -> dict[str, Hierarchy]:
        """{name: Hierarchy} stored with every example; the first one is the default."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        hierarchies = self.hierarchies()
        fine_names = next(iter(hierarchies.values())).class_names[0]
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=example_features(fine_names, hierarchies, self.IMAGE_FORMAT),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(hierarchies=hierarchy_metadata(hierarchies)),
        )

    def _split_generators(self, dl_manager):
        try:
            manual_dir = Path(dl_manager.manual_dir)
        except AssertionError as e:  # tfds refuses a missing or empty manual dir
            problem = str(e).split(" Create it")[0]  # tfds's own advice says "extract"
            raise ArchiveError(
                f"{problem}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}\n(as downloaded: do not "
                "extract them)") from None
        archives = {name: archive_path(manual_dir, name, self.ARCHIVES[name])
                    for name in self.ARCHIVES}
        return {split: self._generate_examples(split, archives) for split in self.SPLITS}

    def _generate_examples(self, split: str, archives: Mapping[str, Path]):
        raise NotImplementedError

    def example(self, image: bytes, fine: int, bbox, filename: str) -> dict:
        """The stored example of one image (`labels` from every hierarchy's ancestors)."""
        return {
            "image": image,
            "label": fine,
            "labels": {name: h.ancestors[fine].astype(np.int32)
                       for name, h in self._hierarchies_cached().items()},
            "bbox": bbox,
            "filename": filename,
        }

    def image_examples(self, path: Path, prefix: str, wanted: Mapping[str, tuple],
                       split: str, listing: str):
        """(name, example) of the images under `prefix` in the tar at `path` that
        `wanted` lists: {file under prefix: (name, fine id, box)}, name the stored
        `filename` (and the tfds key), box the pixel corners (x0, y0, x1, y1) or None
        for the whole image. Other members are skipped; an ArchiveError when some listed
        image is missing (`listing`: the table that lists them).
        """
        seen = set()
        for member, image in iter_tar(path, lambda m: m.startswith(prefix)):
            file = member[len(prefix):]
            if file not in wanted or file in seen:
                continue  # another split's image, or e.g. a macOS resource fork
            name, fine, box = wanted[file]
            if box is None:
                bbox = FULL_IMAGE
            else:
                width, height = image_size(image, f"{path}:{member}")
                bbox = bbox_from_corners(*box, width, height)
            seen.add(file)
            yield name, self.example(image, fine, bbox, name)
        if len(seen) != len(wanted):
            fine_names = next(iter(self._hierarchies_cached().values())).class_names[0]
            missing = sorted(set(wanted) - seen)
            listed = ", ".join(f"{prefix}{f} (class {fine_names[wanted[f][1]]})"
                               for f in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ArchiveError(
                f"{path}: {listing} lists {len(wanted)} {split} images but the archive "
                f"holds {len(seen)} of them; missing: {listed}{more}. The archive is "
                "incomplete: download it again.")

    def _hierarchies_cached(self) -> dict[str, Hierarchy]:
        if not hasattr(self, "_hierarchy_cache"):
            self._hierarchy_cache = self.hierarchies()
        return self._hierarchy_cache


def example_features(fine_names, hierarchies: Mapping[str, Hierarchy], image_format: str):
    """The FeaturesDict of the module docstring."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format=image_format),
        "label": tfds.features.ClassLabel(names=list(fine_names)),
        "labels": {name: tfds.features.Tensor(shape=(h.num_levels,), dtype=np.int32)
                   for name, h in hierarchies.items()},
        "bbox": tfds.features.BBoxFeature(),
        "filename": tfds.features.Text(),
    })


def hierarchy_metadata(hierarchies: Mapping[str, Hierarchy]) -> dict:
    """JSON-able {name: {level_names, class_names, ancestors, source}}."""
    return {
        name: {
            "level_names": list(h.level_names),
            "class_names": [list(names) for names in h.class_names],
            "ancestors": np.asarray(h.ancestors).tolist(),
            "source": h.source,
        }
        for name, h in hierarchies.items()
    }


def hierarchies_from_metadata(metadata: Mapping, where: str) -> dict[str, Hierarchy]:
    """Inverse of `hierarchy_metadata`: {name: Hierarchy} of a prepared dataset."""
    if not metadata or "hierarchies" not in metadata:
        raise ValueError(
            f"{where} has no hierarchy metadata; it was not prepared by hierjax. Prepare "
            "it again with `python -m hierjax.prepare`."
        )
    return {
        name: Hierarchy(tuple(m["level_names"]), tuple(map(tuple, m["class_names"])),
                        np.asarray(m["ancestors"], np.int64), f"{where} ({m['source']})")
        for name, m in metadata["hierarchies"].items()
    }


def archive_path(manual_dir: Path, name: str, source: str) -> Path:
    """manual_dir / name, or an ArchiveError saying where to get it."""
    path = Path(manual_dir) / name
    if not path.is_file():
        raise ArchiveError(
            f"expected the official archive {path} (from {source}); it is not there. "
            f"Put {name} in {manual_dir} (--manual_dir) and run the command again."
        )
    return path


def iter_tar(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of the regular files of a tar(.gz) for which wanted(name).

    Streams the archive once, in its own order. A truncated, corrupt or non-tar file
    is an ArchiveError naming it.
    """
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile() and wanted(member.name):
                    yield member.name, archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ArchiveError(
            f"{path} is truncated or is not the expected tar archive ({type(e).__name__}: "
            f"{e}); download it again from the official source."
        ) from None


def read_tar_files(path: Path, names: Mapping[str, str] | list[str]) -> dict[str, bytes]:
    """{name: bytes} of the members whose path ends with each of `names` (e.g.
    "CUB_200_2011/images.txt"); an ArchiveError when one is missing.
    """
    names = list(names)
    found: dict[str, bytes] = {}
    for member, data in iter_tar(path, lambda m: any(m.endswith(n) for n in names)):
        for name in names:
            if member.endswith(name) and name not in found:
                found[name] = data
        if len(found) == len(names):
            break  # the tables usually come before gigabytes of images: stop reading
    missing = [n for n in names if n not in found]
    if missing:
        raise ArchiveError(
            f"{path} is not the expected archive: it has no {', '.join(missing)}. "
            "Check that it is the official file (and not a re-packed or partial copy)."
        )
    return found


def load_mat(data: bytes, where: str) -> dict:
    """The variables of a MATLAB .mat file (squeezed: a 1 x N cell or struct array is
    1-D); an ArchiveError when it is not a readable .mat file.
    """
    import scipy.io  # only preparation reads .mat files (a jax dependency)

    try:
        return scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)
    except Exception as e:  # scipy raises many types for a bad file
        raise ArchiveError(
            f"{where} is not a readable .mat file ({type(e).__name__}: {e}); download "
            "it again from the official source."
        ) from None


def text_rows(data: bytes) -> list[list[str]]:
    """Whitespace-split non-empty lines of a text file."""
    return [line.split() for line in data.decode("utf-8").splitlines() if line.strip()]


def image_size(image: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image  # only preparation decodes headers

    try:
        with Image.open(io.BytesIO(image)) as img:
            return img.size
    except Exception as e:  # Pillow raises many types for bad files
        raise ArchiveError(f"{where} is not a readable image ({e})") from None


def bbox_from_corners(x0, y0, x1, y1, width: int, height: int) -> tfds.features.BBox:
    """Pixel corners (x0, y0, x1, y1) -> normalised tfds BBox, clipped to the image."""
    def clip(v, size):
        return float(min(max(v / size, 0.0), 1.0))

    ymin, ymax = sorted((clip(y0, height), clip(y1, height)))
    xmin, xmax = sorted((clip(x0, width), clip(x1, width)))
    return tfds.features.BBox(ymin=ymin, xmin=xmin, ymax=ymax, xmax=xmax)


FULL_IMAGE = tfds.features.BBox(ymin=0.0, xmin=0.0, ymax=1.0, xmax=1.0)


def check_class_names(expected, found, where: str) -> None:
    """The archive's class names must be the shipped hierarchy's fine names, in order."""
    expected, found = list(expected), list(found)
    if expected != found:
        diff = [(i, e, f) for i, (e, f) in enumerate(zip(expected, found)) if e != f][:3]
        raise ArchiveError(
            f"{where}: the archive's {len(found)} classes do not match the {len(expected)} "
            f"of the shipped hierarchy (first differences, as (id, expected, found): "
            f"{diff}); is this the official file?"
        )
