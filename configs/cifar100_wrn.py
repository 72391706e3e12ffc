"""CIFAR-100, Wide-ResNet WRN-28-10 from scratch (Zagoruyko & Komodakis: 80.75% top-1
with softmax).

    python -m hierjax.main --config=configs/cifar100_wrn.py --workdir=/tmp/c100_wrn

The WRN paper's recipe over hierjax.recipes.cifar100: 200 epochs, batch 128, SGD +
Nesterov 0.9, lr 0.1 dropped x0.2 at epochs 60, 120 and 160 (no warm-up), weight decay
5e-4, dropout 0.3. Arguments: `runlocal`, `variant=NAME` (default OURS), `depth=D` and
`width=K` for another WRN-D-K (e.g. `:depth=16,width=4`).
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS", depth=28, width=10)
    config = recipes.cifar100("wrn")
    config.model.wrn_depth = args.depth
    config.model.wrn_width = args.width
    config.model.dropout = 0.3
    config.optimizer.schedule = "step"
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.decay_epochs = (60.0, 120.0, 160.0)
    config.optimizer.decay_factor = 0.2
    return recipes.finish(config, args)
