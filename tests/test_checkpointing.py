import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hierjax.checkpointing import Checkpointer, PreemptionFlag
from hierjax.errors import CheckpointError


def make_state(scale=1.0):
    return {
        "params": {
            "dense": {"kernel": jnp.full((3, 4), scale, jnp.float32), "bias": jnp.zeros(4)},
            "embed": np.arange(6, dtype=np.int64).reshape(2, 3) * int(scale),
        },
        "batch_stats": {"mean": jnp.full((4,), scale, jnp.bfloat16)},
        "opt_state": [jnp.asarray(float(scale) * 2), (jnp.ones(2, jnp.int32),)],
        "step": jnp.asarray(int(scale * 10), jnp.int32),
    }


def steps_on_disk(directory):
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert isinstance(x, jax.Array) == isinstance(y, jax.Array)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_state_and_data_position(tmp_path):
    state = make_state(3.0)
    with Checkpointer(tmp_path / "ckpt", save_interval_steps=1, max_to_keep=2) as ckpt:
        assert ckpt.save(7, state, {"epoch": 3, "batch_in_epoch": 17})
        ckpt.wait()
    # A fresh instance (as after a restart) sees the step on disk.
    with Checkpointer(tmp_path / "ckpt", save_interval_steps=1, max_to_keep=2) as ckpt:
        assert ckpt.latest_step() == 7
        restored, data = ckpt.restore(make_state(0.0))
    assert data == {"epoch": 3, "batch_in_epoch": 17}
    assert_trees_equal(restored, state)
    assert isinstance(restored["params"]["embed"], np.ndarray)


def test_restore_uses_template_shardings(tmp_path):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    state = {"w": jnp.arange(16.0), "step": jnp.asarray(5)}
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=1) as ckpt:
        ckpt.save(1, state, {})
        template = {
            "w": jax.ShapeDtypeStruct((16,), jnp.float32, sharding=sharded),
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec())),
        }
        restored, _ = ckpt.restore(template)
    assert restored["w"].sharding == sharded
    np.testing.assert_array_equal(restored["w"], np.arange(16.0))


def test_async_save_interval_and_wait(tmp_path):
    with Checkpointer(tmp_path, save_interval_steps=5, max_to_keep=10, async_save=True) as ckpt:
        assert ckpt.should_save(5) and not ckpt.should_save(6)
        saved = [s for s in range(1, 13) if ckpt.save(s, make_state(s), {"batch_in_epoch": s})]
        assert saved == [5, 10]
        assert not ckpt.should_save(10)
        assert ckpt.save(12, make_state(12), {"batch_in_epoch": 12}, force=True)
        # Forcing a step already saved (e.g. SIGTERM right after a periodic save) is a no-op.
        assert not ckpt.save(12, make_state(12), {"batch_in_epoch": 12}, force=True)
        ckpt.wait()
        assert steps_on_disk(tmp_path) == [5, 10, 12]
        restored, data = ckpt.restore(make_state(0.0))
    assert data == {"batch_in_epoch": 12}
    assert int(restored["step"]) == 120


def test_keeps_latest_n_and_best_n(tmp_path):
    top1 = {1: 0.5, 2: 0.9, 3: None, 4: 0.8, 5: 0.1, 6: None, 7: 0.2}
    with Checkpointer(
        tmp_path, save_interval_steps=1, max_to_keep=2, keep_best=2, best_metric="top1/0"
    ) as ckpt:
        for step, acc in top1.items():
            metrics = None if acc is None else {"top1/0": np.float32(acc), "loss": jnp.asarray(1.0)}
            assert ckpt.save(step, make_state(step), {"step": step}, metrics=metrics)
        ckpt.wait()
        # Latest two (6 has no metrics) plus the two best (2, 4); metric-less 3 goes.
        assert steps_on_disk(tmp_path) == [2, 4, 6, 7]
        assert ckpt.all_steps() == [2, 4, 6, 7]
        assert ckpt.best_step() == 2
        assert ckpt.latest_step() == 7
        _, data = ckpt.restore(make_state(0.0))
        assert data == {"step": 7}
        _, data = ckpt.restore(make_state(0.0), step=ckpt.best_step())
        assert data == {"step": 2}
    # Rankings survive a restart: the metrics are stored with each step.
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=2, keep_best=2) as ckpt:
        assert ckpt.best_step() == 2
        ckpt.save(8, make_state(8), {}, metrics={"top1/0": 0.85})
        ckpt.wait()
        assert steps_on_disk(tmp_path) == [2, 7, 8]


def test_metrics_without_ranking_key_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=1, keep_best=1) as ckpt:
        with pytest.raises(ValueError, match="top1/0"):
            ckpt.save(1, make_state(), {}, metrics={"top5/0": 0.3})


def test_empty_directory_has_no_step(tmp_path):
    with Checkpointer(tmp_path / "new", save_interval_steps=1, max_to_keep=1) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.best_step() is None
        with pytest.raises(FileNotFoundError, match="No checkpoint found in .*new"):
            ckpt.restore(make_state())
        ckpt.save(4, make_state(), {})
        with pytest.raises(FileNotFoundError, match=r"step 3 .* kept steps: \[4\]"):
            ckpt.restore(make_state(), step=3)


def test_emptied_files_are_a_one_line_error(tmp_path):
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=3) as ckpt:
        ckpt.save(1, make_state(), {"epoch": 0})
    # A crash mid-write on a filesystem without atomic renames: every file of step 1's
    # state exists but is empty.
    for root, _, files in os.walk(tmp_path / "1" / "state"):
        for name in files:
            open(os.path.join(root, name), "w").close()
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=3) as ckpt:
        with pytest.raises(CheckpointError, match=r"^step 1 is damaged: state/\S+ has 0 "
                                                  r"bytes, written with \d+$"):
            ckpt.restore(make_state())


def test_sigterm_sets_flag_without_killing_the_process():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionFlag() as preempted:
        assert not preempted.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        # The handler runs at the next bytecode boundary of the main thread.
        assert preempted.is_set()
    assert signal.getsignal(signal.SIGTERM) is before
