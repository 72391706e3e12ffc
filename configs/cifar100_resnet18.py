"""CIFAR-100 (100 classes / 20 superclasses), ResNet-18 with the CIFAR stem.

    python -m hierjax.main --config=configs/cifar100_resnet18.py --workdir=/tmp/c100
    python -m hierjax.main --config=configs/cifar100_resnet18.py:runlocal --workdir=/tmp/x

Reads the offline copy at ../shared/data/cifar100 (override with
--config.data.data_dir). 200 epochs, SGD + Nesterov, lr 0.1 for batch 128, cosine,
weight decay 5e-4 (hierjax.config_lib.cifar100_config); variant OURS by default
(`:variant=SM` for the baseline).
"""

from hierjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, runlocal=False, variant="OURS")
    config = config_lib.cifar100_config()
    config.model.name = "resnet18"
    config.model.small_input = True
    config.optimizer.schedule = "cosine"
    return config_lib.finalize(config, args)
