"""The offline default: a synthetic hierarchical image set (20 fine classes under 5
coarse ones, 32 px, generated on the fly), ResNet-18 from scratch, variant OURS.

    python -m hierjax.main --config=configs/default.py --workdir=/tmp/hierjax
    python -m hierjax.main --config=configs/default.py:runlocal,variant=SM --workdir=...

Arguments (after the colon, comma separated): `runlocal` shrinks the run to a CPU smoke
test; `variant=NAME` picks the variant (table in hierjax/settings.py). Every key, its
default and its meaning: hierjax/settings.py.
"""

from hierjax import recipes, settings


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS")
    return recipes.finish(settings.base_config(), args)
