"""Several processes, one training run: JAX's multi-process runtime and the few
agreements between processes that the training loop needs.

`initialize(settings.distributed)` starts `jax.distributed` when the settings or SLURM
ask for it (before JAX touches a device): explicitly with
`--config.distributed.coordinator=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I` (launch/processes.sh starts N such processes on one
machine), or from the SLURM environment when it holds more than one task. Each process
then feeds its local devices and `jax.pmap` spans the devices of every process.

What the processes must agree on, and how:
- *When to stop after a SIGTERM*: a signal reaches one process, or all at different
  times. `with_stop_vote` makes the pmapped train step sum every device's vote (its
  process's SIGTERM flag when the step was dispatched) with the step's other scalars, so
  every process reads the same sum with the step's loss, one step late, and all stop
  after the same step (`StopAgreement`); no extra host synchronisation.
- *Which checkpoint to resume*: process 0 decides (setting damaged ones aside) and
  `broadcast_from_primary` tells the others; `all_processes_ok` lets every process see
  whether any failed, so they stop together.
- *A process that dies*: JAX's coordination service notices a process that sends no
  heartbeat for `config.distributed.heartbeat_timeout_s` seconds and terminates every
  other process with "Terminating process because the JAX distributed service detected
  fatal errors" (exit status 134), so no process waits forever in a collective. A
  process that fails with an error leaves with `exit_now`, without JAX's shutdown
  barrier (which would wait for processes still blocked in a collective with it).

On CPU (tests, or a cluster without accelerators) the processes exchange data through
gloo (`jax_cpu_collectives_implementation`). JAX's own preemption service is switched
off: it installs a SIGTERM handler of its own and needs a call at every step, and the
vote above already does its job.
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import sys
from collections.abc import Callable, Mapping

import jax
import numpy as np
from absl import logging

from hierjax.errors import ConfigError, DistributedError, UserError

STOP = "stop_votes"  # the scalar `with_stop_vote` adds


def plan(s, environ: Mapping[str, str] = os.environ) -> dict | None:
    """The `jax.distributed.initialize` arguments for `s` (DistributedSettings), {} to
    let JAX read them from the cluster (SLURM), or None for a single process."""
    given = {"coordinator": bool(s.coordinator), "num_processes": s.num_processes > 0,
             "process_id": s.process_id >= 0}
    if any(given.values()):
        missing = [f"config.distributed.{k}" for k, v in given.items() if not v]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} not set: several processes without a cluster need "
                "config.distributed.coordinator (HOST:PORT of process 0), "
                "config.distributed.num_processes and config.distributed.process_id "
                "together (launch/processes.sh sets all three)")
        host, _, port = s.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"config.distributed.coordinator = {s.coordinator!r} is not "
                              "HOST:PORT, e.g. localhost:12355 or node001:12355")
        if s.process_id >= s.num_processes:
            raise ConfigError(
                f"config.distributed.process_id = {s.process_id} is outside 0.."
                f"{s.num_processes - 1} (config.distributed.num_processes = "
                f"{s.num_processes})")
        return dict(coordinator_address=s.coordinator, num_processes=s.num_processes,
                    process_id=s.process_id)
    slurm_tasks = int(environ.get("SLURM_NTASKS", "1") or 1)
    if s.initialize or ("SLURM_JOB_ID" in environ and slurm_tasks > 1):
        return {}
    return None


def initialize(s, environ: Mapping[str, str] = os.environ) -> int:
    """Joins the job's other processes when `s` (DistributedSettings) or SLURM say there
    are any; must run before JAX touches a device. Quietens the logs of every process
    but process 0 to warnings and errors. Returns the number of processes."""
    args = plan(s, environ)
    if args is None:
        return 1
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", False)
    where = args.get("coordinator_address", "the SLURM job's first node")
    try:
        jax.distributed.initialize(**args, heartbeat_timeout_seconds=s.heartbeat_timeout_s)
    except (RuntimeError, ValueError) as e:  # jaxlib raises XlaRuntimeError (RuntimeError)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise DistributedError(
            f"could not join the other processes through the coordinator at {where}: "
            f"{first}. Check that process 0 runs, that config.distributed.coordinator "
            "is an address every process reaches, and that every process got the same "
            "config.distributed.num_processes") from e
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
        py_logging.getLogger().setLevel(py_logging.WARNING)
    return jax.process_count()


def is_primary() -> bool:
    """Whether this is the process that writes the run's files and prints its output."""
    return jax.process_index() == 0


