"""Entry point: `python -m hierjax.main --config=configs/FILE.py[:ARGS] --workdir=DIR`.

Any config key can be overridden with `--config.KEY=VALUE` (every key: hierjax/settings.py).
Under SLURM with several tasks, or with config.distributed.coordinator / num_processes /
process_id (or config.distributed.initialize), JAX's multi-process runtime is initialised
first (`hierjax.distributed`). Errors in what the user gave (config, data, hierarchy,
archive, checkpoint, workdir: `hierjax.errors.UserError`) print their message alone and
exit with status 2; a training that diverges prints its message and exits 1.
"""

import logging as py_logging
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/cifar100_resnet18.py:runlocal.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, profiles.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir whose config.json differs in keys that change the training "
    "(recorded in WORKDIR/config_changes.jsonl).")
flags.mark_flags_as_required(["config", "workdir"])

# Shared with the other commands (evaluate, export, predict).
from hierjax.cli import QuietOrbax as _QuietOrbax, fail as _fail  # noqa: E402,F401


def _check_override_keys(argv) -> None:
    """Unknown `--config.KEY` flags as one line naming the nearest key (config_flags
    itself answers them with a long traceback)."""
    from hierjax import settings

    known = settings.schema()
    for arg in argv[1:]:
        if arg.startswith("--config."):
            dotted = arg[len("--config."):].split("=", 1)[0]
            if dotted not in known:
                _fail(str(settings.unknown_key_error(dotted)))


def _parse_flags(argv):
    _check_override_keys(argv)
    from hierjax.settings import ConfigError

    try:
        return flags.FLAGS(argv)
    except (flags.Error, ConfigError) as e:
        # config_flags re-raises an error of the config file's get_config with its
        # traceback in the message: report the innermost ConfigError's own message.
        message, cause = str(e), e
        while cause is not None:
            if isinstance(cause, ConfigError):
                message = str(cause)
            cause = cause.__cause__ or cause.__context__
        _fail(message)


def resolved_settings():
    """The --config file with its overrides, validated (`hierjax.settings.resolve`)."""
    from hierjax import settings

    try:
        return settings.resolve(_CONFIG.value)
    except settings.ConfigError as e:
        _fail(str(e))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import jax  # after flag parsing, so --help is fast

    from hierjax import distributed, train
    from hierjax.errors import Preempted, UserError

    py_logging.getLogger("absl").addFilter(_QuietOrbax())
    resolved = resolved_settings()
    try:
        distributed.initialize(resolved.distributed)
    except UserError as e:
        _fail(str(e))
    logging.info("JAX %s: process %d of %d, local devices %s", jax.__version__,
                 jax.process_index(), jax.process_count(), jax.local_devices())
    try:
        train.train_and_evaluate(resolved, _WORKDIR.value,
                                 allow_config_change=_ALLOW_CONFIG_CHANGE.value)
    except Preempted as e:  # saved; exit 0 so that a scheduler requeues the job
        logging.info("%s", e)
    except UserError as e:
        _fail(str(e))
    except FloatingPointError as e:
        _fail(str(e), status=1)
    except Exception:  # a bug: keep its traceback, but do not leave the others waiting
        if not jax.distributed.is_initialized():
            raise
        traceback.print_exc()
        distributed.exit_now(1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
