"""A procedurally generated hierarchical image data set that needs no download.

Each image is a soft-edged shape with horizontal stripes on a grey background, plus
pixel noise:
- the coarse class sets the shape's colour: hues evenly spaced around the colour wheel,
  jittered per image by +-15% of their spacing (so coarse is easy: colour alone);
- the fine class, within its coarse class, sets the shape (horizontal bar, vertical bar,
  ring, plus, disk, diamond, X, square) and, past 8 siblings, the stripe frequency
  (so fine is harder: it takes spatial features); at 32 x 32, up to 32 fine classes per
  coarse class stay well apart (stripe periods of 11, 5, 3.6 and 2.7 pixels);
- each image jitters position, size, brightness, saturation, stripe phase and
  background.
Every shape and stripe pattern is symmetric under a horizontal flip, so the standard
flip augmentation keeps labels right. Everything is deterministic from the seed.
"""

from __future__ import annotations

import numpy as np

from hierjax.data.sources import ArraySource
from hierjax.hierarchy import Hierarchy

LEVEL_NAMES = ("fine", "coarse")
# Per-channel statistics (0..1 units), measured: they vary by < 0.02 with the class
# counts and image size.
MEAN = (0.40, 0.40, 0.40)
STD = (0.14, 0.14, 0.14)

_CHUNK = 2048  # images rendered at once: bounds the memory of the work arrays


def make_synthetic(
    num_fine: int = 20,
    num_coarse: int = 5,
    *,
    train_size: int = 10_000,
    test_size: int = 2_000,
    image_size: int = 32,
    seed: int = 0,
) -> tuple[ArraySource, ArraySource]:
    """(train, test) sources of uint8 [size, image_size, image_size, 3] images.

    Fine classes are split into num_coarse contiguous groups of (nearly) equal size;
    each split holds the fine classes in equal proportion (up to one example).
    """
    _check(num_fine, num_coarse, train_size, test_size, image_size, seed)
    hierarchy = synthetic_hierarchy(num_fine, num_coarse)
    return tuple(
        _make_split(hierarchy, size, image_size, np.random.default_rng([seed, i]), name)
        for i, (size, name) in enumerate(
            [(train_size, "synthetic/train"), (test_size, "synthetic/test")]
        )
    )


def synthetic_hierarchy(num_fine: int, num_coarse: int) -> Hierarchy:
    """Fine class j lies in coarse class j * num_coarse // num_fine."""
    coarse_of = np.arange(num_fine) * num_coarse // num_fine
    return Hierarchy.from_parents(
        [f"colour{c:02d}_variant{s:02d}" for c, s in zip(coarse_of, _siblings(coarse_of))],
        coarse_of,
        [f"colour{c:02d}" for c in range(num_coarse)],
        level_names=LEVEL_NAMES,
        source=f"synthetic({num_fine} fine, {num_coarse} coarse)",
    )


def _siblings(coarse_C: np.ndarray) -> np.ndarray:
    """Index [C] of each fine class among the fine classes of its (contiguous) group."""
    return np.arange(len(coarse_C)) - np.searchsorted(coarse_C, coarse_C)


def _check(num_fine, num_coarse, train_size, test_size, image_size, seed) -> None:
    problems = []
    if not 1 <= num_coarse <= num_fine:
        problems.append(
            f"config.data.synthetic_num_coarse={num_coarse} must lie in "
            f"1..config.data.synthetic_num_fine ({num_fine})"
        )
    for key, value in (("synthetic_train_size", train_size), ("synthetic_test_size", test_size)):
        if value < 1:
            problems.append(f"config.data.{key}={value} must be >= 1")
    if image_size < 8:
        problems.append(f"config.data.image_size={image_size} must be >= 8")
    if seed < 0:
        problems.append(f"the seed ({seed}) must be >= 0")
    if problems:
        raise ValueError("synthetic data set: " + "; ".join(problems))


