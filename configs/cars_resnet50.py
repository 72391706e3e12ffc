"""Stanford Cars: 196 models / 9 body types, ResNet-50 at 448 px.

    python -m hierjax.main --config=configs/cars_resnet50.py --workdir=/tmp/cars

The fine-tuning recipe of hierjax.config_lib.finetune_config (ImageNet-pretrained
ResNet-50 via --config.model.pretrained=FILE, 448 px, batch 32, SGD lr 0.01 with 10x for
the heads, cosine over 100 epochs); variant OURS by default. The dataset comes from the
TF-free tfds builder (`python -m hierjax.prepare`, a later issue).
"""

from hierjax import config_lib


def get_config(arg=None):
    args = config_lib.parse_arg(arg, runlocal=False, variant="OURS",
                                hierarchy="model_bodytype")
    config = config_lib.finetune_config("cars", args.hierarchy)
    return config_lib.finalize(config, args)
