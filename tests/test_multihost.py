"""Several processes with real `jax.distributed` on CPU (gloo), started as subprocesses.

Two processes with two CPU devices each train the same tiny run as one process with four
devices; a run killed (kill -9, both processes) and started again equals an uninterrupted
one; a SIGTERM to one process stops both at the same step; a process killed with -9
makes the other stop with an error within the heartbeat timeout (or at once, when
launch/processes.sh sees it fail); launch/processes.sh and launch/slurm.sbatch (under a
simulated SLURM: an `srun` shim on PATH) run to the end.

Every wait has a timeout, so a hang fails the test instead of blocking CI. The runs
share the test session's compilation cache (conftest.py), so each program compiles once.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hierjax import data, distributed, settings, train
from hierjax.checkpointing import Checkpointer
from hierjax.errors import ConfigError
from hierjax.train_step import init_state
from helpers import tiny_settings

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 30
TIMEOUT_S = 420  # one run on 2 busy cores: compiles, then STEPS steps in seconds
HEARTBEAT_S = 5
# The tiny run of tests/helpers.py, as flags: 8 px images, WRN-10-1, batch 16, a
# constant learning rate (a resumed run follows the same schedule). 203 training and 37
# evaluation examples divide over neither 2 processes nor the batch: the training
# shards would differ by one example and the evaluation shards do (18 and 19).
FLAGS = [
    "--config=configs/default.py", "--config.data.image_size=8",
    "--config.data.synthetic_num_fine=8", "--config.data.synthetic_num_coarse=2",
    "--config.data.synthetic_train_size=203", "--config.data.synthetic_test_size=37",
    "--config.model.name=wrn", "--config.model.wrn_depth=10", "--config.model.wrn_width=1",
    "--config.batch_size=16", "--config.optimizer.lr=0.05",
    "--config.optimizer.schedule=step", "--config.optimizer.decay_epochs=()",
    "--config.optimizer.warmup_epochs=0.0", f"--config.num_steps={STEPS}",
    "--config.log_every_steps=1", "--config.eval_every_steps=10",
    "--config.checkpoint_every_steps=10", "--config.keep_checkpoints=10",
    f"--config.distributed.heartbeat_timeout_s={HEARTBEAT_S}",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def environment(devices_per_process: int) -> dict:
    """This session's environment (conftest.py's compilation cache and XLA settings)
    with `devices_per_process` CPU devices."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}


def start(workdir, *, process_id=0, num_processes=1, port=None, extra=(), devices=None):
    """One hierjax.main process (of `num_processes` joined at localhost:`port`)."""
    cmd = [sys.executable, "-m", "hierjax.main", *FLAGS, f"--workdir={workdir}", *extra]
    if num_processes > 1:
        cmd += [f"--config.distributed.coordinator=localhost:{port}",
                f"--config.distributed.num_processes={num_processes}",
                f"--config.distributed.process_id={process_id}"]
    env = environment(devices or 4 // num_processes)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def launch(workdir, *extra, n=2) -> subprocess.Popen:
    """launch/processes.sh with n processes of 2 CPU devices each."""
    return subprocess.Popen(["bash", "launch/processes.sh", str(n), FLAGS[0].split("=", 1)[1],
                             str(workdir), *FLAGS[1:], *extra],
                            cwd=REPO, env=environment(2), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc, timeout=TIMEOUT_S) -> str:
    """The process's output once it ends; kills it (and fails) if it outlives timeout."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL) if _own_group(proc) else proc.kill()
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"still running after {timeout} s:\n{out[-5000:]}")
    return out


def _own_group(proc) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def children(proc, n, timeout=60) -> list[int]:
    """The pids of the n hierjax.main processes launch/processes.sh started, by index."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
                           .split()[1])
            except (OSError, IndexError, ValueError):
                continue
            ids = [a for a in cmdline if a.startswith(b"--config.distributed.process_id=")]
            if ppid == proc.pid and ids:
                found[int(ids[0].split(b"=")[1])] = int(pid)
        if len(found) == n:
            return [found[i] for i in range(n)]
        time.sleep(0.2)
    pytest.fail(f"launch/processes.sh did not start {n} processes")


def wait_for(predicate, procs, what, timeout=TIMEOUT_S):
    deadline = time.time() + timeout
    while not predicate():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a process ended before {what}:\n{finish(p)[-5000:]}")
        if time.time() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.1)


