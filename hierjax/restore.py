"""A trained model from a run's workdir: `restore(workdir, checkpoint)`.

Reads the run's saved config (WORKDIR/config.json) and one finished checkpoint of
WORKDIR/checkpoints, read-only: no workdir lock is taken and nothing there is written or
moved, so it works on a run that is still training (orbax lists a step only once it is
completely written). `checkpoint` is "latest" (the newest checkpoint that verifies; a
damaged one is skipped, not set aside), "best" (the highest validation score the run
ranked its checkpoints by: `hierjax.train.best_metric`) or a step number.

The hierarchy (class names, tree) comes from the run's data settings
(`hierjax.data.build_splits`), so the data must be where the run read it; an exported
model (`hierjax.export`) carries its own.
"""

from __future__ import annotations

import pathlib

import jax

from hierjax import data, settings as settings_lib
from hierjax.checkpointing import Checkpointer
from hierjax.errors import CheckpointError, WorkdirError
from hierjax.init_from import template
from hierjax.model_files import TrainedModel
from hierjax.workdir import CONFIG_FILE

CHECKPOINTS = "checkpoints"


def parse_checkpoint(checkpoint: str) -> str | int:
    """"latest", "best" or a step number (int); ValueError otherwise."""
    if checkpoint in ("latest", "best"):
        return checkpoint
    if checkpoint.isdigit():
        return int(checkpoint)
    raise ValueError(f"--checkpoint must be latest, best or a step number, got {checkpoint!r}")


def read_settings(workdir) -> settings_lib.Settings:
    """The run's resolved settings from WORKDIR/config.json."""
    path = pathlib.Path(workdir).expanduser() / CONFIG_FILE
    if not path.is_file():
        raise WorkdirError(f"{workdir} holds no {CONFIG_FILE}, so it is no hierjax workdir; "
                           "give the --workdir a run was trained in")
    return settings_lib.read_json(path)


def restore(workdir, checkpoint: str | int = "latest", *, settings=None,
            hierarchy=None) -> TrainedModel:
    """The weights of one checkpoint of the run in `workdir` (module docstring).

    `settings` and `hierarchy` default to the run's (config.json, its data); a caller
    that built them already passes them."""
    workdir = pathlib.Path(workdir).expanduser()
    s = read_settings(workdir) if settings is None else settings
    if hierarchy is None:
        hierarchy = data.build_splits(s.data).train.hierarchy
    directory = workdir / CHECKPOINTS
    if not directory.is_dir():
        raise CheckpointError(f"{workdir} has no {CHECKPOINTS}/ yet; let the run save one")
    from hierjax.train import best_metric  # the ranking the run itself used

    target = template(s, hierarchy.num_classes)
    with Checkpointer(directory, save_interval_steps=1, max_to_keep=1,
                      best_metric=best_metric(s), async_save=False,
                      read_only=True) as checkpointer:
        if checkpoint == "latest":
            restored = checkpointer.restore_newest_good(target)
            if restored is None:
                raise CheckpointError(f"{directory} holds no checkpoint yet; let the run "
                                      "save one (config.checkpoint_every_steps)")
            state, _, step = restored
        else:
            step = checkpointer.best_step() if checkpoint == "best" else int(checkpoint)
            if step is None:
                raise CheckpointError(
                    f"{directory} has no checkpoint ranked by an evaluation ({best_metric(s)}) "
                    f"yet (kept: {checkpointer.all_steps()}); use --checkpoint latest, or "
                    "a step number")
            if step not in checkpointer.all_steps():
                raise CheckpointError(f"{directory} has no checkpoint of step {step}; kept "
                                      f"steps: {checkpointer.all_steps()}")
            state, _ = checkpointer.restore(target, step)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    return TrainedModel(settings=s, hierarchy=hierarchy, variables=variables, step=int(step),
                        origin=f"{workdir}, checkpoint {checkpoint}")
