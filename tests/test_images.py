"""hierjax.data.images: geometry, seeding, flip, box, PNG, Inception-crop bounds, fidelity
against a full-resolution Pillow reference, and the peer benchmark's quick mode."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from hierjax.benchmarks import photos
from hierjax.data import images

try:
    import cv2  # noqa: F401
    HAVE_CV2 = True
except ImportError:
    HAVE_CV2 = False
# Both implementations where OpenCV is installed, else the Pillow one alone.
PATHS = [pytest.param(True, id="opencv", marks=pytest.mark.skipif(
    not HAVE_CV2, reason="opencv-python-headless is not installed")),
    pytest.param(False, id="pillow")]


@pytest.fixture(params=PATHS)
def path(request):
    images.use_opencv(request.param)
    yield request.param
    images.use_opencv(True)


def encoded(array, fmt="JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def train(data, seed, size, resize, crop="resize_random", box=None, min_scale=0.08):
    return images.train_image(data, np.random.default_rng(seed), size=size, resize=resize,
                              crop=crop, min_scale=min_scale, box=box)


@pytest.fixture(scope="module")
def photo():
    return photos.photo_jpeg(500, 375, seed=1)


def test_photos_are_photo_sized_and_deterministic():
    first = photos.photo_jpeg(500, 375, seed=3)
    assert first == photos.photo_jpeg(500, 375, seed=3) != photos.photo_jpeg(500, 375, 4)
    assert 85_000 < len(first) < 130_000  # ~100 KB at quality 90, like a CUB photo
    assert Image.open(io.BytesIO(first)).size == (500, 375)


@pytest.mark.parametrize("crop", images.TRAIN_CROPS)
def test_geometry_dtype_and_seeding(path, photo, crop):
    for size, resize in ((448, 512), (224, 256), (24, 32)):
        outs = [train(photo, seed, size, resize, crop) for seed in range(3)]
        for out in outs:
            assert out.shape == (size, size, 3) and out.dtype == np.uint8
            assert out.flags.c_contiguous
        np.testing.assert_array_equal(outs[0], train(photo, 0, size, resize, crop))
        assert not np.array_equal(outs[0], outs[1])
    out = images.eval_image(photo, size=224, resize=256)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images.eval_image(photo, size=224, resize=256))


def test_flip_mirrors_the_same_crop(path):
    # A square image resized to the crop size: every draw takes the same window, so the
    # outputs are that window and its mirror image, about half each.
    array = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    array[:, :, 1] = np.arange(64, dtype=np.uint8)[:, None] * 2
    data = encoded(array, quality=95)
    outs = [train(data, seed, 32, 32) for seed in range(16)]
    rising = [o for o in outs if o[0, -1, 0] > o[0, 0, 0]]
    falling = [o for o in outs if o[0, -1, 0] < o[0, 0, 0]]
    assert len(rising) + len(falling) == 16 and 3 <= len(rising) <= 13
    np.testing.assert_array_equal(falling[0], rising[0][:, ::-1])


def test_box_crop_keeps_the_object(path):
    array = np.zeros((120, 180, 3), np.uint8)
    array[30:90, 90:180] = (255, 0, 0)  # the object: rows 30..89, columns 90..179
    box = np.array([30 / 120, 90 / 180, 90 / 120, 1.0], np.float32)
    data = encoded(array, quality=95)
    inner = (slice(2, -2), slice(2, -2))  # JPEG rings at the box's edges
    for out in (images.eval_image(data, size=24, resize=24, box=box),
                train(data, 0, 24, 28, box=box),
                train(data, 1, 24, 28, "random_resized", box=box)):
        assert out.shape == (24, 24, 3)
        assert (out[inner][..., 0] > 235).all() and (out[inner][..., 1:] < 20).all()


def test_box_at_a_reduced_dct_scale_matches_the_reference(path, photo):
    # The box is 300 x 225 of the 500 x 375 photo; at 112 px it decodes at 1/2 scale
    # (OpenCV path), whose box edges fall between decoded pixels.
    box = (0.2, 0.2, 0.8, 0.8)
    out = images.eval_image(photo, size=112, resize=128, box=box)
    image = Image.open(io.BytesIO(photo)).convert("RGB").crop((100, 75, 400, 300))
    reference = np.asarray(image.resize((171, 128), Image.BILINEAR, reducing_gap=None))
    assert _mad(out, reference[8:120, 29:141]) < 2.5


def test_png_goes_through_pillow(photo):
    array = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    png = encoded(array, "PNG")
    results = []
    for opencv in (True, False):
        images.use_opencv(opencv)
        results.append((train(png, 5, 224, 256),
                        images.eval_image(png, size=224, resize=256)))
    images.use_opencv(True)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)  # the same (Pillow) computation either way


def test_greyscale_and_cmyk_jpegs(path):
    grey = np.tile(np.arange(80, dtype=np.uint8)[None, :] * 3, (60, 1))
    out = train(encoded(grey), 0, 32, 40)
    assert out.shape == (32, 32, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    cmyk = Image.new("CMYK", (80, 60), (0, 255, 255, 0))  # red
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG")
    out = images.eval_image(buffer.getvalue(), size=32, resize=40)
    assert out.shape == (32, 32, 3) and out[..., 0].min() > 200 and out[..., 1].max() < 60


def test_random_resized_windows_stay_in_bounds():
    for width, height in ((500, 375), (375, 500), (64, 2000), (2000, 64), (7, 5)):
        rng = np.random.default_rng(width)
        for _ in range(300):
            left, top, w, h = images._inception_window(width, height, rng, 0.08)
            assert w > 0 and h > 0
            assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
            central = (left, top) == ((width - w) // 2, (height - h) // 2)
            # Area and aspect in range up to the rounding of w and h (half a pixel).
            in_range = ((w + .5) * (h + .5) >= 0.08 * width * height
                        and (w + .5) / (h - .5) >= 3 / 4 and (w - .5) / (h + .5) <= 4 / 3)
            # A drawn window, or after ten misses the central one of clamped aspect.
            assert in_range or central
        if width / height > 3:  # too wide for any aspect in [3/4, 4/3]: the fallback
            assert (w, h) == (round(height * 4 / 3), height)


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _reference_resize_random(data, seed, size, resize):
    """Full-resolution Pillow decode, antialiased bilinear resize of the whole image to
    the shorter side, crop and flip with the draws train_image makes (torchvision's
    recipe, with hierjax's rounding of the longer side)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    height, width = images.scaled_size(image, resize)
    rng = np.random.default_rng(seed)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    out = np.asarray(image.resize((width, height), Image.BILINEAR, reducing_gap=None))
    out = out[top:top + size, left:left + size]
    return out[:, ::-1] if rng.random() < 0.5 else out


# Mean absolute difference (grey levels) from the reference, measured on these photos:
# OpenCV path 0.22 (500 x 375 -> 448: upscale), 1.2-1.5 (-> 224: antialiasing
# pre-filter), 0.7 (1024 x 768 -> 448), 1.3 (1024 x 768 -> 224: 1/2 DCT scale);
# Pillow path 1.6-2.5 (it resamples the window at the shorter side's scale, not at the
# rounded longer side's). The tolerances leave room for other OpenCV / Pillow builds.
@pytest.mark.parametrize("shape,size,resize,opencv_tolerance", [
    ((500, 375), 448, 512, 0.5), ((500, 375), 224, 256, 2.0),
    ((1024, 768), 448, 512, 1.2), ((1024, 768), 224, 256, 2.0)])
def test_fidelity_against_full_resolution_pillow(path, shape, size, resize,
                                                 opencv_tolerance):
    data = [photos.photo_jpeg(*shape, seed=s) for s in range(3)]
    errors = [_mad(train(d, s, size, resize), _reference_resize_random(d, s, size, resize))
              for s, d in enumerate(data)]
    assert max(errors) < (opencv_tolerance if path else 3.0), errors


def test_random_resized_paths_agree(photo):
    pytest.importorskip("cv2")
    for size in (448, 224, 96):
        for seed in range(3):
            fast = train(photo, seed, size, 0, "random_resized", min_scale=0.08)
            images.use_opencv(False)
            slow = train(photo, seed, size, 0, "random_resized", min_scale=0.08)
            images.use_opencv(True)
            assert _mad(fast, slow) < 2.5


def test_prefilter_kernel_variance():
    for ratio in (1.0, 1.2, 1.5, 2.0, 3.7):
        kernel = images._kernel(ratio)
        if ratio == 1.0:
            assert kernel is None
            continue
        x = np.arange(len(kernel)) - len(kernel) // 2
        assert math.isclose(kernel.sum(), 1, abs_tol=1e-5)
        assert math.isclose((kernel * x * x).sum(), (ratio ** 2 - 1) / 6, rel_tol=1e-3)


def test_decode_benchmark_quick():
    pytest.importorskip("torch", reason="the peer side is a torch DataLoader")
    from hierjax.benchmarks import decode

    rows, geometries = decode.main(["--quick"])
    assert [(row["size"], row["workers"]) for row in rows] == [(224, 1)]
    assert all(rate > 0 for rates in rows[0]["rates"].values() for rate in rates)
    (ours, dtype), (theirs, peer_dtype) = geometries[224]
    assert ours == (8, 224, 224, 3) and theirs == (8, 3, 224, 224)
    assert dtype == peer_dtype == "uint8"
