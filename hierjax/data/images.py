"""Decoding and per-image augmentation of encoded images (Pillow), for the grain workers.

Train (config.data.train_crop):
- "resize_random": resize the shorter side to `resize`, random `size` x `size` crop
  (the usual fine-grained recipe: 512 -> 448);
- "random_resized": Inception-style random-resized crop (area fraction in
  [min_scale, 1], aspect ratio in [3/4, 4/3]) resized to `size` x `size`;
then a horizontal flip with probability 1/2.
Eval: resize the shorter side to `resize`, centre `size` x `size` crop.
With `box` (the "with BBox" setting) the image is first cropped to the object box.

Two implementations of the same geometry and the same random draws:

- JPEGs (RGB or greyscale), where OpenCV is installed: OpenCV decodes (its bundled
  libjpeg-turbo, bit-identical to Pillow's decode), at the smallest DCT scale (1/2, 1/4,
  1/8) that still leaves the image at least as large as it will be resized to; then an
  OpenCV bilinear resize. Bilinear alone does not antialias a downscale, so a downscale
  by r > 1 (source pixels per output pixel) first low-passes with a small separable
  kernel of variance (r^2 - 1) / 6: with the bilinear interpolation's own 1/6 that
  is the variance r^2 / 6 of the triangle filter of half-width r that Pillow's
  antialiased bilinear uses. Resize + random crop resizes the whole image to the
  shorter side and then crops, exactly as the recipe says. For a 500 x 375 photo at
  448 px this takes 2.4-2.9 ms per image against 5.4-6.4 ms for the Pillow path
  (decode 1.5 vs 2.0 ms, resize 0.8-1.0 vs 3.5 ms, and no slow copy of a flipped view)
  on the 2-core benchmark VM; BENCHMARKS.md "decode-peer" has the loader-level numbers.
  OpenCV is set to one thread per process: the loader's workers are the parallelism.
- Anything else (PNG, CMYK JPEGs, no OpenCV): Pillow, with draft (DCT-scaled) JPEG
  decoding as above and an antialiased bilinear resample of the crop window alone.

Both stay within a mean absolute difference of about 0.2 (upscale) to 1.5 (downscale,
DCT-scaled) grey levels of a full-resolution Pillow decode + antialiased bilinear resize
of the whole image + crop; tests/test_images.py pins that. Every random draw takes the
given rng and the original image size only, so both paths draw the same numbers.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

TRAIN_CROPS = ("resize_random", "random_resized")
_RATIO = (3 / 4, 4 / 3)
_CV2 = None  # the cv2 module once imported (and set to one thread), False if missing


def decode(image_bytes, *, min_short_side: int = 0, box=None):
    """A PIL RGB image, optionally cropped to box (ymin, xmin, ymax, xmax in 0..1), of
    encoded bytes (or of an already decoded uint8 [H, W, 3] array).

    min_short_side > 0 lets JPEG decoding skip detail finer than that size needs.
    """
    from PIL import Image  # the workers import it; jitted code never does

    if isinstance(image_bytes, np.ndarray):
        image = Image.fromarray(image_bytes)
    else:
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
    return _scaled_hw(*image.size, short_side)


def _scaled_hw(width: int, height: int, short_side: int) -> tuple[int, int]:
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

    left, top, w, h = _inception_window(*image.size, rng, min_scale)
    window = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h),
                          reducing_gap=None)
    return np.asarray(window, np.uint8)


def _inception_window(width: int, height: int, rng: np.random.Generator,
                      min_scale: float) -> tuple[int, int, int, int]:
    """(left, top, w, h) of random_resized_crop's window in a width x height image."""
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
    return left, top, w, h


