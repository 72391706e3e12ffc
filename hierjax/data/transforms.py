"""Per-record transforms of the input pipeline: a source record -> a training or
evaluation example dict(image=uint8 [S, S, 3], labels=int32 [h] (, valid=bool)).

`data.train_crop` picks the training augmentation:
- "pad_crop" (CIFAR): zero-pad each side by 4 px, random crop back to the image's own
  size, horizontal flip with probability 1/2; evaluation takes the image as it is (an
  image of another size, e.g. a photo given to `hierjax.predict`, is resized first).
- "resize_random", "random_resized" (fine-grained photos): decoding, resizing and
  cropping of encoded images by `hierjax.data.images`; evaluation resizes the shorter
  side to `eval_resize` and takes the centre crop.
Encoded images (a prepared dataset's bytes) are decoded first; in-memory arrays are used
as they are. Every random draw of record g comes from a generator seeded by
(seed, AUGMENT_STREAM, g), so an example depends on its global record number alone:
not on the worker that made it, and a resumed run repeats it exactly.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from hierjax.data import images
from hierjax.data.sampler import AUGMENT_STREAM
from hierjax.errors import DataError

PAD = 4  # pixels of zero padding of "pad_crop"


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """How records become images (from config.data)."""

    size: int
    resize: int
    train_crop: str = "resize_random"
    min_scale: float = 0.08
    use_bbox: bool = False

    @classmethod
    def from_data_settings(cls, data) -> ImageSettings:
        """From `hierjax.settings.DataSettings` (eval_resize 0 = size * 8 / 7)."""
        return cls(size=data.image_size, resize=data.eval_resize or round(data.image_size * 8 / 7),
                   train_crop=data.train_crop, min_scale=data.min_scale, use_bbox=data.use_bbox)


def pad_crop_flip(image_HxWxC: np.ndarray, rng: np.random.Generator, *, pad: int = PAD):
    """Random crop of the zero-padded image back to H x W, flipped with probability 1/2.

    Draws the offsets (uniform in 0..2 * pad, y then x), then the flip, from rng.
    """
    height, width = image_HxWxC.shape[:2]
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    # The window's overlap with the image, copied into zeros: the same crop of the padded
    # image without padding it (np.pad was half of the in-memory pipeline's time).
    top, left = int(dy) - pad, int(dx) - pad  # window origin in image coordinates
    y0, y1 = max(0, top), min(height, top + height)
    x0, x1 = max(0, left), min(width, left + width)
    out = np.zeros_like(image_HxWxC)
    if y0 < y1 and x0 < x1:  # (a pad larger than the image can miss it entirely)
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image_HxWxC[y0:y1, x0:x1]
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def _decoded(image) -> np.ndarray:
    """A record's image as uint8 [H, W, 3]: arrays as they are, bytes decoded."""
    if isinstance(image, np.ndarray):
        return image
    return np.asarray(images.decode(bytes(image)), np.uint8)


class _Transform(grain.transforms.Map):
    """Runs `_image(record)` and names the example in any error it raises."""

    def __init__(self, settings: ImageSettings, class_names=()):
        self.settings, self.class_names = settings, tuple(class_names)

    def _named(self, record, make):
        try:
            return make()
        except Exception as e:  # Pillow, OpenCV and numpy raise many types
            fine = int(np.asarray(record["labels"])[0])
            label = (f"class {self.class_names[fine]!r}" if fine < len(self.class_names)
                     else f"class {fine}")
            raise DataError(f"{record.get('name', 'an example')} ({label}) could not be "
                            f"read: {type(e).__name__}: {e}. Remove or replace the file (check "
                            "an image folder with `python -m hierjax.prepare image_folder "
                            "--check`)") from e


def _encoded(image):
    """Encoded bytes as bytes; a decoded array as it is."""
    return image if isinstance(image, np.ndarray) else bytes(image)


def _as_is(image_HxWxC: np.ndarray, size: int) -> np.ndarray:
    """The image itself when it is size x size, else resized (shorter side to `size`)
    and centre-cropped to it."""
    if image_HxWxC.shape[:2] == (size, size):
        return image_HxWxC
    return images.eval_image(np.ascontiguousarray(image_HxWxC), size=size, resize=size)


def _box(record, settings: ImageSettings):
    return record["bbox"] if settings.use_bbox else None


class TrainTransform(_Transform):
    """record (with its global record number "g") -> augmented example."""

    def __init__(self, settings: ImageSettings, seed: int, class_names=()):
        super().__init__(settings, class_names)
        self.seed = seed

    def map(self, record: dict) -> dict:
        s = self.settings
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, record["g"]])
        if s.train_crop == "pad_crop":
            image = self._named(record, lambda: _decoded(record["image"]))
            if image.shape[:2] != (s.size, s.size):
                # Else the network would silently train on the files' own size while
                # evaluation resizes to `size`.
                raise DataError(
                    f"{record.get('name', 'an example')} is {image.shape[0]} x "
                    f"{image.shape[1]} px, but config.data.train_crop = 'pad_crop' trains "
                    f"on images as they are, config.data.image_size = {s.size} square. "
                    "For photos of any size set config.data.train_crop = "
                    "'random_resized' or 'resize_random'.")
            image = pad_crop_flip(image, rng)
        else:
            image = self._named(record, lambda: images.train_image(
                bytes(record["image"]), rng, size=s.size, resize=s.resize,
                crop=s.train_crop, min_scale=s.min_scale, box=_box(record, s)))
        return {"image": image, "labels": np.asarray(record["labels"], np.int32)}


class EvalTransform(_Transform):
    """record (with "valid") -> unaugmented example.

    The one preprocessing of evaluation and prediction (`hierjax.inference`): "pad_crop"
    takes the image as it is (an image of another size than size x size, e.g. a new
    photo given to predict, is resized: shorter side to `size`, centre crop); the others
    resize the shorter side to `resize` and take the centre crop. `image` may be encoded
    bytes or a decoded uint8 [H, W, 3] array."""

    def map(self, record: dict) -> dict:
        s = self.settings
        if s.train_crop == "pad_crop":
            image = self._named(record, lambda: _as_is(_decoded(record["image"]), s.size))
        else:
            image = self._named(record, lambda: images.eval_image(
                _encoded(record["image"]), size=s.size, resize=s.resize,
                box=_box(record, s)))
        return {"image": image, "labels": np.asarray(record["labels"], np.int32),
                "valid": np.bool_(record["valid"])}