def rows(workdir, split):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def final_state(workdir):
    """(step, state, data position) of a workdir's newest checkpoint."""
    s = settings.read_json(pathlib.Path(workdir) / "config.json")
    train_source, _ = data.build_sources(s.data)
    ctx = train.build_context(s, train_source.hierarchy, total_steps=1, steps_per_epoch=1,
                              axis_name=None)
    template = init_state(jax.random.key(0), ctx, train_source.image_shape)
    with Checkpointer(pathlib.Path(workdir) / "checkpoints", save_interval_steps=1,
                      max_to_keep=100) as checkpointer:
        step = checkpointer.latest_step()
        state, position = checkpointer.restore(template, step)
    return step, jax.device_get(state), position


def assert_close(a, b, rtol, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# --- in this process: the data each process reads, and the distributed settings ------


def test_each_process_reads_its_slice_of_the_one_process_batches():
    """203 examples do not split evenly over 2 processes; every process still runs the
    same steps per epoch, and together they read exactly the one-process batches."""
    s = tiny_settings(**{"data.synthetic_train_size": 203, "data.synthetic_test_size": 37})
    one = data.build_input(s, num_devices=4)
    two = [data.build_input(s, num_devices=2, process_index=p, num_processes=2)
           for p in range(2)]
    try:
        assert one.train.steps_per_epoch == two[0].train.steps_per_epoch == \
            two[1].train.steps_per_epoch == 203 // 16
        for _ in range(one.train.steps_per_epoch + 2):  # into the next epoch
            want = next(one.train)
            got = [next(inputs.train) for inputs in two]
            for key in want:
                np.testing.assert_array_equal(
                    np.concatenate([g[key] for g in got]), want[key], err_msg=key)
        assert two[0].train.get_state() == two[1].train.get_state() == one.train.get_state()
        # Evaluation: shards of 18 and 19 examples, as many batches on each process.
        passes = [list(inputs.eval.batches()) for inputs in two]
        assert len(passes[0]) == len(passes[1])
        valid = [sum(int(b["valid"].sum()) for b in batches) for batches in passes]
        assert valid == [18, 19]
        labels = np.concatenate([b["labels"][b["valid"]] for batches in passes
                                 for b in batches])
        want = np.concatenate([b["labels"][b["valid"]] for b in one.eval.batches()])
        np.testing.assert_array_equal(labels, want)
    finally:
        for inputs in (one, *two):
            inputs.close()


def _distributed(**keys):
    return tiny_settings(**{f"distributed.{k}": v for k, v in keys.items()}).distributed


def test_distributed_plan_from_keys_or_slurm():
    assert distributed.plan(_distributed(), {}) is None
    assert distributed.plan(_distributed(), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert distributed.plan(_distributed(), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == {}
    assert distributed.plan(_distributed(initialize=True), {}) == {}
    assert distributed.plan(_distributed(coordinator="node1:1234", num_processes=2,
                                         process_id=1), {}) == dict(
        coordinator_address="node1:1234", num_processes=2, process_id=1)


@pytest.mark.parametrize("keys, message", [
    (dict(coordinator="localhost:1234"),
     r"config.distributed.num_processes, config.distributed.process_id not set"),
    (dict(num_processes=2, process_id=0), r"config.distributed.coordinator not set"),
    (dict(coordinator="localhost", num_processes=2, process_id=0), r"is not HOST:PORT"),
    (dict(coordinator="localhost:1", num_processes=2, process_id=2),
     r"process_id = 2 is outside 0..1"),
])
def test_distributed_keys_that_do_not_fit_name_the_keys(keys, message):
    with pytest.raises(ConfigError, match=message):
        distributed.plan(_distributed(**keys), {})


def test_a_stop_vote_counts_only_once_read():
    class Flag:
        value = False

        def is_set(self):
            return self.value

    flag = Flag()
    agreement = distributed.StopAgreement(flag, num_devices=2, num_processes=2)
    np.testing.assert_array_equal(agreement.vote(), [0, 0])
    flag.value = True
    np.testing.assert_array_equal(agreement.vote(), [1, 1])
    assert not agreement.stop  # this process's flag alone decides nothing
    rows = agreement.read([(5, {"loss": 1.0, distributed.STOP: 0.0})])
    assert rows == [(5, {"loss": 1.0})] and not agreement.stop
    agreement.read([(6, {"loss": 1.0, distributed.STOP: 2.0})])
    assert agreement.stop
    alone = distributed.StopAgreement(flag, num_devices=2, num_processes=1)
    assert alone.stop  # one process: its own flag, at once


# --- real processes -----------------------------------------------------------------


# The two processes sum gradients, BatchNorm statistics and evaluation counts in another
# order than one process does (gloo across processes, then the devices), so float32 sums
# differ in the last bits; over STEPS steps of SGD with momentum that stays below 1e-4
# relative. The data, augmentation and global batch are the same, so anything else
# (a shifted batch, a missing example) shows as a difference of percents.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_process")
    out = finish(start(workdir, devices=4))
    assert f"Final evaluation at step {STEPS}" in out, out[-5000:]
    return workdir


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """An uninterrupted run of launch/processes.sh: 2 processes x 2 CPU devices."""
    workdir = tmp_path_factory.mktemp("two_processes")
    proc = launch(workdir)
    out = finish(proc)
    assert proc.returncode == 0, out[-5000:]
    return workdir, out


def test_two_processes_train_and_evaluate_as_one(one_process, two_processes):
    workdir, out = two_processes
    assert f"Final evaluation at step {STEPS}, on 37 examples" in out, out[-5000:]
    for split in ("train", "eval"):
        want, got = rows(one_process, split), rows(workdir, split)
        assert [r["step"] for r in got] == [r["step"] for r in want], split  # once each
        for w, g in zip(want, got):
            assert g.keys() == w.keys()
            for key in w:
                if key not in ("step", "split", "images_per_s"):
                    np.testing.assert_allclose(g[key], w[key], rtol=RTOL, atol=ATOL,
                                               err_msg=f"{split} {key} at step {w['step']}")
    assert all(r["count"] == 37 for r in rows(workdir, "eval"))  # each example once
    step_a, state_a, position_a = final_state(one_process)
    step_b, state_b, position_b = final_state(workdir)
    assert step_a == step_b == STEPS and position_a == position_b
    assert_close(state_b.params, state_a.params, RTOL, ATOL)
    assert_close(state_b.batch_stats, state_a.batch_stats, RTOL, ATOL)


def test_only_process_zero_writes_and_prints(two_processes):
    workdir, _ = two_processes
    zero = (workdir / "logs" / "process_0.log").read_text()
    one = (workdir / "logs" / "process_1.log").read_text()
    assert "Final evaluation" in zero and "Final evaluation" not in one
    assert f"step {STEPS}/{STEPS}" in zero and f"step {STEPS}/{STEPS}" not in one  # progress
    # Process 1 logs warnings and errors only (absl lines start with a level letter).
    assert not [l for l in one.splitlines() if l[:1] == "I" and "train.py" in l], one[-3000:]
    assert len(list((workdir / "tensorboard").rglob("*tfevents*"))) == 2  # train, eval
    assert (workdir / "config.json").exists()


def test_killed_run_resumes_as_if_uninterrupted(tmp_path, two_processes):
    """Process 1 killed with -9 after an asynchronous save: launch/processes.sh kills
    process 0 at once (not after the heartbeat timeout, set long here) and fails; the
    same command then resumes both at that step and ends where the uninterrupted run
    ended."""
    extra = ("--config.async_checkpoints=True", "--config.distributed.heartbeat_timeout_s=600")
    proc = launch(tmp_path, *extra)
    pids = children(proc, 2)
    saved = tmp_path / "checkpoints" / "10"  # (orbax renames it when complete)
    wait_for(saved.exists, [proc], "checkpoint at step 10")
    os.kill(pids[1], signal.SIGKILL)
    out = finish(proc, timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL, out[-3000:]
    assert "process 1 exited with status 137; stopping the others" in out, out[-3000:]
    assert "Terminating process" not in out  # the launcher, not the heartbeat, ended it
    killed_at = max(int(r["step"]) for r in rows(tmp_path, "train"))
    assert killed_at < STEPS, "the run ended before it was killed: nothing resumed"
    proc = launch(tmp_path, *extra)
    out = finish(proc)
    assert proc.returncode == 0, out[-5000:]
    resumed = [l for l in out.splitlines() if "Resumed from" in l]
    assert resumed and any(f"at step {s}." in resumed[0] for s in (10, 20)), out[-5000:]
    step_a, state_a, position_a = final_state(two_processes[0])
    step_b, state_b, position_b = final_state(tmp_path)
    assert step_a == step_b == STEPS and position_a == position_b
    assert_close(state_b, state_a, 1e-6, 1e-7)  # same processes, same sums: equal
    got = rows(tmp_path, "train")
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # no row twice
    want = rows(two_processes[0], "train")
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want],
                               rtol=1e-6)


def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    proc = launch(tmp_path, "--config.num_steps=100000", "--config.eval_every_steps=100000",
                  "--config.checkpoint_every_steps=100000")
    pids = children(proc, 2)
    wait_for(lambda: (tmp_path / "metrics.jsonl").exists() and rows(tmp_path, "train"),
             [proc], "training row")
    os.kill(pids[1], signal.SIGTERM)  # not the process that writes the files
    out = finish(proc, timeout=300)
    assert proc.returncode == 0, out[-5000:]
    logs = [(tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2)]
    saved = [[l.rsplit("at step ", 1)[1].split(";")[0] for l in log.splitlines()
              if "saved a checkpoint at step" in l] for log in logs]
    assert saved[0] and saved[0] == saved[1], logs[1][-3000:]
    step = int(saved[0][0])
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [step]
    assert f"training stopped by SIGTERM at step {step}" in out or "before any" in out, out


def test_a_killed_process_stops_the_others_within_the_heartbeat_timeout(tmp_path):
    """Without a launcher to stop them (processes on different hosts), JAX's
    coordination service ends the survivors once the dead process misses its
    heartbeats for config.distributed.heartbeat_timeout_s."""
    port = free_port()
    extra = ["--config.num_steps=100000", "--config.eval_every_steps=100000",
             "--config.checkpoint_every_steps=100000"]
    procs = [start(tmp_path, process_id=i, num_processes=2, port=port, extra=extra)
             for i in range(2)]
    try:
        wait_for(lambda: (tmp_path / "metrics.jsonl").exists() and rows(tmp_path, "train"),
                 procs, "training row")
        procs[1].kill()
        killed = time.time()
        out = finish(procs[0], timeout=HEARTBEAT_S + 60)
        waited = time.time() - killed
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=60)
    # Either its collective with the dead process fails at once (gloo sees the
    # connection reset or closed, depending on where in the collective it was: an
    # error, exit status 1), or the coordination service ends it (SIGABRT) when the
    # heartbeats stop.
    assert procs[0].returncode != 0, out[-3000:]
    how = ("gloo" if re.search(r"Connection (reset|closed) by peer", out) else
           "heartbeat" if "another task died" in out else None)
    assert how, out[-3000:]
    print(f"process 0 ended {waited:.1f} s after process 1 was killed ({how}; heartbeat "
          f"timeout {HEARTBEAT_S} s), exit status {procs[0].returncode}")


SRUN = """#!/usr/bin/env bash
# srun for tests: starts SLURM_NTASKS copies of the command on this machine, with the
# variables SLURM gives each task, and fails if any task fails (--kill-on-bad-exit).
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST \\
    SLURM_STEP_NUM_NODES=1 "$@" > "$SRUN_LOGS/task_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
cat "$SRUN_LOGS/task_0.log"
exit $status
"""


def test_slurm_sbatch_runs_two_tasks_to_the_end(tmp_path, two_processes):
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text(SRUN)
    (shim / "srun").chmod(0o755)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {**environment(2), "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2",
           "SLURM_JOB_NODELIST": "localhost", "JAX_COORDINATOR_PORT": str(free_port()),
           "SRUN_LOGS": str(logs),
           "PATH": f"{shim}:{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    workdir = tmp_path / "run"
    proc = subprocess.Popen(["bash", "launch/slurm.sbatch", "configs/default.py",
                             str(workdir), *FLAGS[1:]], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = finish(proc)
    assert proc.returncode == 0, out[-5000:] + (logs / "task_1.log").read_text()[-3000:]
    assert "process 0 of 2" in out and f"Final evaluation at step {STEPS}" in out
    # The same two-process run as launch/processes.sh's.
    step_a, state_a, _ = final_state(two_processes[0])
    step_b, state_b, _ = final_state(workdir)
    assert step_a == step_b == STEPS
    assert_close(state_b.params, state_a.params, 1e-6, 1e-7)
