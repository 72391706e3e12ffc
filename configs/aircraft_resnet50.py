"""FGVC-Aircraft: 100 variants / 70 families / 30 manufacturers, ResNet-50 at 448 px.

    python -m hierjax.prepare aircraft --manual_dir=ARCHIVES --data_dir=~/tensorflow_datasets
    python -m hierjax.main --config=configs/aircraft_resnet50.py --workdir=/tmp/aircraft \
        --config.model.pretrained=resnet50.safetensors

Trains on the official train split, validates on the official val split (which picks
the best checkpoints), and reports the test split.
Archive: fgvc-aircraft-2013b.tar.gz.
The fine-tuning recipe of hierjax.recipes.finetune (ImageNet-pretrained
ResNet-50, 448 px, batch 32, SGD lr 0.01 with 10x for the heads, cosine over 100
epochs); variant OURS by default. Arguments: `runlocal`, `variant=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS",
                               hierarchy="variant_family_manufacturer")
    config = recipes.finetune("aircraft", args.hierarchy)
    config.data.train_split = "train"
    config.data.val_split = "val"  # the official one, instead of a held-out fraction
    config.data.val_fraction = 0.0
    return recipes.finish(config, args)
