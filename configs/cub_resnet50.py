"""CUB-200-2011: 200 species / 38 families / 13 orders, ResNet-50 at 448 px.

    python -m hierjax.prepare cub --manual_dir=ARCHIVES --data_dir=~/tensorflow_datasets
    python -m hierjax.main --config=configs/cub_resnet50.py --workdir=/tmp/cub \
        --config.model.pretrained=resnet50.safetensors

Hierarchies (`:hierarchy=NAME`): species_family_order (Chang et al., 200/38/13),
species_genus_family_order (HSE/HRN, 200/122/37/13), suffix (name suffix, 200 -> 70).
Archive: CUB_200_2011.tgz.
The fine-tuning recipe of hierjax.recipes.finetune (ImageNet-pretrained
ResNet-50, 448 px, batch 32, SGD lr 0.01 with 10x for the heads, cosine over 100
epochs); variant OURS by default. Arguments: `runlocal`, `variant=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS",
                               hierarchy="species_family_order")
    config = recipes.finetune("cub", args.hierarchy)
    return recipes.finish(config, args)
