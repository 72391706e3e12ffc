"""Checkpoints of the train state and the input position, verified on restore, plus
SIGTERM handling.

Each step directory holds three items: `state` (a pytree of arrays, e.g. a flax
TrainState, written from a host copy), `data` (a small JSON dict such as {"epoch": 3,
"batch_in_epoch": 17}), so a resumed run continues both the optimisation and the input
pipeline, and `integrity` (JSON: every array's shape, dtype and CRC-32, computed from
the host copy before it is written). Once a step is completely written, `FILES.json`
in its directory records the size and CRC-32 of every file. A state with a non-finite
value is never saved. `restore` checks, in that order, the files against FILES.json
(so damaged bytes never reach orbax, whose failed reads print pages of tracebacks), the
arrays against their checksums, and their finiteness; `restore_newest_good` sets a
checkpoint that fails aside (moved, not deleted, with one log line saying why) and
falls back to the next newest.

Several processes (jax.distributed): every process creates the Checkpointer and calls
`save` at the same steps, as orbax's CheckpointManager requires (it synchronises them at
barriers); the state is the same host copy on every process and orbax writes numpy
arrays and JSON items from process 0 only, which also deletes old steps and writes
FILES.json. The directory must be one every process sees. `restore_newest_good` is
decided by process 0 and followed by the others (its docstring).

Typical loop:

    ckpt = Checkpointer(workdir / "checkpoints", save_interval_steps=1000,
                        max_to_keep=2, keep_best=1)
    with PreemptionFlag() as preempted:
        for step in range(start, total):
            state = train_step(state, batch)
            done, stop = step + 1, preempted.is_set()
            last = stop or done == total  # always save these, interval or not
            if last or ckpt.should_save(done):
                ckpt.save(done, state, data_state, metrics=eval_metrics_or_none,
                          force=last)
            if stop:
                break
    ckpt.close()  # waits for the async writes
"""

import contextlib
import gc
import json
import logging as py_logging
import math
import os
import signal
import threading
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from hierjax.errors import CheckpointError

INTEGRITY = "integrity"
FILES = "FILES.json"
_NONE, _FAILED = -1, -2  # restore_newest_good's decisions other than a step