def with_stop_vote(step: Callable, axis_name: str) -> Callable:
    """`step(state, batch, rng) -> (state, scalars)`, a per-device train step, as
    `(state, batch, rng, vote) -> (state, scalars)` whose scalars also hold STOP: the sum
    of `vote` (int32, one per device) over every device of every process."""

    def voted(state, batch, rng, vote):
        state, scalars = step(state, batch, rng)
        return state, {**scalars, STOP: jax.lax.psum(vote, axis_name)}

    return voted


class StopAgreement:
    """When to stop after a SIGTERM, the same step on every process.

    `vote()` is this process's flag as one int32 per local device, passed to the step
    that `with_stop_vote` made; `read(rows)` takes the STOP value out of fetched step
    scalars ((step, values) rows); `stop` is then whether any process voted in a step
    read so far. A single process needs no vote: `stop` is its own flag, read at once.
    """

    def __init__(self, flag, *, num_devices: int, num_processes: int):
        self._flag, self._num_devices = flag, num_devices
        self._single = num_processes == 1
        self._voted = False

    def vote(self) -> np.ndarray:
        return np.full((self._num_devices,), int(self._flag.is_set()), np.int32)

    def read(self, rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        for _, values in rows:
            self._voted |= values.pop(STOP, 0.0) > 0
        return rows

    @property
    def stop(self) -> bool:
        return self._flag.is_set() if self._single else self._voted


def broadcast_from_primary(value: int) -> int:
    """Process 0's `value` (an int32) on every process; a collective: every process
    calls it at the same point."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def all_processes_ok(ok: bool) -> list[int]:
    """The indices of the processes whose `ok` is False (a collective)."""
    if jax.process_count() == 1:
        return [] if ok else [0]
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.int32(bool(ok))))
    return [int(i) for i in np.flatnonzero(gathered.reshape(-1) == 0)]


@contextlib.contextmanager
def on_primary(context: Callable):
    """Enters `context()` (a context manager, e.g. the workdir lock) on process 0 only.
    If that raises a UserError, every other process raises a DistributedError naming
    process 0, instead of waiting for it in the next collective."""
    if not is_primary():
        if all_processes_ok(True):
            raise DistributedError("process 0 stopped before training (its error says why)")
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(context())
        except UserError:
            all_processes_ok(False)
            raise
        all_processes_ok(True)
        yield


def check_shared_workdir(workdir) -> None:
    """WorkdirError on every process unless every process sees the files process 0
    writes into `workdir` (checkpoints are written once, by process 0 or by all
    processes together, and read by all)."""
    if jax.process_count() == 1:
        return
    from hierjax.errors import WorkdirError

    token = broadcast_from_primary(int.from_bytes(os.urandom(3), "little") if is_primary()
                                   else 0)
    marker = os.path.join(os.fspath(workdir), f".shared-check-{token}")
    if is_primary():
        with open(marker, "w") as f:
            f.write(str(token))
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f"hierjax shared workdir {token}")
    try:
        with open(marker) as f:
            seen = f.read() == str(token)
    except OSError:
        seen = False
    blind = all_processes_ok(seen)
    if is_primary():
        os.remove(marker)
    if blind:
        raise WorkdirError(
            f"--workdir={workdir} is not the same folder on every process: process(es) "
            f"{blind} do not see a file process 0 wrote there. Give every process a "
            "workdir on a filesystem that all hosts mount (NFS, Lustre, ...)")


def exit_now(status: int) -> None:
    """Ends this process with `status`. With several processes, skips JAX's shutdown
    barrier, which would keep a failed process waiting for others still blocked in a
    collective with it (up to 5 minutes); the coordination service then stops those
    within the heartbeat timeout."""
    if not jax.distributed.is_initialized():
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    py_logging.shutdown()
    os._exit(status)
