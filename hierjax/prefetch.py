"""Device placement for the pmapped steps: training batches copied to the devices
ahead of the step that reads them, and the replicated train state.

`DevicePrefetch(train_input, size=2)` keeps `size` batches on the devices (double
buffering): the host-to-device copy of batch n + 1 is issued before step n has to wait
for anything, so it overlaps step n. `get_state()` is the input's position after the
last batch handed out, not after the ones still queued, so a checkpoint resumes exactly
where training was.
"""

from __future__ import annotations

import collections

import jax
import numpy as np

from hierjax.train_step import AXIS


def pmap_sharding(devices=None) -> jax.NamedSharding:
    """Entry i of the leading axis on device i, the layout `jax.pmap` reads, on a mesh
    whose axis is the steps' axis name: the layout pmap's outputs have, so a state fed
    back into the step keeps the compiled executable (another axis name recompiles it
    once, e.g. 10 s for a small WRN on a CPU)."""
    return jax.NamedSharding(jax.sharding.Mesh(np.array(devices or jax.local_devices()),
                                               (AXIS,)), jax.P(AXIS))


def replicate(tree, devices=None):
    """One copy of every leaf of `tree` per device, laid out as pmap's outputs are."""
    devices = devices or jax.local_devices()
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (len(devices),
                                                                     *np.shape(x))), tree)
    return jax.device_put(stacked, pmap_sharding(devices))


class DevicePrefetch:
    """Batches of `train_input` (a `hierjax.data.TrainInput`) as arrays on `devices`,
    each leading axis entry on its own device, as `jax.pmap` reads them."""

    def __init__(self, train_input, *, devices=None, size: int = 2):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._input, self._size = train_input, size
        self._sharding = pmap_sharding(devices)
        self._queue = collections.deque()  # (batch on devices, input state after it)
        self._state = train_input.get_state()

    @property
    def steps_per_epoch(self) -> int:
        return self._input.steps_per_epoch

    def get_state(self) -> dict:
        """The input's state after the last batch this returned."""
        return dict(self._state)

    def __iter__(self):
        return self

    def __next__(self):
        while len(self._queue) < self._size:
            batch = next(self._input)
            on_devices = jax.device_put(batch, self._sharding)
            self._queue.append((on_devices, self._input.get_state()))
        batch, self._state = self._queue.popleft()
        return batch
