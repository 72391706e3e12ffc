"""CIFAR-100 (100 classes / 20 superclasses) with VGG-19 from scratch (Lu & Zou,
coarse-label constraint), in two steps: fine labels only, then continue from that model
with the constraint added.

    python -m hierjax.main --config=configs/cifar100_vgg19.py --workdir=/tmp/c100_vgg19_1
    python -m hierjax.main --config=configs/cifar100_vgg19.py:stage=2 \
        --workdir=/tmp/c100_vgg19_2 --config.model.init_from=/tmp/c100_vgg19_1

Lu & Zou's VGG-19 on CIFAR-100, with the dataset's 20 superclasses as coarse labels:
stage 1 (variant SM) trains with the fine labels; stage 2 (`stage=2`, variant CC)
starts from stage 1's newest good checkpoint (`config.model.init_from`) with the
coarse-label constraint, a = b = 1, every other hyperparameter unchanged. The CIFAR form
of VGG-19: BatchNorm after every conv and the heads on the pooled conv5 features
(512-d), no fully connected layers (ImageNet's fc6/fc7 would see a 1x1 map at 32 px).
The rest is hierjax.recipes.cifar100 (200 epochs, batch 128, SGD + Nesterov lr 0.1,
cosine, weight decay 5e-4). Lu & Zou's WRN on CIFAR-100 is configs/cifar100_wrn.py with
`variant=SM`, then `variant=CC --config.model.init_from=STAGE1_WORKDIR`.
Arguments: `runlocal`, `stage=1|2`, `variant=NAME` (replaces the stage's).
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, stage=1, variant="")
    config = recipes.cifar100("vgg19")
    config.model.vgg_batchnorm = True
    config.model.features = "pool"
    config = recipes.two_stage(config, args.stage, args.variant)
    return recipes.runlocal(config) if args.runlocal else config