def train_image(image_bytes: bytes, rng: np.random.Generator, *, size: int, resize: int,
                crop: str, min_scale: float, box=None) -> np.ndarray:
    """Decoded, augmented uint8 [size, size, 3] training image (module docstring)."""
    if crop not in TRAIN_CROPS:
        raise ValueError(f"config.data.train_crop = {crop!r}; choose one of {TRAIN_CROPS}")
    fast = _OpenCVJpeg.open(image_bytes, box)
    if fast is not None:
        if crop == "resize_random":
            height, width = _scaled_hw(fast.width, fast.height, resize)
            top = int(rng.integers(0, height - size + 1))
            left = int(rng.integers(0, width - size + 1))
            out = fast.resized_window(height, width, top, left, size)
        else:
            left, top, w, h = _inception_window(fast.width, fast.height, rng, min_scale)
            out = fast.window(left, top, w, h, size)
        return fast.finish(out, flip=rng.random() < 0.5)
    if crop == "resize_random":
        image = decode(image_bytes, min_short_side=resize, box=box)
        height, width = scaled_size(image, resize)
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        out = scaled_window(image, resize, size, top, left)
    else:
        # No draft decoding: a small window of the image is blown up to `size`.
        out = random_resized_crop(decode(image_bytes, box=box), size, rng, min_scale)
    # A flipped view would make the batching copy slow (negative 3-byte strides).
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def eval_image(image_bytes, *, size: int, resize: int, box=None) -> np.ndarray:
    """Decoded uint8 [size, size, 3]: shorter side to `resize`, centre crop `size`, of
    encoded bytes (or of a decoded uint8 [H, W, 3] array, through the Pillow path)."""
    fast = None if isinstance(image_bytes, np.ndarray) else _OpenCVJpeg.open(image_bytes, box)
    if fast is not None:
        height, width = _scaled_hw(fast.width, fast.height, resize)
        out = fast.resized_window(height, width, (height - size) // 2, (width - size) // 2,
                                  size)
        return fast.finish(out, flip=False)
    image = decode(image_bytes, min_short_side=resize, box=box)
    height, width = scaled_size(image, resize)
    return scaled_window(image, resize, size, (height - size) // 2, (width - size) // 2)


# --- the OpenCV path for JPEGs ----------------------------------------------------------

def _cv2():
    """cv2 (single-threaded: parallelism comes from the loader's workers) or None."""
    global _CV2
    if _CV2 is None:
        try:
            import cv2
        except ImportError:
            _CV2 = False
        else:
            cv2.setNumThreads(1)
            _CV2 = cv2
    return _CV2 or None


def use_opencv(enabled: bool) -> None:
    """Turns the OpenCV path on (if cv2 imports) or off, for this process; for tests and
    benchmarks that compare the two paths."""
    global _CV2
    _CV2 = None if enabled else False


class _OpenCVJpeg:
    """A JPEG (optionally its box) read lazily: the header now, the pixels at the DCT
    scale that the requested output allows. Pixel arrays here are BGR, as OpenCV decodes
    them; `finish` turns the (small) output to RGB."""

    def __init__(self, cv2, data: bytes, full_width: int, full_height: int, box):
        self.cv2, self.data = cv2, data
        # The region (original pixels) that the image is: the whole, or the object box
        # rounded as `decode` rounds it.
        if box is None:
            self.x0, self.y0, self.x1, self.y1 = 0, 0, full_width, full_height
        else:
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            self.x0, self.y0 = int(xmin * full_width), int(ymin * full_height)
            self.x1 = max(self.x0 + 1, math.ceil(xmax * full_width))
            self.y1 = max(self.y0 + 1, math.ceil(ymax * full_height))
        self.full_width, self.full_height = full_width, full_height
        self.width, self.height = self.x1 - self.x0, self.y1 - self.y0

    @classmethod
    def open(cls, data: bytes, box):
        """An _OpenCVJpeg for an RGB or greyscale JPEG when OpenCV is there, else None."""
        cv2 = _cv2()
        if cv2 is None:
            return None
        from PIL import Image

        try:
            header = Image.open(io.BytesIO(data))  # reads the header only
        except Exception:  # noqa: BLE001 -- the Pillow path raises the real error
            return None
        if header.format != "JPEG" or header.mode not in ("RGB", "L"):
            return None
        return cls(cv2, data, *header.size, box)

    def _decode(self, min_width: float, min_height: float):
        """(BGR array, reduction k): the largest k in 1, 2, 4, 8 whose DCT-scaled decode
        keeps the region at least min_width x min_height pixels."""
        cv2 = self.cv2
        k = 8
        while k > 1 and (self.width / k < min_width or self.height / k < min_height):
            k //= 2
        flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[k]
        # Pillow does not apply the EXIF orientation either.
        array = cv2.imdecode(np.frombuffer(self.data, np.uint8),
                             flags | cv2.IMREAD_IGNORE_ORIENTATION)
        if array is None:
            raise ValueError("OpenCV could not decode this JPEG")
        expected = (-(-self.full_height // k), -(-self.full_width // k))
        if k > 1 and array.shape[:2] != expected:
            raise ValueError(f"unexpected DCT-scaled size {array.shape[:2]} for 1/{k}")
        return array, k

    def resized_window(self, height: int, width: int, top: int, left: int,
                       size: int) -> np.ndarray:
        """Window [top, top + size) x [left, left + size) of the region resized to
        height x width (bilinear, antialiased)."""
        array, k = self._decode(width, height)
        whole = (self.width, self.height) == (self.full_width, self.full_height)
        if k == 1 or whole:
            # The region is whole pixels of the decoded image: resize it, then crop.
            # (A 1/k-scaled decode has ceil(W / k) columns: it stands for the whole
            # image, as Pillow's draft does.)
            roi = array if whole else array[self.y0:self.y1, self.x0:self.x1]
            roi = _prefilter(self.cv2, roi, roi.shape[1] / width, roi.shape[0] / height)
            resized = self.cv2.resize(roi, (width, height),
                                      interpolation=self.cv2.INTER_LINEAR)
            return resized[top:top + size, left:left + size]
        # A box at a reduced scale falls between pixels: map the window affinely.
        sx, sy = self.width / width, self.height / height
        return self._affine(array, k, self.x0 + left * sx, self.y0 + top * sy, sx, sy, size)

    def window(self, left: int, top: int, w: int, h: int, size: int) -> np.ndarray:
        """The w x h window at (left, top) of the region, resized to size x size."""
        # The window must keep at least size x size pixels at the decoded scale.
        array, k = self._decode(size * self.width / w, size * self.height / h)
        if k == 1:
            x, y = self.x0 + left, self.y0 + top
            roi = _prefilter(self.cv2, array[y:y + h, x:x + w], w / size, h / size)
            return self.cv2.resize(roi, (size, size), interpolation=self.cv2.INTER_LINEAR)
        return self._affine(array, k, self.x0 + left, self.y0 + top, w / size, h / size,
                            size)

    def _affine(self, array, k, x, y, sx, sy, size):
        """size x size output whose pixel (i, j) covers original pixels
        [x + j sx, x + (j + 1) sx) x [y + i sy, y + (i + 1) sy), sampled bilinearly from
        the 1/k-scaled decode (antialiased)."""
        cv2 = self.cv2
        # The rows and columns of `array` the output reads, with room for the filters.
        pad = 4 + math.ceil(max(sx, sy) / k)
        c0, r0 = max(0, int(x / k) - pad), max(0, int(y / k) - pad)
        c1 = min(array.shape[1], math.ceil((x + size * sx) / k) + pad)
        r1 = min(array.shape[0], math.ceil((y + size * sy) / k) + pad)
        roi = _prefilter(cv2, array[r0:r1, c0:c1], sx / k, sy / k)
        # Output centre j + 1/2 -> original x + (j + 1/2) sx -> decoded (that) / k - 1/2.
        matrix = np.array([[sx / k, 0, (x + 0.5 * sx) / k - 0.5 - c0],
                           [0, sy / k, (y + 0.5 * sy) / k - 0.5 - r0]])
        return cv2.warpAffine(roi, matrix, (size, size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def finish(self, out: np.ndarray, *, flip: bool) -> np.ndarray:
        """BGR window -> contiguous RGB, mirrored left-right if flip."""
        if flip:
            out = self.cv2.flip(out, 1)
        return self.cv2.cvtColor(out, self.cv2.COLOR_BGR2RGB)


def _prefilter(cv2, array: np.ndarray, ratio_x: float, ratio_y: float) -> np.ndarray:
    """Low-passes `array` before a bilinear resample that shrinks it by ratio_x, ratio_y
    (input pixels per output pixel) so that the two together act like Pillow's
    antialiased bilinear filter (module docstring). Unchanged where both ratios <= 1."""
    kx, ky = _kernel(round(ratio_x, 3)), _kernel(round(ratio_y, 3))
    if kx is None and ky is None:
        return array
    one = np.ones(1, np.float32)
    return cv2.sepFilter2D(array, -1, one if kx is None else kx, one if ky is None else ky,
                           borderType=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=4096)
def _kernel(ratio: float):
    """Symmetric kernel of variance (ratio^2 - 1) / 6 (None when that is ~0)."""
    variance = (ratio * ratio - 1) / 6
    if variance < 1e-3:
        return None
    if variance <= 0.5:  # three taps [v/2, 1 - v, v/2] have variance v exactly
        return np.array([variance / 2, 1 - variance, variance / 2], np.float32)
    radius = math.ceil(3 * math.sqrt(variance))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    sigma2 = variance
    for _ in range(8):  # a sampled Gaussian whose discrete variance is `variance`
        kernel = np.exp(-x * x / (2 * sigma2))
        kernel /= kernel.sum()
        sigma2 *= variance / float((kernel * x * x).sum())
    return kernel.astype(np.float32)
