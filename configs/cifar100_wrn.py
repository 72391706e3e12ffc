"""CIFAR-100, Wide-ResNet WRN-28-10 (Zagoruyko & Komodakis: 80.75% top-1 with SM).

    python -m hierjax.main --config=configs/cifar100_wrn.py --workdir=/tmp/c100_wrn

The WRN paper's recipe: 200 epochs, batch 128, SGD + Nesterov 0.9, lr 0.1 dropped x0.2
at epochs 60, 120 and 160, weight decay 5e-4, dropout 0.3. `:depth=16,width=4` picks
another WRN-d-k.
"""

from hierjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, runlocal=False, variant="OURS", depth=28, width=10)
    config = config_lib.cifar100_config()
    config.model.name = "wrn"
    config.model.wrn_depth = args.depth
    config.model.wrn_width = args.width
    config.model.dropout = 0.3
    config.optimizer.schedule = "step"
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.decay_epochs = (60.0, 120.0, 160.0)
    config.optimizer.decay_factor = 0.2
    return config_lib.finalize(config, args)