class Checkpointer:
    """Periodic, async checkpoints that keep the latest N and the best N steps.

    Args:
      directory: where step directories go (created if missing), e.g.
        `workdir/checkpoints`.
      save_interval_steps: `save` writes when step % save_interval_steps == 0
        (or when forced, or at a preemption sync point of JAX's preemption service,
        which hierjax's multi-process runs leave off: hierjax.distributed).
      max_to_keep: how many of the most recent checkpoints to keep (>= 1, so
        there is always something to resume from).
      keep_best: additionally keep this many checkpoints with the highest
        `best_metric`; checkpoints saved without metrics are never "best" and are
        only kept while they are among the latest `max_to_keep`.
      best_metric: key of the `metrics` dict that ranks checkpoints (higher is better).
      async_save: write in a background thread; `save` only blocks for the
        device-to-host copy, so the state may be donated right after it returns.
      read_only: open another run's checkpoints to restore from (e.g.
        config.model.init_from): nothing is created, cleaned up, saved, sealed or set
        aside there; `restore_newest_good` skips a step that fails instead of moving it.
    """

    def __init__(
        self,
        directory,
        *,
        save_interval_steps: int,
        max_to_keep: int,
        keep_best: int = 0,
        best_metric: str = "top1/0",
        async_save: bool = True,
        read_only: bool = False,
    ):
        if save_interval_steps < 1 or max_to_keep < 1 or keep_best < 0:
            raise ValueError(
                "Checkpointer needs save_interval_steps >= 1, max_to_keep >= 1 and "
                f"keep_best >= 0; got {save_interval_steps}, {max_to_keep}, {keep_best}."
            )
        # orbax reads and writes absolute paths only (a cloud URL already is one).
        self.directory = epath.Path(directory if "://" in str(directory)
                                    else os.path.abspath(directory))
        self.read_only = read_only
        self._best_metric = best_metric
        keep = [policies.LatestN(n=max_to_keep)]
        if keep_best:
            keep.append(
                policies.BestN(
                    get_metric_fn=self._score,
                    n=keep_best,
                    # Otherwise every metric-less save would be kept forever.
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.AnySavePolicy(
                [
                    policies.FixedIntervalPolicy(save_interval_steps),
                    policies.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=policies.AnyPreservationPolicy(keep),
            # Without best_fn orbax neither stores the metrics nor knows best_step().
            best_fn=self._score,
            best_mode="max",
            enable_async_checkpointing=async_save,
            # Removes half-written steps left by a job killed while saving.
            cleanup_tmp_directories=not read_only,
            **(dict(read_only=True, create=False, save_interval_steps=0) if read_only
               else {}),
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._own_reader = None  # see _reader
        # The manager removes half-written steps in a background thread that its close()
        # does not join; a run that fails early (bad data) would then print that
        # thread's traceback at exit. Wait for it here: it only lists a directory.
        await_cleanup = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    def _reader(self) -> ocp.CheckpointManager:
        """The manager `restore` reads with. With several processes, a read-only one of
        this process alone: the run's manager would wait at a barrier for every process
        after each read, but process 0 tries checkpoints alone (`restore_newest_good`)."""
        if jax.process_count() == 1:
            return self._manager
        if self._own_reader is None:
            me = jax.process_index()
            with _quiet_orbax():  # (it warns that the directory is read-only)
                self._own_reader = ocp.CheckpointManager(
                    self.directory, options=ocp.CheckpointManagerOptions(
                        read_only=True, create=False, save_interval_steps=0,
                        multiprocessing_options=ocp.options.MultiprocessingOptions(
                            primary_host=me, active_processes={me})))
        self._own_reader.reload()  # steps written since
        return self._own_reader

    def _score(self, metrics: Mapping[str, float]) -> float:
        # Checkpoints from a run that ranked by another metric count as worst.
        return metrics.get(self._best_metric, -math.inf)

    def save(
        self,
        step: int,
        state: Any,
        data_state: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves if the interval policy says so (or `force`); returns whether it did.

        `data_state` must be JSON-serialisable (python numbers, not numpy ones).
        `metrics` (scalars, e.g. the latest eval results) rank the checkpoint for
        keep_best and must then contain `best_metric`. A step that is already on
        disk is skipped, so a forced save right after a periodic one is harmless.
        A state with a NaN or infinity raises FloatingPointError and writes nothing.
        """
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only; it saves nothing")
        if step in self._manager.all_steps():
            return False
        if metrics is not None:
            if self._best_metric not in metrics:
                raise ValueError(
                    f"Checkpoint metrics for step {step} lack the ranking metric "
                    f"{self._best_metric!r} (got {sorted(metrics)}); pass it, pass "
                    "metrics=None, or set best_metric to one of those keys."
                )
            metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
        if not (force or self._manager.should_save(step)):
            return False
        self._seal_finished_steps()
        host = jax.device_get(state)  # written from here, so the checksums describe it
        bad = _non_finite(host)
        if bad:
            raise FloatingPointError(
                f"refusing to save step {step}: {len(bad)} arrays hold NaN or infinity "
                f"(first: {bad[0]})")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(host), data=ocp.args.JsonSave(dict(data_state)),
            **{INTEGRITY: ocp.args.JsonSave(checksums(host))})
        return self._manager.save(step, args=args, metrics=metrics, force=force)

    def should_save(self, step: int) -> bool:
        """Whether a non-forced `save(step, ...)` would write; lets the caller skip
        gathering the state (e.g. unreplicating it) on the other steps."""
        return step not in self._manager.all_steps() and self._manager.should_save(step)

    def latest_step(self) -> int | None:
        """The newest saved step, or None when the directory has no checkpoint."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The saved step with the highest `best_metric`, or None if none has metrics."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        """All steps currently kept, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(self, state_template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Returns (state, data_state) of `step` (default: the latest), verified.

        The state takes the structure, dtypes and shardings of `state_template`
        (real arrays or jax.ShapeDtypeStruct; numpy leaves come back as numpy). Raises
        CheckpointError with a one-line reason when the step's files are missing,
        unreadable, fail their checksums, hold non-finite values or do not fit the
        template.
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"No checkpoint found in {self.directory}. Check the workdir, or "
                    "call latest_step() first and start from scratch when it is None."
                )
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory}; "
                f"kept steps: {self.all_steps()}."
            )
        self._manager.wait_until_finished()  # the step may still be being written
        step_dir = self.directory / str(step)
        missing = [item for item in ("state", "data") if not (step_dir / item).exists()]
        if missing or not (step_dir / "state" / "_METADATA").exists():
            raise CheckpointError(f"step {step} is incomplete: no "
                                  f"{(missing and missing[0] + '/') or 'state/_METADATA'}")
        if (step_dir / FILES).exists():
            damaged = _check_files(step_dir)
            if damaged:
                raise CheckpointError(f"step {step} is damaged: {damaged}")
        # orbax accepts numpy arrays but not numpy scalars as restore targets. With
        # several processes each restores a host copy on its own (`_reader`).
        host_copy = jax.process_count() > 1
        template = jax.tree.map(
            lambda x: np.asarray(x) if isinstance(x, np.generic) or host_copy and
            isinstance(x, jax.Array) else x, state_template
        )
        verified = (step_dir / INTEGRITY).exists()
        if verified:
            mismatch = _fit(template, step_dir)
            if mismatch:
                raise CheckpointMismatch(
                    f"the checkpoint at step {step} in {self.directory} does not fit this "
                    f"run's model and optimizer: {mismatch}. Was it written with another "
                    "config.model or config.optimizer? Resume with that config, or use "
                    "another workdir")
        items = dict(state=ocp.args.StandardRestore(template), data=ocp.args.JsonRestore())
        if verified:
            items[INTEGRITY] = ocp.args.JsonRestore()
        try:
            with _quiet_orbax():
                restored = self._reader().restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax/tensorstore raise many types; one line of cause
            raise CheckpointError(f"step {step} could not be read: {_first_line(e)}") from e
        host = jax.device_get(restored.state)
        if verified:
            mismatch = _compare(checksums(host), restored[INTEGRITY])
            if mismatch:
                raise CheckpointError(f"step {step} fails its checksums: {mismatch}")
        else:
            logging.warning("Checkpoint step %d has no checksums (written by an older "
                            "hierjax): only its finiteness is checked.", step)
        bad = _non_finite(host)
        if bad:
            raise CheckpointError(f"step {step} holds NaN or infinity in {len(bad)} "
                                  f"arrays (first: {bad[0]})")
        return restored.state, restored.data

    def recorded_arrays(self) -> dict[str, dict] | None:
        """The integrity record ({tree path: {"shape", "dtype", "crc32"}}) of the newest
        step that has a readable one, or None: what the checkpoints hold, without reading
        their arrays (e.g. to build a restore template for another run's state)."""
        for step in sorted(self._manager.all_steps(), reverse=True):
            record = _read_record(self.directory / str(step))
            if record is not None:
                return record
        return None

    def restore_newest_good(self, state_template: Any) -> tuple[Any, dict, int] | None:
        """(state, data_state, step) of the newest checkpoint that restores and verifies,
        or None when there is none. Each newer one that fails is moved to
        `<directory>_set_aside/<step>` (with a REASON.txt) and named in one log line;
        if every checkpoint fails, CheckpointError lists them all.

        With several processes (all of them call this), process 0 tries the checkpoints
        and sets the bad ones aside, then tells the others which step it chose; they
        read and verify that one, and if any process fails, every process raises."""
        if jax.process_count() == 1:
            return self._newest_good_here(state_template)
        from hierjax import distributed

        chosen, result, error = _NONE, None, None
        if jax.process_index() == 0:
            try:
                result = self._newest_good_here(state_template)
                chosen = _NONE if result is None else result[2]
            except CheckpointError as e:
                chosen, error = _FAILED, e
        chosen = distributed.broadcast_from_primary(chosen)
        if jax.process_index() != 0:
            self._manager.reload()  # process 0 may have set steps aside
            if chosen == _FAILED:
                error = CheckpointError(f"process 0 found no usable checkpoint in "
                                        f"{self.directory} (its error says why)")
            elif chosen != _NONE:
                try:
                    result = (*self.restore(state_template, chosen), chosen)
                except CheckpointError as e:
                    error = CheckpointError(f"process {jax.process_index()} could not read "
                                            f"the checkpoint process 0 chose: {e}")
        failed = distributed.all_processes_ok(error is None)
        if error is not None:
            raise error
        if failed:
            raise CheckpointError(f"process(es) {failed} could not read step {chosen} of "
                                  f"{self.directory} (their errors say why); is the workdir "
                                  "on a filesystem every host sees?")
        return result

    def _newest_good_here(self, state_template: Any) -> tuple[Any, dict, int] | None:
        tried = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, data = self.restore(state_template, step)
            except CheckpointMismatch:
                raise  # the run, not the checkpoint, is wrong: set nothing aside
            except CheckpointError as e:
                if self.read_only:
                    logging.warning("Checkpoint %s: %s; trying the one before (left in "
                                    "place: opened read-only).", self.directory / str(step), e)
                    tried.append(f"{step} ({e})")
                    continue
                where = self.set_aside(step, str(e))
                logging.warning("Checkpoint %s: %s; moved to %s, trying the one before.",
                                self.directory / str(step), e, where)
                tried.append(f"{step} ({e})")
                continue
            return state, data, step
        if tried and self.read_only:
            raise CheckpointError(f"no usable checkpoint in {self.directory}; tried, newest "
                                  f"first: {'; '.join(tried)}")
        if tried:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory}; tried, newest first: "
                f"{'; '.join(tried)}. They were moved to {self.set_aside_directory}; "
                "start again in a new workdir, or move one back if you know it is good")
        return None

    @property
    def set_aside_directory(self) -> epath.Path:
        return self.directory.parent / f"{self.directory.name}_set_aside"

    def set_aside(self, step: int, reason: str) -> epath.Path:
        """Moves step's directory out of the manager's view; returns where it went."""
        target = self.set_aside_directory / str(step)
        suffix = 1
        while target.exists():
            target, suffix = self.set_aside_directory / f"{step}.{suffix}", suffix + 1
        self.set_aside_directory.mkdir(parents=True, exist_ok=True)
        (self.directory / str(step)).rename(target)
        (target / "REASON.txt").write_text(reason + "\n")
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until pending async saves (and old-step deletions) are done."""
        self._manager.wait_until_finished()
        self._seal_finished_steps()

    def _seal_finished_steps(self) -> None:
        """Writes FILES.json into every completely written step that lacks one."""
        self._manager.wait_until_finished()
        if jax.process_index() != 0 or self.read_only:
            return
        for step in self._manager.all_steps():
            step_dir = self.directory / str(step)
            if step_dir.exists() and not (step_dir / FILES).exists():
                (step_dir / FILES).write_text(json.dumps(_file_table(step_dir), indent=0))

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads."""
        self.wait()
        self._manager.close()
        if self._own_reader is not None:
            self._own_reader.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    return [(jax.tree_util.keystr(path), np.asarray(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def checksums(host_tree) -> dict[str, dict]:
    """Per array of a host pytree: {"shape", "dtype", "crc32"} by its tree path."""
    out = {}
    for name, array in _leaves(host_tree):
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)  # (0-d becomes 1-d)
        out[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                     "crc32": zlib.crc32(raw) if array.size else 0}
    return out


class CheckpointMismatch(CheckpointError):
    """A sound checkpoint whose arrays do not fit the state being restored."""


def _read_record(step_dir) -> dict[str, dict] | None:
    """A step's integrity record ({tree path: {"shape", "dtype", "crc32"}}), or None
    when it has none or it cannot be read."""
    record_dir = step_dir / INTEGRITY
    if not record_dir.exists():
        return None
    files = [f for f in record_dir.iterdir() if f.is_file() and not f.name.startswith(".")
             and f.name != "commit_success.txt"]
    try:
        return json.loads(files[0].read_text())
    except (IndexError, ValueError, OSError):
        return None


def _fit(template, step_dir) -> str:
    """'' when the template's arrays have the paths and shapes of the checkpoint's (as
    its integrity record lists them), else the first difference in words."""
    written = _read_record(step_dir)
    if written is None:
        return ""  # unreadable: left to the integrity check after reading
    leaves = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(template)}
    for name in sorted(set(leaves) | set(written)):
        if name not in written:
            return f"the run has {name}, the checkpoint does not"
        if name not in leaves:
            return f"the checkpoint has {name}, the run does not"
        here = (tuple(np.shape(leaves[name])), str(np.dtype(leaves[name].dtype)))
        there = (tuple(written[name]["shape"]), written[name]["dtype"])
        if here != there:
            return f"{name} is {there[1]} {there[0]} there, {here[1]} {here[0]} here"
    return ""


def _compare(got: Mapping, want: Mapping) -> str:
    """'' when equal, else the first difference in words."""
    for name in sorted(set(got) | set(want)):
        if name not in want or name not in got:
            return f"{name} is {'not in the checksums' if name not in want else 'missing'}"
        g, w = got[name], want[name]
        if g != w:
            field = next(k for k in ("shape", "dtype", "crc32") if g[k] != w[k])
            return f"{name} has {field} {g[field]}, written as {w[field]}"
    return ""


def _file_table(step_dir) -> dict[str, list[int]]:
    """Relative path -> [size, CRC-32] of every file under a step directory."""
    table = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            if name == FILES:
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            table[os.path.relpath(path, step_dir)] = [len(data), zlib.crc32(data)]
    return table


def _check_files(step_dir) -> str:
    """'' when every file matches FILES.json, else the first difference in words."""
    want = json.loads((step_dir / FILES).read_text())
    got = _file_table(step_dir)
    for name in sorted(want):
        if name not in got:
            return f"{name} is missing"
        (size, crc), (got_size, got_crc) = want[name], got[name]
        if got_size != size:
            return f"{name} has {got_size} bytes, written with {size}"
        if got_crc != crc:
            return f"{name} has other bytes than were written (CRC-32 mismatch)"
    return ""


def _non_finite(host_tree) -> list[str]:
    return [name for name, array in _leaves(host_tree)
            if array.dtype.kind in "fc" and not np.isfinite(array.astype(np.float32)).all()]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


@contextlib.contextmanager
def _quiet_orbax():
    """orbax and tensorstore log a traceback per failed read of a damaged checkpoint
    (hundreds of lines); the caller reports the failure in one line instead."""
    loggers = [py_logging.getLogger(name) for name in ("absl", "asyncio", "orbax")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(py_logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # failed reads' lingering tasks report themselves when collected
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class PreemptionFlag:
    """Turns SIGTERM into a flag that the training loop polls with `is_set()`.

    Schedulers send SIGTERM some time before killing a job. Instead of dying
    mid-step, the loop sees the flag, saves with `force=True`, waits for the write
    and exits. Signal handlers can only be installed from the main thread, so
    create this there. The flag is this process's only: with several processes they
    must stop after the same step, which `hierjax.distributed.StopAgreement` decides
    from every process's flag. `close()` restores the previous handler.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionFlag must be created in the main thread (Python only "
                "delivers signals there)."
            )
        self._event = threading.Event()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def _on_signal(self, signum, frame) -> None:
        del signum, frame
        self._event.set()

    def is_set(self) -> bool:
        """True once a handled signal has arrived."""
        return self._event.is_set()

    def close(self) -> None:
        """Reinstalls the handlers that were active before."""
        for sig, handler in self._previous.items():
            # None means the old handler was not set from Python; default is closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def __enter__(self) -> "PreemptionFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
