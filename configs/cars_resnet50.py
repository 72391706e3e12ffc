"""Stanford Cars: 196 models / 9 body types, ResNet-50 at 448 px.

    python -m hierjax.prepare cars --manual_dir=ARCHIVES --data_dir=~/tensorflow_datasets
    python -m hierjax.main --config=configs/cars_resnet50.py --workdir=/tmp/cars \
        --config.model.pretrained=resnet50.safetensors

Archives: cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat.
The fine-tuning recipe of hierjax.recipes.finetune (ImageNet-pretrained
ResNet-50, 448 px, batch 32, SGD lr 0.01 with 10x for the heads, cosine over 100
epochs); variant OURS by default. Arguments: `runlocal`, `variant=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS",
                               hierarchy="model_bodytype")
    config = recipes.finetune("cars", args.hierarchy)
    return recipes.finish(config, args)
