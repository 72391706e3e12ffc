"""The workdir of a run: one run at a time, and the same config when it resumes.

`lock(workdir)` holds an exclusive lock on `workdir/.lock` for the run's lifetime (an
OS file lock, released by the kernel when the process ends, kill -9 included, so a
crashed run never blocks the next); a second run on the same workdir fails at once,
naming the holder. `check_config(workdir, settings, ...)` compares the settings with
the `config.json` of the run that wrote the checkpoints: keys marked `resumable` in
`hierjax.settings` (logging, evaluation and checkpoint cadence, profiling, worker
counts, the number of steps) may differ and are logged; any other difference is an
error listing each key with its old and new value, unless the caller allows it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket

from absl import logging

from hierjax import settings as settings_lib
from hierjax.errors import WorkdirError

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def lock(workdir):
    """Holds the workdir's lock while the block runs; WorkdirError if another run does."""
    path = pathlib.Path(workdir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirError(
                f"{workdir} is in use by another hierjax run ({_holder(path)}); wait for "
                "it to finish or stop it, or give this run another --workdir") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: pathlib.Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


def check_config(workdir, settings: settings_lib.Settings, *, resuming: bool,
                 allow_changes: bool = False, start_step: int = 0, write: bool = True) -> None:
    """Compares `settings` with the saved config.json of a run being resumed, then writes
    the new config.json and logs and records the changes (if `write`: one process of a
    multi-process run). Raises WorkdirError listing the differing keys when a key that
    changes the training differs and `allow_changes` is False."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    new = settings_lib.to_dict(settings)
    if resuming and path.exists():
        old = json.loads(path.read_text())
        # A key added to hierjax after that run was written had its default then.
        old = {**{k: v for k, v in settings_lib.defaults().items() if k not in old}, **old}
        # distributed.* say how the processes were started (a new port each time), not
        # what they train: not a change.
        changes = {k: v for k, v in settings_lib.diff(old, new).items()
                   if not k.startswith("distributed.")}
        blocking = {k: v for k, v in changes.items() if not settings_lib.resumable(k)}
        lines = [f"  {k}: {old_value!r} -> {new_value!r}"
                 for k, (old_value, new_value) in changes.items()]
        if blocking and not allow_changes:
            listed = "\n".join(f"  {k}: {o!r} -> {n!r}" for k, (o, n) in blocking.items())
            raise WorkdirError(
                f"{workdir} holds a run trained with another config; resuming it would mix "
                f"two configs. Keys that differ from its {CONFIG_FILE}:\n{listed}\n"
                "Give this config another --workdir, or pass --allow_config_change to "
                "resume the saved state under the new values (recorded in "
                f"{CHANGES_FILE}).")
        if changes and write:
            logging.warning("Resuming at step %d with config changes:\n%s", start_step,
                            "\n".join(lines))
            with open(pathlib.Path(workdir) / CHANGES_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": start_step, "changes": changes}) + "\n")
    if write:  # atomically: the other processes of the run may be reading it
        tmp = path.with_name(CONFIG_FILE + ".tmp")
        settings_lib.write_json(settings, tmp)
        os.replace(tmp, path)
