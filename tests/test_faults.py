"""Fault injection: each test reproduces one fault a user can meet (damaged checkpoints,
a diverging run, a changed config, two runs on one workdir, a late SIGTERM, bad images,
labels and folders, user errors) and checks hierjax names it and never trains on it."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.experimental import checkify
from PIL import Image

import hierjax.train
from hierjax import prepare, settings, train
from hierjax import workdir as workdir_lib
from hierjax.checkpointing import Checkpointer, CheckpointMismatch
from hierjax.data.folder_source import ImageFolderSource
from hierjax.data.sources import ArraySource, check_labels
from hierjax.data.transforms import ImageSettings, TrainTransform
from hierjax.errors import (CheckpointError, ConfigError, DataError, Preempted, UserError,
                            WorkdirError)
from hierjax.hierarchy import Hierarchy
from hierjax.losses import cascaded_softmax_loss, coarse_constraint_loss, glm_loss
from helpers import tiny_config
from test_checkpointing import assert_trees_equal, make_state

REPO = pathlib.Path(__file__).resolve().parents[1]


# --- checkpoints: damaged bytes, truncated files, missing metadata ---------------------

def _largest_file(directory: pathlib.Path) -> pathlib.Path:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _overwrite_middle(path: pathlib.Path, size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - size // 2)
    data[start:start + size] = np.random.default_rng(0).bytes(min(size, len(data)))[
        :len(data[start:start + size])]
    path.write_bytes(bytes(data))


def _damage(step_dir: pathlib.Path, how: str) -> None:
    if how == "bytes":  # the reproduction: 4 KiB in the largest array file
        _overwrite_middle(_largest_file(step_dir / "state"))
    elif how == "bytes_unsealed":  # killed before FILES.json: the array CRCs must catch it
        (step_dir / "FILES.json").unlink()
        _overwrite_middle(_largest_file(step_dir / "state"))
    elif how == "truncated":
        path = _largest_file(step_dir / "state")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "no_metadata":
        (step_dir / "_CHECKPOINT_METADATA").unlink(missing_ok=True)
        for path in step_dir.rglob("_METADATA"):
            path.unlink()
    else:
        raise AssertionError(how)


def _big_state(scale):
    """make_state plus an array large enough that 4 KiB lands inside it."""
    state = make_state(scale)
    state["params"]["big"] = np.full((64, 256), scale, np.float32)
    return state


@pytest.mark.parametrize("how", ["bytes", "bytes_unsealed", "truncated", "no_metadata"])
def test_damaged_checkpoint_is_set_aside_and_the_previous_one_restored(tmp_path, how, capfd):
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, save_interval_steps=1, max_to_keep=3) as ckpt:
        ckpt.save(1, _big_state(1.0), {"epoch": 1})
        ckpt.save(2, _big_state(2.0), {"epoch": 2})
    _damage(directory / "2", how)
    capfd.readouterr()
    with Checkpointer(directory, save_interval_steps=1, max_to_keep=3) as ckpt:
        state, data_state, step = ckpt.restore_newest_good(_big_state(0.0))
    assert step == 1 and data_state == {"epoch": 1}
    assert_trees_equal(state, _big_state(1.0))
    aside = tmp_path / "checkpoints_set_aside" / "2"
    assert aside.is_dir() and (aside / "REASON.txt").read_text().strip()
    assert not (directory / "2").exists()
    out, err = capfd.readouterr()
    logged = (out + err).splitlines()
    assert len(logged) < 20, "\n".join(logged)  # no pages of orbax tracebacks


def test_no_good_checkpoint_lists_every_one_tried(tmp_path):
    directory = tmp_path / "checkpoints"
    with Checkpointer(directory, save_interval_steps=1, max_to_keep=3) as ckpt:
        ckpt.save(1, _big_state(1.0), {})
        ckpt.save(2, _big_state(2.0), {})
    _damage(directory / "1", "truncated")
    _damage(directory / "2", "bytes")
    with Checkpointer(directory, save_interval_steps=1, max_to_keep=3) as ckpt:
        with pytest.raises(CheckpointError, match=r"no usable checkpoint.*tried, newest first: "
                                                  r"2 \(.*\); 1 \(.*\)") as caught:
            ckpt.restore_newest_good(_big_state(0.0))
    assert len(str(caught.value)) < 1500


def test_non_finite_state_is_never_written(tmp_path):
    state = make_state(1.0)
    state["params"]["dense"]["kernel"] = state["params"]["dense"]["kernel"].at[1, 2].set(
        np.nan)
    with Checkpointer(tmp_path, save_interval_steps=1, max_to_keep=3) as ckpt:
        with pytest.raises(FloatingPointError, match=r"refusing to save step 1: .*\['params'\]\['dense'\]\['kernel'\]"):
            ckpt.save(1, state, {})
        assert ckpt.all_steps() == []


def test_a_resumed_run_falls_back_past_a_damaged_checkpoint(tmp_path, caplog):
    """The issue's reproduction end to end: the latest step's largest array file is
    damaged; the run resumes from the step before and equals an uninterrupted run."""
    config = tiny_config(num_steps=4)
    train.train_and_evaluate(config, tmp_path / "run")
    _damage(tmp_path / "run" / "checkpoints" / "4", "bytes")
    resumed = train.train_and_evaluate(tiny_config(num_steps=6), tmp_path / "run",
                                       allow_config_change=True)
    assert "trying the one before" in caplog.text
    assert (tmp_path / "run" / "checkpoints_set_aside" / "4" / "REASON.txt").exists()
    straight = train.train_and_evaluate(tiny_config(num_steps=6), tmp_path / "straight")
    assert resumed["step"] == straight["step"] == 6
    assert resumed["top1/0"] == pytest.approx(straight["top1/0"], abs=1e-6)


# --- a diverging run --------------------------------------------------------------------

def test_diverging_run_stops_at_the_step_and_saves_nothing_non_finite(tmp_path):
    # Checkpoints every step, metrics rows only every 100: the check must not wait for
    # a log step (the run saved NaN states at steps 22 and 24).
    config = tiny_config(num_steps=8, log_every_steps=100, eval_every_steps=100,
                         checkpoint_every_steps=1, keep_checkpoints=8,
                         **{"optimizer.lr": 1e30})
    with pytest.raises(FloatingPointError) as caught:
        train.train_and_evaluate(config, tmp_path)
    message = str(caught.value)
    assert message.startswith("step ") and "is not finite" in message
    assert "config.optimizer.lr = 1e+30" in message
    bad_step = int(message.split()[1].rstrip(":"))
    with Checkpointer(tmp_path / "checkpoints", save_interval_steps=1,
                      max_to_keep=8) as ckpt:
        saved = ckpt.all_steps()
        assert all(step < bad_step for step in saved), (saved, message)
        expected = (f"the last checkpoint, step {max(saved)}" if saved
                    else "no checkpoint was saved")
        assert expected in message
    template = None
    for step in saved:  # restore verifies finiteness of every array
        with Checkpointer(tmp_path / "checkpoints", save_interval_steps=1,
                          max_to_keep=8) as ckpt:
            template = template or _template(config)
            ckpt.restore(template, step)


def _template(config):
    from hierjax import data
    from hierjax.train_step import init_state

    s = settings.resolve(config)
    inputs = data.build_input(s, num_devices=jax.local_device_count())
    try:
        ctx = train.build_context(s, inputs.hierarchy, total_steps=8,
                                  steps_per_epoch=inputs.train.steps_per_epoch)
        return init_state(jax.random.key(0), ctx, inputs.image_shape)
    finally:
        inputs.close()


# --- changed configs, two runs on one workdir ---------------------------------------------

def test_changed_config_is_an_error_listing_the_keys(tmp_path, caplog):
    train.train_and_evaluate(tiny_config(num_steps=2), tmp_path)
    changed = tiny_config(num_steps=4, seed=3, **{"optimizer.lr": 0.1,
                                                  "optimizer.weight_decay": 1e-3})
    with pytest.raises(WorkdirError) as caught:
        train.train_and_evaluate(changed, tmp_path)
    message = str(caught.value)
    assert "optimizer.lr: 0.05 -> 0.1" in message and "seed: 0 -> 3" in message
    assert "optimizer.weight_decay: 0.0005 -> 0.001" in message
    assert "num_steps" not in message  # allowed: a longer run
    assert "--allow_config_change" in message and "--workdir" in message
    # A finished run with another config did not evaluate either: nothing was written.
    assert json.loads((tmp_path / "config.json").read_text())["optimizer.lr"] == 0.05

    # Keys that only change the length, logging or evaluation resume with a log line.
    train.train_and_evaluate(tiny_config(num_steps=4, log_every_steps=1), tmp_path)
    assert "config changes" in caplog.text
    changes = [json.loads(line) for line in
               (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert changes[-1]["step"] == 2 and "num_steps" in changes[-1]["changes"]

    # The documented way through: recorded, then the new values rule.
    train.train_and_evaluate(tiny_config(num_steps=6, **{"optimizer.lr": 0.1}), tmp_path,
                             allow_config_change=True)
    changes = [json.loads(line) for line in
               (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert changes[-1]["changes"]["optimizer.lr"] == [0.05, 0.1]
    assert json.loads((tmp_path / "config.json").read_text())["optimizer.lr"] == 0.1


@pytest.mark.parametrize("with_config_json", [True, False])
def test_another_model_on_a_workdir_is_a_short_message(tmp_path, with_config_json):
    train.train_and_evaluate(tiny_config(num_steps=2), tmp_path)
    if not with_config_json:
        (tmp_path / "config.json").unlink()
    deeper = tiny_config(num_steps=4, **{"model.wrn_depth": 16})
    with pytest.raises(CheckpointMismatch) as caught:
        train.train_and_evaluate(deeper, tmp_path, allow_config_change=True)
    message = str(caught.value)
    assert len(message) < 1500 and message.count("\n") < 15, message
    assert "does not fit" in message or "differ" in message
    # The run is wrong, not the checkpoint: it stays where it was.
    assert (tmp_path / "checkpoints" / "2").is_dir()
    assert not (tmp_path / "checkpoints_set_aside").exists()


def test_a_second_run_on_a_held_workdir_fails_naming_the_holder(tmp_path):
    with workdir_lib.lock(tmp_path):
        with pytest.raises(WorkdirError, match=rf"in use by another hierjax run \(pid "
                                               rf"{os.getpid()} on host \S+, started "):
            train.train_and_evaluate(tiny_config(), tmp_path)
        proc = _main_process(tmp_path)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert f"\nerror: {tmp_path} is in use by another hierjax run (pid {os.getpid()}" in (
        "\n" + err), err
    assert "Traceback" not in err and len(_after_error(err)) <= 3, err


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hierjax import workdir\n"
         f"with workdir.lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"pid {holder.pid}"):
        with workdir_lib.lock(tmp_path):
            pass
    holder.kill()  # SIGKILL: no cleanup runs
    holder.wait(timeout=60)
    with workdir_lib.lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


# --- shutdown ----------------------------------------------------------------------------

def test_sigterm_is_acted_on_within_two_steps_with_a_labelled_summary(tmp_path, monkeypatch,
                                                                      capsys):
    signal_step, sent = 7, {}
    real_annotate = hierjax.train.annotate

    def annotate(step):
        if step == signal_step:
            sent["time"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGTERM)
        return real_annotate(step)

    monkeypatch.setattr(hierjax.train, "annotate", annotate)
    config = tiny_config(num_steps=10_000, log_every_steps=1000, eval_every_steps=3,
                         checkpoint_every_steps=10_000)
    with pytest.raises(Preempted) as stopped:  # not a result a caller could take as final
        train.train_and_evaluate(config, tmp_path)
    latency_s = time.perf_counter() - sent["time"]
    with Checkpointer(tmp_path / "checkpoints", save_interval_steps=1,
                      max_to_keep=2) as ckpt:
        saved = ckpt.latest_step()
    # The signal arrives while step `signal_step` (0-based) is dispatched; the first
    # step boundary after it is signal_step + 1.
    assert signal_step + 1 <= saved <= signal_step + 2, saved
    out = capsys.readouterr().out
    print(f"SIGTERM at step {signal_step}: saved step {saved}, {latency_s:.2f} s later")
    assert stopped.value.step == saved
    assert f"Latest evaluation (step 6; training stopped by SIGTERM at step {saved})" in out


def test_resumed_run_does_not_repeat_metric_rows(tmp_path):
    train.train_and_evaluate(tiny_config(num_steps=4, log_every_steps=1), tmp_path)
    # A crash after steps 3 and 4 were logged but before step 4's checkpoint.
    import shutil
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    train.train_and_evaluate(tiny_config(num_steps=4, log_every_steps=1), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r.get("split", "train") == "train"
                   and "loss" in r]
    assert train_steps == sorted(set(train_steps)) == [1, 2, 3, 4], rows


# --- inputs ------------------------------------------------------------------------------

def _jpeg(path: pathlib.Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(path)


def _bird_folder(root: pathlib.Path):
    hierarchy = Hierarchy.from_parents(["wren", "robin", "gull"], [0, 0, 1],
                                       ["passerine", "seabird"], level_names=("bird", "group"))
    csv = root / "birds.csv"
    hierarchy.to_csv(csv)
    for split in ("train", "test"):
        for i, name in enumerate(hierarchy.class_names[0]):
            folder = root / "images" / split / name
            folder.mkdir(parents=True)
            _jpeg(folder / "a.jpg", i)
    return csv


def test_corrupt_image_names_the_file_and_class(tmp_path):
    csv = _bird_folder(tmp_path)
    bad = tmp_path / "images" / "train" / "gull" / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    source = ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    transform = TrainTransform(ImageSettings(size=8, resize=9), seed=0,
                               class_names=source.hierarchy.class_names[0])
    index = source.paths.index(str(bad))
    with pytest.raises(DataError, match=rf"{bad} \(class 'gull'\) could not be read"):
        transform.map({**source[index], "g": index})


def test_webp_and_bmp_count_and_empty_classes_are_named(tmp_path):
    csv = _bird_folder(tmp_path)
    train_dir = tmp_path / "images" / "train"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(
        train_dir / "robin" / "b.webp")
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(
        train_dir / "robin" / "c.bmp")
    source = ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    assert sum(p.startswith(str(train_dir / "robin")) for p in source.paths) == 3
    (train_dir / "wren" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"1 classes of .* have no images: wren.*"
                                        r"allow_missing_classes"):
        ImageFolderSource(str(tmp_path / "images"), "train", str(csv))


def test_folder_check_reports_every_problem_and_exits_non_zero(tmp_path, capsys):
    csv = _bird_folder(tmp_path)
    assert prepare.main(["image_folder", "--check", str(tmp_path / "images"),
                         "--hierarchy", str(csv)]) == 0
    (tmp_path / "images" / "train" / "gull" / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "images" / "test" / "robin" / "a.jpg").unlink()
    (tmp_path / "images" / "test" / "eagle").mkdir()
    capsys.readouterr()
    assert prepare.main(["image_folder", "--check", str(tmp_path / "images"),
                         "--hierarchy", str(csv)]) == 1
    out = capsys.readouterr()
    report = out.out + out.err
    assert "bad.png" in report and "gull" in report
    assert "robin" in report  # the emptied test class
    assert "eagle" in report  # a folder the CSV does not know


def test_labels_are_checked_against_the_hierarchy_once_per_dataset():
    hierarchy = Hierarchy.from_parents(["a", "b", "c"], [0, 0, 1], ["x", "y"])
    images = np.zeros((4, 2, 2, 3), np.uint8)

    def source_with(labels_Nxh):
        # A prepared set or a user's own source can carry any labels: replace them.
        source = ArraySource(images, np.array([0, 1, 2, 2]), hierarchy, "toy/train")
        source.labels_Nxh = labels_Nxh
        return source

    good = hierarchy.labels_for(np.array([0, 1, 2, 2]))
    check_labels(source_with(good))
    out_of_range = good.copy()
    out_of_range[3, 0] = 3
    with pytest.raises(DataError, match=r"toy/train: example 3 .* fine label 3, outside 0..2"):
        check_labels(source_with(out_of_range))
    contradicting = good.copy()
    contradicting[1, 1] = 1
    with pytest.raises(DataError, match=r"example 1 .* labels \[1, 1\], but fine class 'b' "
                                        r"lies under \[1, 0\]"):
        check_labels(source_with(contradicting))


def test_losses_reject_bad_labels_eagerly_and_in_checked_mode():
    logits = np.zeros((3, 4), np.float32)
    labels = np.array([[0, 0], [3, 1], [4, 1]], np.int32)
    with pytest.raises(ValueError, match="row 2 has level-0 label 4, outside 0..3"):
        cascaded_softmax_loss([logits], labels)
    with pytest.raises(ValueError, match="row 0 has level-0 label -1"):
        cascaded_softmax_loss([logits], np.array([[-1, 0], [0, 0], [1, 0]], np.int32))
    ancestors = np.array([[0, 0], [1, 0], [2, 1], [3, 1]], np.int32)
    with pytest.raises(ValueError, match="row 1 has labels"):
        coarse_constraint_loss(logits, np.array([[0, 0], [1, 1], [2, 1]], np.int32),
                               ancestors)
    features = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"labels must be \[B, h\]"):
        glm_loss(features, np.array([0, 1, 2], np.int32), k=1, margins=(1.0,))
    with pytest.raises(ValueError, match="contradict"):
        glm_loss(features, np.array([[0, 0], [0, 1], [2, 1]], np.int32), k=1,
                 margins=(1.0,))

    checked = checkify.checkify(jax.jit(
        lambda z, y: cascaded_softmax_loss([z], y, check_labels=True)))
    err, _ = checked(logits, np.array([[0, 0], [1, 0], [2, 1]], np.int32))
    err.throw()  # good labels: no error
    err, _ = checked(logits, labels)
    with pytest.raises(checkify.JaxRuntimeError, match="level-0 label is outside 0..3"):
        err.throw()


# --- user errors: the message alone, exit status 2 -----------------------------------------

def _after_error(stderr: str) -> list[str]:
    """The lines from the first `error: ` line on (absl's INFO lines come before)."""
    lines = stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    return lines[starts[0]:] if starts else []


def _main_process(workdir, *flags):
    cmd = [sys.executable, "-m", "hierjax.main", "--config=configs/default.py",
           f"--workdir={workdir}", "--config.num_steps=2", "--config.batch_size=8",
           "--config.data.synthetic_train_size=32", "--config.data.synthetic_test_size=8",
           "--config.data.image_size=8", "--config.model.name=wrn",
           "--config.model.wrn_depth=10", "--config.model.wrn_width=1", *flags]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("flags,message", [
    (["--config.data.name=cifar100", "--config.data.data_dir=/no/such/dir"],
     "/no/such/dir"),
    (["--config.data.name=image_folder", "--config.data.data_dir={tmp}",
      "--config.data.hierarchy={tmp}/missing.csv"], "missing.csv"),
    (["--config.data.name=image_folder", "--config.data.data_dir={tmp}",
      "--config.data.hierarchy={tmp}/bad.csv"], "bad.csv"),
    (["--config.keep_checkpoints=0"], "config.keep_checkpoints"),
])
def test_user_errors_print_the_message_alone(tmp_path, flags, message):
    (tmp_path / "bad.csv").write_text("fine,coarse\nwren\n")
    (tmp_path / "train").mkdir()
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    proc = _main_process(tmp_path / "run", *flags)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err and message in err, err
    assert 1 <= len(_after_error(err)) <= 4, err


def test_finetuning_config_requires_an_explicit_pretrained_choice():
    config = recipes_config("configs/cub_resnet50.py")
    with pytest.raises(ConfigError, match=r"config\.model\.pretrained"):
        settings.resolve(config)
    config.model.pretrained = "none"
    assert settings.resolve(config).model.pretrained == ""


def recipes_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_module", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_user_errors_share_one_base_class():
    for cls in (ConfigError, DataError, CheckpointError, WorkdirError):
        assert issubclass(cls, UserError)


def test_pad_crop_on_photos_of_another_size_is_an_error_naming_the_file(tmp_path):
    """'pad_crop' keeps images at their size: a 12 x 14 photo under image_size 8 would
    train at 12 x 14 while evaluation resizes to 8 x 8; it must say so instead."""
    csv = _bird_folder(tmp_path)
    source = ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    transform = TrainTransform(ImageSettings(size=8, resize=9, train_crop="pad_crop"), seed=0)
    with pytest.raises(DataError, match=r"a\.jpg is 12 x 14 px, .*'pad_crop'.*image_size = 8"):
        transform.map({**source[0], "g": 0})
    square = TrainTransform(ImageSettings(size=12, resize=12, train_crop="pad_crop"), seed=0)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "images/train/wren/a.jpg")
    assert square.map({**source[source.paths.index(str(tmp_path / "images/train/wren/a.jpg"))],
                       "g": 0})["image"].shape == (12, 12, 3)