def _make_split(hierarchy, size, image_size, rng, name) -> ArraySource:
    coarse_C = hierarchy.coarse_of(1)
    sibling_C = _siblings(coarse_C)
    fine_N = rng.permutation(np.arange(size) % len(coarse_C))
    images = np.empty((size, image_size, image_size, 3), np.uint8)
    for start in range(0, size, _CHUNK):
        chunk = fine_N[start : start + _CHUNK]
        images[start : start + _CHUNK] = _render(
            coarse_C[chunk], sibling_C[chunk], hierarchy.num_classes[1], image_size, rng
        )
    return ArraySource(images, fine_N, hierarchy, name)


def _render(coarse_N, sibling_N, num_coarse: int, size: int, rng) -> np.ndarray:
    """uint8 [N, size, size, 3] images of the given coarse ids and sibling indices."""
    n = len(coarse_N)
    hue_N = (coarse_N + rng.uniform(-0.15, 0.15, n)) / num_coarse
    colour_Nx3 = _hsv_to_rgb(hue_N, rng.uniform(0.55, 0.9, n), rng.uniform(0.7, 1.0, n))
    background_N = rng.uniform(0.2, 0.6, n)
    scale_N = rng.uniform(0.85, 1.15, n)
    centre_2xN = rng.uniform(-0.15, 0.15, (2, n))
    phase_N = rng.uniform(0, 2 * np.pi, n)

    # Pixel centres in [-1, 1], in the frame of each image's shape.
    grid = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    y_NxSx1 = (grid[None, :, None] - centre_2xN[0, :, None, None]) / scale_N[:, None, None]
    x_Nx1xS = (grid[None, None, :] - centre_2xN[1, :, None, None]) / scale_N[:, None, None]
    shape_N = sibling_N % _NUM_SHAPES
    distance_NxSxS = np.empty((n, size, size), np.float32)
    for s, signed_distance in enumerate(_SHAPES):
        rows = shape_N == s
        distance_NxSxS[rows] = signed_distance(x_Nx1xS[rows], y_NxSx1[rows])
    # A sigmoid edge about one pixel wide: a pixel is 2 / size units.
    mask_NxSxS = 0.5 - 0.5 * np.tanh(distance_NxSxS * (size / 4))

    frequency_N = 1.5 * (1 + sibling_N // _NUM_SHAPES)  # cycles per unit of y
    stripes_NxSx1 = 0.75 + 0.25 * np.cos(
        2 * np.pi * frequency_N[:, None, None] * y_NxSx1 + phase_N[:, None, None]
    )
    foreground = (mask_NxSxS * stripes_NxSx1)[..., None] * colour_Nx3[:, None, None, :]
    background = ((1 - mask_NxSxS) * background_N[:, None, None])[..., None]
    noise = rng.normal(0, 0.05, (n, size, size, 3))
    pixels = np.clip(foreground + background + noise, 0, 1)
    return np.round(pixels * 255).astype(np.uint8)


def _hsv_to_rgb(hue_N, saturation_N, value_N) -> np.ndarray:
    """RGB [N, 3] in 0..1 of HSV colours (hue in turns, wraps around)."""
    k_Nx3 = (np.array([5, 3, 1]) + hue_N[:, None] * 6) % 6
    ramp = np.clip(np.minimum(k_Nx3, 4 - k_Nx3), 0, 1)
    return value_N[:, None] * (1 - saturation_N[:, None] * ramp)


def _box(x, y, half_width, half_height):
    return np.maximum(np.abs(x) - half_width, np.abs(y) - half_height)


def _plus(x, y):
    return np.minimum(_box(x, y, 0.65, 0.15), _box(x, y, 0.15, 0.65))


def _rotate45(x, y):
    return (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)


# Signed distances (< 0 inside, in grid units) of the shapes, all left-right symmetric.
_SHAPES = (
    lambda x, y: _box(x, y, 0.7, 0.2),  # horizontal bar
    lambda x, y: _box(x, y, 0.2, 0.7),  # vertical bar
    lambda x, y: np.abs(np.hypot(x, y) - 0.5) - 0.15,  # ring
    _plus,
    lambda x, y: np.hypot(x, y) - 0.45,  # disk
    lambda x, y: (np.abs(x) + np.abs(y) - 0.65) / np.sqrt(2),  # diamond
    lambda x, y: _plus(*_rotate45(x, y)),  # X
    lambda x, y: _box(x, y, 0.45, 0.45),  # square
)
_NUM_SHAPES = len(_SHAPES)
