"""Shared helpers of the benchmark scripts: timing, hardware description, BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import statistics
import time

import jax

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def time_ms(fn, *args, repeats=10, warmup=2):
    """Median wall time of fn(*args) in milliseconds, blocking on the result."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_line():
    """One line naming the accelerator (or CPU), core count, JAX version and date."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        where = f"CPU: {cpu_model()}, {os.cpu_count()} cores"
    else:
        where = f"{device.platform.upper()}: {device.device_kind} x{jax.device_count()}"
    today = datetime.date.today().isoformat()
    return f"{where}; jax {jax.__version__}; {today}"


def write_section(name, body, path=None):
    """Replaces (or appends) the section between `<!-- name -->` markers in BENCHMARKS.md."""
    path = pathlib.Path(path or REPO_ROOT / "BENCHMARKS.md")
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# hierjax benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
