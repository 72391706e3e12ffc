"""Training system: pmapped step vs one device, variants, resume, SIGTERM, main, profile."""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import flax.jax_utils
import jax
import numpy as np
import pytest

from hierjax import data, settings, train
from hierjax.checkpointing import Checkpointer
from hierjax.train_step import AXIS, init_state, train_step
from helpers import tiny_config, tiny_settings

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR_DIR = REPO / ".." / "shared" / "data" / "cifar100"
NUM_DEVICES = 4


def _context(config, hierarchy, axis_name):
    return train.build_context(config, hierarchy, total_steps=10, steps_per_epoch=5,
                               axis_name=axis_name)


def _batch(source, n):
    """The first n examples of a source, unaugmented, as one batch."""
    records = [source[i] for i in range(n)]
    return {"image": np.stack([r["image"] for r in records]),
            "labels": np.stack([r["labels"] for r in records])}


def test_pmapped_step_equals_single_device_step():
    config = tiny_settings(variant="OURS+CC")
    train_source, _ = data.build_sources(config.data)
    hierarchy = train_source.hierarchy
    batch = _batch(train_source, 16)
    single_ctx = _context(config, hierarchy, None)
    multi_ctx = _context(config, hierarchy, AXIS)
    state = init_state(jax.random.key(0), single_ctx, train_source.image_shape)
    rng = jax.random.key(1)

    want_state, want = jax.jit(functools.partial(train_step, ctx=single_ctx))(state, batch, rng)

    devices = jax.devices()[:NUM_DEVICES]
    sharded = jax.tree.map(lambda x: x.reshape(NUM_DEVICES, -1, *x.shape[1:]), batch)
    p_step = jax.pmap(functools.partial(train_step, ctx=multi_ctx), axis_name=AXIS,
                      in_axes=(0, 0, None), devices=devices)
    got_state, got = p_step(flax.jax_utils.replicate(state, devices), sharded, rng)
    got_state = flax.jax_utils.unreplicate(got_state)
    assert got["glm"][0] > 0 and got["coarse"][0] > 0
    # Cross-entropy terms are per-device means, so their device mean is the global mean;
    # GLM is computed on the gathered batch; BatchNorm statistics are synchronised.
    for key in ("loss", "ce", "glm", "coarse", "grad_norm", "param_norm"):
        np.testing.assert_allclose(got[key][0], want[key], rtol=2e-4, err_msg=key)
    chex.assert_trees_all_close(got_state.params, want_state.params, rtol=2e-3, atol=2e-5)
    chex.assert_trees_all_close(got_state.batch_stats, want_state.batch_stats, rtol=2e-3,
                                atol=2e-5)


@pytest.mark.skipif(not CIFAR_DIR.exists(),
                    reason=f"real CIFAR-100 not found at {CIFAR_DIR}")
@pytest.mark.parametrize("variant", settings.VARIANT_NAMES)
def test_every_variant_reduces_its_loss(variant):
    """On 32 real CIFAR-100 images when the copy is there, else on synthetic ones."""
    overrides = {"variant": variant, "optimizer.lr": 0.05, "data.max_train_examples": 64,
                 "data.max_eval_examples": 64}
    if CIFAR_DIR.exists():
        overrides.update({"data.name": "cifar100", "data.data_dir": str(CIFAR_DIR),
                          "data.image_size": 32})
    config = tiny_settings(**overrides)
    train_source, _ = data.build_sources(config.data)
    ctx = _context(config, train_source.hierarchy, None)
    state = init_state(jax.random.key(0), ctx, train_source.image_shape)
    batch = _batch(train_source, 32)
    step = jax.jit(functools.partial(train_step, ctx=ctx))
    losses = []
    for i in range(8):
        state, scalars = step(state, batch, jax.random.key(i))
        losses.append(float(scalars["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), (variant, losses)


def _final_params(workdir):
    checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints", save_interval_steps=1,
                                max_to_keep=5, keep_best=1)
    step = checkpointer.latest_step()
    template = _template(tiny_settings())
    state, data_state = checkpointer.restore(template)
    checkpointer.close()
    return step, state, data_state


def _template(config):
    train_source, _ = data.build_sources(config.data)
    ctx = _context(config, train_source.hierarchy, None)
    return init_state(jax.random.key(0), ctx, train_source.image_shape)


def test_resume_equals_uninterrupted_run(tmp_path):
    train.train_and_evaluate(tiny_config(num_steps=3), tmp_path / "split")
    assert _final_params(tmp_path / "split")[0] == 3
    resumed = train.train_and_evaluate(tiny_config(num_steps=6), tmp_path / "split")
    straight = train.train_and_evaluate(tiny_config(num_steps=6), tmp_path / "straight")
    step_a, state_a, data_a = _final_params(tmp_path / "split")
    step_b, state_b, data_b = _final_params(tmp_path / "straight")
    assert step_a == step_b == 6 and data_a == data_b
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
                 state_a, state_b)
    assert resumed == pytest.approx(straight, rel=1e-5)
    # Each step's row once: the first run's rows up to its checkpoint, then the rest.
    lines = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").open()]
    assert [l["step"] for l in lines if l["split"] == "train"] == [2, 3, 4, 6]
    assert [l["step"] for l in lines if l["split"] == "eval"] == [2, 3, 4, 6]


def test_finished_run_is_not_trained_again(tmp_path):
    first = train.train_and_evaluate(tiny_config(num_steps=2), tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    again = train.train_and_evaluate(tiny_config(num_steps=2), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert again == pytest.approx(first)


def test_evaluation_counts_every_example_once(tmp_path):
    rates = train.train_and_evaluate(tiny_config(num_steps=1, batch_size=16), tmp_path)
    assert rates["count"] == 37  # 2 full batches + 5


def test_profile_window_writes_a_trace(tmp_path):
    config = tiny_config(num_steps=4)
    config.profile.start_step = 1
    config.profile.num_steps = 2
    train.train_and_evaluate(config, tmp_path)
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def _main(workdir, *extra, **popen):
    cmd = [sys.executable, "-m", "hierjax.main", "--config=configs/default.py:runlocal",
           f"--workdir={workdir}", "--config.num_steps=6", "--config.log_every_steps=2",
           "--config.eval_every_steps=3", "--config.data.synthetic_train_size=512",
           "--config.data.synthetic_test_size=64", "--config.data.image_size=16",
           "--config.model.name=wrn", "--config.model.wrn_depth=10",
           "--config.model.wrn_width=1", *extra]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def test_main_runs_end_to_end_and_resumes(tmp_path):
    out, _ = _main(tmp_path).communicate(timeout=600)
    assert "Final evaluation at step 6, on 64 examples" in out, out
    assert json.loads((tmp_path / "config.json").read_text())["model.name"] == "wrn"
    assert (tmp_path / "metrics.jsonl").exists()
    assert list((tmp_path / "tensorboard").rglob("*tfevents*"))
    assert (tmp_path / "checkpoints" / "6").exists(), out
    out, _ = _main(tmp_path).communicate(timeout=600)
    assert "already finished" in out, out


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    proc = _main(tmp_path, "--config.num_steps=100000", "--config.log_every_steps=1",
                 "--config.checkpoint_every_steps=100000", "--config.eval_every_steps=100000")
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps and max(steps) >= 1, out


def test_non_finite_loss_stops_with_advice(tmp_path):
    config = tiny_config(num_steps=3, log_every_steps=1, **{"optimizer.lr": 1e30})
    with pytest.raises(FloatingPointError, match=r"step \d: .* is not finite.*config\.optimizer\.lr"):
        train.train_and_evaluate(config, tmp_path)
