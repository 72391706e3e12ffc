"""Default hierjax config: the offline synthetic hierarchical dataset, ResNet-18, OURS.

    python -m hierjax.main --config=configs/default.py --workdir=/tmp/hierjax
    python -m hierjax.main --config=configs/default.py:runlocal,variant=SM --workdir=...

Arguments (after the colon, comma separated): `runlocal` shrinks the run to a CPU smoke
test; `variant=NAME` picks one of hierjax.config_lib.VARIANTS (default OURS). Every key
and its meaning: hierjax.config_lib.base_config.
"""

from hierjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, runlocal=False, variant="OURS")
    return config_lib.finalize(config_lib.base_config(), args)
