"""Background prefetching of a resumable batch iterator.

`Prefetch(iterator)` reads batches ahead in a daemon thread into a small queue. Its
`get_state()` is the state after the last batch handed out (not after the ones still
queued), so a checkpoint resumes exactly where training was.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

_POLL_S = 0.1  # how often a blocked worker checks whether it should stop


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    """Iterates `iterator` (with get_state / set_state) up to `buffer_size` batches ahead."""

    def __init__(self, iterator, *, buffer_size: int = 2):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._iterator = iterator
        self._buffer_size = buffer_size
        self._state = iterator.get_state()
        self._worker: tuple[threading.Thread, threading.Event, queue.Queue] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self._iterator.steps_per_epoch

    def get_state(self) -> dict:
        """The wrapped iterator's state after the last batch this one returned."""
        return dict(self._state)

    def set_state(self, state: dict) -> None:
        """Drops the read-ahead batches and continues from `state`."""
        self.close()
        self._iterator.set_state(state)
        self._state = self._iterator.get_state()

    def close(self) -> None:
        """Stops the worker thread; iterating again restarts it."""
        if self._worker is not None:
            thread, stop, _ = self._worker
            stop.set()
            thread.join()
            self._worker = None

    def __iter__(self):
        return self

    def __next__(self) -> Any:
        if self._worker is None:
            self._start()
        item = self._worker[2].get()
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        batch, self._state = item
        return batch

    def _start(self) -> None:
        stop, buffer = threading.Event(), queue.Queue(self._buffer_size)
        thread = threading.Thread(
            target=self._fill, args=(stop, buffer), name="hierjax-prefetch", daemon=True
        )
        self._worker = (thread, stop, buffer)
        thread.start()

    def _fill(self, stop: threading.Event, buffer: queue.Queue) -> None:
        while not stop.is_set():
            try:
                item = (next(self._iterator), self._iterator.get_state())
            except BaseException as e:  # StopIteration included: re-raised by __next__
                item = _Failed(e)
            while not stop.is_set():
                try:
                    buffer.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    pass
            if isinstance(item, _Failed):
                return
