"""CIFAR-100 (100 classes / 20 superclasses), ResNet-18 with the CIFAR stem.

    python -m hierjax.main --config=configs/cifar100_resnet18.py --workdir=/tmp/c100
    python -m hierjax.main --config=configs/cifar100_resnet18.py:runlocal --workdir=/tmp/x

Reads the offline copy at ../shared/data/cifar100 (override with
--config.data.data_dir). 200 epochs, SGD + Nesterov, lr 0.1 for batch 128, cosine,
weight decay 5e-4; variant OURS by default (`:variant=SM` for the baseline).
"""

from hierjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, runlocal=False, variant="OURS")
    config = config_lib.base_config()
    config.data.name = "cifar100"
    config.data.data_dir = "../shared/data/cifar100"
    config.data.image_size = 32
    config.model.name = "resnet18"
    config.model.small_input = True
    config.batch_size = 128
    config.num_epochs = 200
    config.optimizer.lr = 0.1
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    # From scratch, the paper's lambda = 0.8 lets GLM shrink the still class-agnostic
    # features: runlocal OURS reached 1.6% top-1 at 0.8 vs 4.3% at 0.05 and 6.8% for
    # SC-CSM (BENCHMARKS.md). Fine-tuning configs keep 0.8.
    config.loss.glm_lambda = 0.05
    return config_lib.finalize(config, args)
