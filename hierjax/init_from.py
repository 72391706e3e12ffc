"""Starting a run from another hierjax run's weights (`config.model.init_from`).

Two-stage fine-tuning (Lu & Zou's protocol): stage 1 trains with the fine labels only,
stage 2 continues from that model with the coarse-label constraint added, every other
hyperparameter unchanged. `config.model.init_from=WORKDIR` (or `WORKDIR/checkpoints`)
makes a fresh run start from WORKDIR's newest good checkpoint:

  1. the other run's settings come from its `config.json` (`settings.read_json`);
  2. its TrainState's shapes are rebuilt from them (its model, its variant's heads over
     the classes per level its checkpoint records, its optimizer), abstractly: nothing
     is computed;
  3. `Checkpointer(..., read_only=True).restore_newest_good` reads and verifies the
     arrays, leaving the other workdir untouched;
  4. every parameter and BatchNorm statistic of this run is taken from that state where
     the path exists there with the same shape. A head it lacks or has with another
     shape (a new cascade level, an auxiliary classifier, another number of classes)
     keeps its fresh initialisation; its leaves this run lacks (e.g. cascade heads when
     stage 2 is flat) are dropped. A backbone leaf it lacks or has with another shape
     is an `InitFromError` listing every such parameter.

The step and the optimizer state start fresh. The pretrained file of
`config.model.pretrained` is not read (the weights come from the other run), but its
value must be that run's where it changes the network's input (GoogLeNet and
Inception-V3 re-normalise their input for torchvision's weights).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging
from flax import traverse_util

from hierjax import optim, settings as settings_lib
from hierjax.checkpointing import Checkpointer
from hierjax.errors import CheckpointError, InitFromError
from hierjax.models import HEADS_PARAMS, build_model, specs
from hierjax.train_step import TrainState
from hierjax.workdir import CONFIG_FILE

KEY = "config.model.init_from"
CHECKPOINTS = "checkpoints"
COLLECTIONS = ("params", "batch_stats")
# config.model keys that decide the parameters' names and shapes.
ARCHITECTURE_KEYS = ("name", "small_input", "wrn_depth", "wrn_width", "vgg_batchnorm",
                     "features", "aux_logits", "bilinear", "bilinear_dim")
_LISTED = 12  # parameters quoted per kind of problem in an error


def locate(init_from: str, key: str = KEY) -> tuple[pathlib.Path, pathlib.Path]:
    """(checkpoint folder, config.json) of a workdir or of its checkpoints/ folder; errors
    name `key`, the setting that gave the path."""
    path = pathlib.Path(init_from).expanduser()
    if not path.is_dir():
        raise InitFromError(f"{key} = {init_from!r} is not a directory; give the workdir of a "
                            f"hierjax run (holding {CHECKPOINTS}/ and {CONFIG_FILE})")
    checkpoints = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    config = checkpoints.parent / CONFIG_FILE
    if not config.is_file():
        raise InitFromError(f"{key} = {init_from!r}: there is no {config}, so this is no "
                            f"hierjax workdir; give the --workdir of the run to start from")
    return checkpoints, config


def template(other: settings_lib.Settings, classes_per_level: Sequence[int],
             channels: int = 3) -> TrainState:
    """The shapes of the TrainState the `other` run checkpoints, over these classes."""
    variant = other.parsed_variant
    model = build_model(other.model, classes_per_level, cascade=variant.cascade,
                        skip=variant.skip)
    size = other.data.image_size
    images = jnp.zeros((1, size, size, channels), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    # The schedule's values do not change the state's structure; a callable keeps the
    # step count that a real schedule adds.
    tx = optim.build_optimizer(other.optimizer, lambda step: 0.0)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            {"params": variables["params"],
                             "batch_stats": variables.get("batch_stats", {}),
                             "opt_state": jax.eval_shape(tx.init, variables["params"]),
                             "step": jax.ShapeDtypeStruct((), jnp.int32)})
    return TrainState(**abstract)


def load_variables(variables: Mapping[str, Any], model_config, classes_per_level: Sequence[int],
                   *, channels: int = 3) -> dict[str, Any]:
    """`variables` ({"params", "batch_stats"} of this run's freshly initialised model)
    with every leaf the `model_config.init_from` run has (module docstring)."""
    checkpoints, config_path = locate(model_config.init_from)
    other = settings_lib.read_json(config_path)
    _check_input_transform(other.model, model_config)
    state, step = _restore(checkpoints, other, classes_per_level, channels)
    logging.info("%s: starting from %s, step %d.", KEY, checkpoints, step)
    return _merge(variables, {"params": state.params, "batch_stats": state.batch_stats},
                  other.model, model_config)


def _check_input_transform(old, new) -> None:
    before = specs.uses_transform_input(old.name, old.pretrained)
    after = specs.uses_transform_input(new.name, new.pretrained)
    if before != after:
        raise InitFromError(
            f"{KEY}: that run trained {old.name} with config.model.pretrained = "
            f"{old.pretrained!r}, this one has {new.pretrained!r}, and {old.name} "
            f"{'re-normalises' if before else 'does not re-normalise'} its input for "
            "torchvision's weights only when it is set; give config.model.pretrained as "
            "that run had it (the file is not read)")


def recorded_classes(record: Mapping[str, dict] | None) -> tuple[int, ...]:
    """The classes per level of the heads `level0, level1, ...` in a checkpoint's
    integrity record (`Checkpointer.recorded_arrays`); () when it names none."""
    classes = []
    while record:
        bias = record.get(f".params['{HEADS_PARAMS}']['level{len(classes)}']['bias']")
        if bias is None:
            break
        classes.append(int(bias["shape"][0]))
    return tuple(classes)


def newest_state(workdir: str | pathlib.Path, channels: int = 3,
                 key: str = "workdir") -> tuple[TrainState, int]:
    """(state, step) of the newest good checkpoint of the hierjax run in `workdir` (or its
    checkpoints/ folder), read-only; its config.json rebuilds the state's shapes. Errors
    name `key`, the argument that gave the path."""
    checkpoints, config_path = locate(str(workdir), key)
    return _restore(checkpoints, settings_lib.read_json(config_path), (), channels, key)


def _restore(checkpoints: pathlib.Path, other, classes_per_level, channels,
             key: str = KEY) -> tuple[TrainState, int]:
    """(state, step) of the newest good checkpoint, read-only."""
    with Checkpointer(checkpoints, save_interval_steps=1, max_to_keep=1, read_only=True,
                      async_save=False) as checkpointer:
        # A checkpoint without a record (an older hierjax) is taken to share our classes.
        classes = recorded_classes(checkpointer.recorded_arrays()) or tuple(classes_per_level)
        try:
            restored = checkpointer.restore_newest_good(template(other, classes, channels))
        except CheckpointError as e:
            raise InitFromError(
                f"{key} = {str(checkpoints)!r}: {e}. The state is rebuilt from that run's "
                f"{CONFIG_FILE} over the classes per level {classes}; is {CONFIG_FILE} that "
                "of the run that wrote these checkpoints?") from e
    if restored is None:
        raise InitFromError(f"{key} = {str(checkpoints)!r} holds no checkpoint yet; train that "
                            "run first (or point at another)")
    state, _, step = restored
    return state, step


def _listing(what: str, items: list[str]) -> str:
    lines = [f"\n  {len(items)} {what}:"] + [f"\n    {item}" for item in items[:_LISTED]]
    if len(items) > _LISTED:
        lines.append(f"\n    ... and {len(items) - _LISTED} more")
    return "".join(lines)


def _ordered(names: list[str]) -> list[str]:
    """Parameters first, then BatchNorm statistics, each alphabetically."""
    return sorted(names, key=lambda name: (not name.startswith("params/"), name))


def _merge(variables, loaded, old_model, new_model) -> dict[str, Any]:
    """This run's variables with every leaf `loaded` has at the same path and shape."""
    new_flat = {(c, *p): x for c in COLLECTIONS if c in variables
                for p, x in traverse_util.flatten_dict(variables[c]).items()}
    old_flat = {(c, *p): x for c in COLLECTIONS
                for p, x in traverse_util.flatten_dict(loaded.get(c) or {}).items()}
    merged, fresh, mismatched = {}, [], []
    for path, leaf in new_flat.items():
        name = "/".join(path)
        old = old_flat.get(path)
        if old is not None and tuple(old.shape) == tuple(leaf.shape):
            merged[path] = jnp.asarray(old, leaf.dtype)
        elif len(path) > 1 and path[1] == HEADS_PARAMS:  # a new head, or a new shape
            merged[path] = leaf
            fresh.append(name)
        elif old is not None:
            mismatched.append(f"{name}: {tuple(old.shape)} there, {tuple(leaf.shape)} here")
        else:
            mismatched.append(f"{name}: not in that run")
    dropped = _ordered(["/".join(p) for p in old_flat if p not in new_flat])
    if mismatched:
        differing = [f"config.model.{k} {getattr(old_model, k)!r} there, "
                     f"{getattr(new_model, k)!r} here" for k in ARCHITECTURE_KEYS
                     if getattr(old_model, k) != getattr(new_model, k)]
        message = (f"{KEY} = {new_model.init_from!r}: that run's parameters do not fit this "
                   f"run's model:{_listing('mismatched parameters', _ordered(mismatched))}")
        if dropped:
            message += _listing("parameters of that run this one lacks", dropped)
        if differing:
            message += _listing("model keys that differ", differing)
        raise InitFromError(message + "\nStart from a run of the same network (the same "
                            "config.model), or leave config.model.init_from unset")
    logging.info("%s: %d tensors from the run, %d new head tensors fresh%s, %d of its "
                 "tensors unused%s.", KEY, len(merged) - len(fresh), len(fresh),
                 f" ({', '.join(fresh)})" if fresh else "", len(dropped),
                 f" ({', '.join(dropped)})" if dropped else "")
    out = traverse_util.unflatten_dict(merged)
    return {**variables, **{c: out.get(c, {}) for c in COLLECTIONS if c in variables}}
