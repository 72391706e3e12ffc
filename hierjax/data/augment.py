"""CIFAR-style training augmentation on uint8 image batches, vectorised numpy.

Zero-pad each side by `pad` pixels, crop a random H x W window, flip horizontally with
probability 1/2. Images stay uint8: normalisation happens on the device.
"""

from __future__ import annotations

import numpy as np


def augment_train(
    images_NxHxWxC: np.ndarray, rng: np.random.Generator, *, pad: int = 4, flip: bool = True
) -> np.ndarray:
    """Random zero-padded crop and horizontal flip: uint8 [N, H, W, C] -> same shape.

    Draws the crop offsets (uniform in 0..2 * pad, y then x) and then the flips from rng.
    """
    n = len(images_NxHxWxC)
    offsets_Nx2 = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips_N = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    return crop_and_flip(images_NxHxWxC, offsets_Nx2, flips_N, pad=pad)


def crop_and_flip(
    images_NxHxWxC: np.ndarray, offsets_Nx2: np.ndarray, flips_N: np.ndarray, *, pad: int
) -> np.ndarray:
    """Crops of the zero-padded images, flipped where flips_N: one gather, no loop.

    Output row r, column c of image i is padded[i, oy + r, ox + c] with (oy, ox) =
    offsets_Nx2[i] (0..2 * pad), and column W - 1 - c instead where flips_N[i].
    """
    n, height, width, _ = images_NxHxWxC.shape
    offsets_Nx2 = np.asarray(offsets_Nx2)
    if offsets_Nx2.size and (offsets_Nx2.min() < 0 or offsets_Nx2.max() > 2 * pad):
        raise ValueError(f"crop offsets must lie in 0..{2 * pad} for pad={pad}")
    padded = np.pad(images_NxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows_NxH = offsets_Nx2[:, :1] + np.arange(height)
    columns_NxW = np.where(
        np.asarray(flips_N)[:, None], np.arange(width)[::-1], np.arange(width)
    ) + offsets_Nx2[:, 1:]
    return padded[
        np.arange(n)[:, None, None], rows_NxH[:, :, None], columns_NxW[:, None, :]
    ]
