"""Decoding and per-image augmentation of encoded images (Pillow), for the grain workers.

Train (config.data.train_crop):
- "resize_random": resize the shorter side to `resize`, random `size` x `size` crop
  (the usual fine-grained recipe: 512 -> 448);
- "random_resized": Inception-style random-resized crop (area fraction in
  [min_scale, 1], aspect ratio in [3/4, 4/3]) resized to `size` x `size`;
then a horizontal flip with probability 1/2.
Eval: resize the shorter side to `resize`, centre `size` x `size` crop.
With `box` (the "with BBox" setting) the image is first cropped to the object box.

JPEGs are decoded with Pillow's draft mode at the smallest DCT scale (1/2, 1/4, 1/8)
that still leaves the image at least as large as it will be resized to, which is exact
enough for a following downscale and several times faster for large photos.
"""

from __future__ import annotations

import io
import math

import numpy as np

TRAIN_CROPS = ("resize_random", "random_resized")
_RATIO = (3 / 4, 4 / 3)


def decode(image_bytes: bytes, *, min_short_side: int = 0, box=None):
    """A PIL RGB image, optionally cropped to box (ymin, xmin, ymax, xmax in 0..1).

    min_short_side > 0 lets JPEG decoding skip detail finer than that size needs.
    """
    from PIL import Image  # the workers import it; jitted code never does

    image = Image.open(io.BytesIO(image_bytes))
    if min_short_side and box is None:
        width, height = image.size
        scale = min_short_side / min(width, height)
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image = image.convert("RGB")
    if box is not None:
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        width, height = image.size
        left, top = int(xmin * width), int(ymin * height)
        right = max(left + 1, math.ceil(xmax * width))
        bottom = max(top + 1, math.ceil(ymax * height))
        image = image.crop((left, top, right, bottom))
    return image


def scaled_size(image, short_side: int) -> tuple[int, int]:
    """(height, width) of the image resized so that its shorter side is short_side."""
    width, height = image.size
    scale = short_side / min(width, height)
    return max(short_side, round(height * scale)), max(short_side, round(width * scale))


def scaled_window(image, short_side: int, size: int, top: int, left: int) -> np.ndarray:
    """Window [top, top + size) x [left, left + size) of the image resized to shorter
    side short_side, uint8 [size, size, 3].

    Only the window is resampled (bilinear, antialiased), straight from the original
    pixels: resizing the whole image and then cropping gives the same up to rounding
    of the scale, at the cost of the crop alone (448^2 output pixels instead of e.g.
    683 x 512 for a CUB photo).
    """
    from PIL import Image

    width, height = image.size
    scale = short_side / min(width, height)
    # The rounded scaled size can overshoot the image by a fraction of a pixel.
    box = (left / scale, top / scale, min(width, (left + size) / scale),
           min(height, (top + size) / scale))
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None),
                      np.uint8)


def random_resized_crop(image, size: int, rng: np.random.Generator, min_scale: float):
    """Inception crop: area fraction ~ U[min_scale, 1], log-aspect ~ U[log 3/4, log 4/3].

    Ten tries for a window that fits; else the largest central window of aspect in
    [3/4, 4/3]. Returns uint8 [size, size, 3].
    """
    from PIL import Image

    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(_RATIO[0]), math.log(_RATIO[1])))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            break
    else:
        ratio = min(max(width / height, _RATIO[0]), _RATIO[1])
        w, h = (width, round(width / ratio)) if width / height < ratio else (
            round(height * ratio), height)
        w, h = min(w, width), min(h, height)
        left, top = (width - w) // 2, (height - h) // 2
    window = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h),
                          reducing_gap=None)
    return np.asarray(window, np.uint8)


def train_image(image_bytes: bytes, rng: np.random.Generator, *, size: int, resize: int,
                crop: str, min_scale: float, box=None) -> np.ndarray:
    """Decoded, augmented uint8 [size, size, 3] training image (module docstring)."""
    if crop == "resize_random":
        image = decode(image_bytes, min_short_side=resize, box=box)
        height, width = scaled_size(image, resize)
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        out = scaled_window(image, resize, size, top, left)
    elif crop == "random_resized":
        # No draft decoding: a small window of the image is blown up to `size`.
        out = random_resized_crop(decode(image_bytes, box=box), size, rng, min_scale)
    else:
        raise ValueError(f"config.data.train_crop = {crop!r}; choose one of {TRAIN_CROPS}")
    return out[:, ::-1] if rng.random() < 0.5 else out


def eval_image(image_bytes: bytes, *, size: int, resize: int, box=None) -> np.ndarray:
    """Decoded uint8 [size, size, 3]: shorter side to `resize`, centre crop `size`."""
    image = decode(image_bytes, min_short_side=resize, box=box)
    height, width = scaled_size(image, resize)
    return scaled_window(image, resize, size, (height - size) // 2, (width - size) // 2)
