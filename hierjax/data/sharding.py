"""Splitting a `Source` between the processes of a multi-host run.

Process p of P reads the contiguous slice [p * N // P, (p + 1) * N // P): the slices
partition the examples exactly, so per-process evaluation totals add up to the whole
set. Slice sizes differ by at most one example.
"""

from __future__ import annotations

import numpy as np

from hierjax.data.source import Source


class SliceSource:
    """Examples start..stop - 1 of a source, as a `Source`."""

    def __init__(self, source: Source, start: int, stop: int):
        if not 0 <= start <= stop <= len(source):
            raise ValueError(f"{source.name}: slice {start}:{stop} outside 0:{len(source)}")
        self.source, self.start, self.stop = source, start, stop
        self.name = f"{source.name}[{start}:{stop}]"
        self.hierarchy = source.hierarchy
        self.image_shape = source.image_shape

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, indices) -> dict[str, np.ndarray]:
        """dict(image=uint8 [n, H, W, C], labels=int32 [n, h]) of slice positions [n]."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(
                f"{self.name}: indices must lie in 0..{len(self) - 1}, got "
                f"{indices.min()}..{indices.max()}"
            )
        return self.source.read(indices + self.start)


def shard_for_process(source: Source, process_index: int, num_processes: int) -> Source:
    """This process's share of `source` (the source itself when there is one process)."""
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process index {process_index} outside 0..{num_processes - 1}")
    if num_processes == 1:
        return source
    n = len(source)
    start, stop = process_index * n // num_processes, (process_index + 1) * n // num_processes
    return SliceSource(source, start, stop)
