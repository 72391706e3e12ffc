"""Entry point: `python -m hierjax.main --config=configs/FILE.py[:ARGS] --workdir=DIR`.

Any config key can be overridden with `--config.KEY=VALUE`. Under SLURM (or with
config.distributed.initialize) JAX's multi-process runtime is initialised first, one
process per GPU.
"""

import logging as py_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/cifar100_resnet18.py:runlocal.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, profiles.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(py_logging.Filter):
    """Drops orbax's per-save INFO chatter; its warnings and errors still show."""

    def filter(self, record):
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import jax  # after flag parsing, so --help is fast

    py_logging.getLogger("absl").addFilter(_QuietOrbax())

    config = _CONFIG.value
    if config.distributed.initialize or "SLURM_JOB_ID" in os.environ and int(
            os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
    logging.info("JAX %s: process %d of %d, local devices %s", jax.__version__,
                 jax.process_index(), jax.process_count(), jax.local_devices())

    from hierjax import train
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
