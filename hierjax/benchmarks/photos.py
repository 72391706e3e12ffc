"""Deterministic photo-like JPEGs for the input-pipeline benchmarks (numpy + Pillow only).

    python -m hierjax.benchmarks.photos /tmp/photos --count=64          # CUB-like set
    python -m hierjax.benchmarks.photos /tmp/photos --sizes=1024x768,1600x1200

Smooth random images decode unrealistically fast (few non-zero DCT coefficients) and
compress to a fraction of a real photo's size. These images have what makes real photos
cost what they cost: a 1/f ("pink") spectrum over all scales, colour that is correlated
across channels, a few hard-edged objects (striped ellipses and dark bars over the
textured background) and per-pixel sensor noise. At quality 90 a 500 x 375 one is about
100-110 KB (CUB's photos of that size: about 116 KB), a 500 x 333 one about 95 KB, a
1024 x 768 one about 0.3 MB and a 1600 x 1200 one about 0.6 MB (NABirds / Cars sizes).
Image i of a given size is a pure function of (seed, i, size), so the benchmarks can be
rerun on the same bytes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

# CUB's typical photo (500 x 375 / 500 x 333 / portrait 375 x 500), and the larger photos
# of NABirds and Stanford Cars.
CUB_SIZES = ((500, 375), (500, 333), (375, 500))
LARGE_SIZES = ((1024, 768), (1600, 1200))


def photo_array(width: int, height: int, seed: int) -> np.ndarray:
    """uint8 [height, width, 3] photo-like image, a pure function of its arguments."""
    rng = np.random.default_rng([seed, width, height])
    # Pink noise: white noise shaped by 1 / f in the Fourier domain, three channels mixed
    # by a random colour matrix so that the colours are correlated like a real scene's.
    # Made at most 640 px wide and upsampled (bicubic) beyond that: a larger photo has
    # more pixels per detail (optics), not more detail per pixel.
    shrink = min(1.0, 640 / max(width, height))
    w, h = max(8, round(width * shrink)), max(8, round(height * shrink))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    spectrum = rng.standard_normal((3, h, fx.shape[1])) + 1j * rng.standard_normal(
        (3, h, fx.shape[1]))
    field = np.fft.irfft2(spectrum / radius, s=(h, w), axes=(1, 2)).astype(np.float32)
    if (w, h) != (width, height):
        from PIL import Image

        field = np.stack([np.asarray(Image.fromarray(c).resize((width, height),
                                                                 Image.BICUBIC))
                          for c in field])
    field /= field.std(axis=(1, 2), keepdims=True)
    mix = rng.uniform(0.2, 1.0, (3, 3)) + np.eye(3)
    image = np.tensordot(mix / mix.sum(axis=1, keepdims=True), field, axes=1)
    image = 128 + 54 * image.transpose(1, 2, 0).astype(np.float64)
    # Structure: a vertical light gradient, then hard-edged objects with their own texture.
    image += np.linspace(25, -25, height)[:, None, None]
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        colour = rng.uniform(30, 225, 3)
        slope_x, slope_y = rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9)
        # Only the ellipse's bounding box is computed (the same values, a fraction of
        # the work: these images are made by the thousand in tests and benchmarks).
        y0, y1 = max(0, int(cy - ry)), min(height, int(cy + ry) + 2)
        x0, x1 = max(0, int(cx - rx)), min(width, int(cx + rx) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        stripes = 18 * np.sin(shrink * (xx * slope_x + yy * slope_y))
        box = image[y0:y1, x0:x1]
        box[inside] = 0.55 * box[inside] + 0.45 * colour + stripes[inside][:, None]
    for _ in range(int(rng.integers(1, 4))):
        x0 = int(rng.integers(0, width))
        image[:, x0:x0 + int(rng.integers(2, 12))] *= rng.uniform(0.4, 0.8)
    # Sensor noise; weaker per pixel in larger photos, which are less downsampled
    # camera images (a 1600 x 1200 one is then about 0.6 MB, a 1024 x 768 one 0.3 MB).
    image += rng.normal(0, 10 * min(1.0, 500 * 375 / (width * height)) ** 0.5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def photo_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """photo_array encoded as a baseline JPEG (4:2:0, Pillow's default)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo_array(width, height, seed)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_set(count: int, sizes=((500, 375),), seed: int = 0,
              quality: int = 90) -> list[bytes]:
    """count JPEGs cycling through sizes ((width, height), ...)."""
    return [photo_jpeg(*sizes[i % len(sizes)], seed=seed * 1_000_003 + i, quality=quality)
            for i in range(count)]


def write_photos(directory, count: int, sizes=((500, 375),), seed: int = 0,
                 quality: int = 90) -> list[Path]:
    """Writes photo_set(...) as directory/photo_00000.jpg, ...; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(photo_set(count, sizes, seed, quality)):
        path = directory / f"photo_{i:05d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """"500x375,1024x768" -> ((500, 375), (1024, 768))."""
    sizes = tuple(tuple(int(v) for v in item.split("x")) for item in text.split(",") if item)
    if not sizes or any(len(size) != 2 for size in sizes):
        raise ValueError(f"sizes {text!r}: expected WxH,WxH,... e.g. 500x375,1024x768")
    return sizes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--sizes", default="500x375", help="WxH,WxH,... cycled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args(argv)
    paths = write_photos(args.directory, args.count, parse_sizes(args.sizes), args.seed,
                         args.quality)
    sizes = [p.stat().st_size for p in paths]
    print(f"{len(paths)} JPEGs in {args.directory}, mean {np.mean(sizes) / 1e3:.1f} KB "
          f"(min {min(sizes) / 1e3:.1f}, max {max(sizes) / 1e3:.1f})")


if __name__ == "__main__":
    main()
