"""NABirds: 555 classes / their parents / top-level groups (the tree it ships with), ResNet-50 at 448 px.

    python -m hierjax.prepare nabirds --manual_dir=ARCHIVES --data_dir=~/tensorflow_datasets
    python -m hierjax.main --config=configs/nabirds_resnet50.py --workdir=/tmp/nabirds \
        --config.model.pretrained=resnet50.safetensors

Archive: nabirds.tar.gz.
The fine-tuning recipe of hierjax.recipes.finetune (ImageNet-pretrained
ResNet-50, 448 px, batch 32, SGD lr 0.01 with 10x for the heads, cosine over 100
epochs); variant OURS by default. Arguments: `runlocal`, `variant=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS")
    config = recipes.finetune("nabirds", "")
    return recipes.finish(config, args)
