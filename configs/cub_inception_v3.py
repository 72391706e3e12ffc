"""CUB-200-2011 with Inception-V3 at 299 px (Lu & Zou, coarse-label constraint), in two
steps: fine labels only, then continue from that model with the constraint added.

    python -m hierjax.main --config=configs/cub_inception_v3.py --workdir=/tmp/cub_iv3_1 \
        --config.model.pretrained=inception_v3.safetensors
    python -m hierjax.main --config=configs/cub_inception_v3.py:stage=2 \
        --workdir=/tmp/cub_iv3_2 --config.model.pretrained=inception_v3.safetensors \
        --config.model.init_from=/tmp/cub_iv3_1

Lu & Zou's Inception-V3 on CUB: stage 1 (variant SM) fine-tunes torchvision's ImageNet
Inception-V3 with the fine labels; stage 2 (`stage=2`, variant CC) starts from stage 1's
newest good checkpoint (`config.model.init_from`, the stage-1 workdir; the pretrained
file is not read there, but give the same value) with the coarse-label constraint,
a = b = 1, every other hyperparameter unchanged. The paper reports b = 2 better for
Inception-V3 on CUB: add `--config.loss.coarse_weight=2`. Coarse labels: the class-name
suffix (200 species -> 70 groups), as the paper builds them. Auxiliary head off
(`--config.model.aux_logits=True` trains it, weight 0.3). The rest is
hierjax.recipes.paper_finetune (batch 32, SGD lr 0.001, heads 10x, 60 epochs).
Arguments: `runlocal` (75 px, the network's smallest input), `stage=1|2`,
`variant=NAME` (replaces the stage's), `hierarchy=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, stage=1, variant="", hierarchy="suffix")
    config = recipes.paper_finetune("cub", args.hierarchy, "inception_v3", image_size=299)
    config = recipes.two_stage(config, args.stage, args.variant)
    return recipes.runlocal(config) if args.runlocal else config
