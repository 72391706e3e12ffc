"""Stanford Cars with AlexNet (Shi, Gong et al., cascaded softmax + GLM): 224 px, GLM and
heads on fc7 (4096-d), variant OURS.

    python -m hierjax.main --config=configs/cars_alexnet.py --workdir=/tmp/cars_alexnet \
        --config.model.pretrained=alexnet.safetensors
    python -m hierjax.main --config=configs/cars_alexnet.py:bbox,variant=SM ...

The AlexNet rows of Shi, Gong et al.'s Stanford Cars results (variants SM .. OURS;
`bbox` for the "with BBox" columns). torchvision's ImageNet AlexNet: the cascaded heads
replace fc8 and the GLM loss reads fc7 after its ReLU, as in the paper; dropout 0.5
before fc6 and fc7 as in the original. The hierarchy is the one hierjax stores for Cars,
196 models / 9 body types. The paper's lambda = 0.8 and margins 1 are the defaults; the
rest is hierjax.recipes.paper_finetune (batch 32, SGD lr 0.001, heads 10x, 60 epochs).
Arguments: `runlocal`, `variant=NAME`, `bbox` (crop to the ground-truth box).
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS", bbox=False,
                             hierarchy="model_bodytype")
    config = recipes.paper_finetune("cars", args.hierarchy, "alexnet")
    config.model.features = "fc7"
    config.data.use_bbox = args.bbox
    return recipes.finish(config, args)
