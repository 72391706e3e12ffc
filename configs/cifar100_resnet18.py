"""CIFAR-100 (100 classes / 20 superclasses), ResNet-18 with the CIFAR stem, from scratch.

    python -m hierjax.main --config=configs/cifar100_resnet18.py --workdir=/tmp/c100
    python -m hierjax.main --config=configs/cifar100_resnet18.py:runlocal --workdir=/tmp/x

Reads the offline copy at ../shared/data/cifar100 (override with --config.data.data_dir).
The recipe (hierjax.recipes.cifar100): 200 epochs, batch 128, SGD + Nesterov lr 0.1 with
a 1-epoch warm-up and cosine decay, weight decay 5e-4, pad-4 random crops and flips.
Arguments: `runlocal`, `variant=NAME` (default OURS; `variant=SM` is the baseline).
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS")
    config = recipes.cifar100("resnet18")
    return recipes.finish(config, args)
