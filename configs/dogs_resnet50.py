"""Stanford Dogs: 120 breeds / 78 name-suffix groups, ResNet-50 at 448 px.

    python -m hierjax.prepare dogs --manual_dir=ARCHIVES --data_dir=~/tensorflow_datasets
    python -m hierjax.main --config=configs/dogs_resnet50.py --workdir=/tmp/dogs \
        --config.model.pretrained=resnet50.safetensors

Archives: images.tar, annotation.tar, lists.tar.
The fine-tuning recipe of hierjax.recipes.finetune (ImageNet-pretrained
ResNet-50, 448 px, batch 32, SGD lr 0.01 with 10x for the heads, cosine over 100
epochs); variant OURS by default. Arguments: `runlocal`, `variant=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS",
                               hierarchy="suffix")
    config = recipes.finetune("dogs", args.hierarchy)
    return recipes.finish(config, args)
