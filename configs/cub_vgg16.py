"""CUB-200-2011 with VGG-16 (Shi, Gong et al., cascaded softmax + GLM): 224 px, GLM and
heads on fc7 (4096-d), variant OURS; or Bilinear-CNN [D, D] on VGG-16's conv5_3.

    python -m hierjax.main --config=configs/cub_vgg16.py --workdir=/tmp/cub_vgg16 \
        --config.model.pretrained=vgg16.safetensors
    python -m hierjax.main --config=configs/cub_vgg16.py:bbox ...        # with BBox
    python -m hierjax.main --config=configs/cub_vgg16.py:bilinear ...    # B-CNN [D, D]

The VGG-16 rows of Shi, Gong et al.'s CUB-200-2011 results (variants SM .. OURS; `bbox`
for the "with BBox" columns), and with `bilinear` their B-CNN [D, D] rows. torchvision's
ImageNet VGG-16 without BatchNorm: the cascaded heads replace fc8 and the GLM loss reads
fc7 after its ReLU and dropout (0.5 after fc6 and fc7, as in the original). `bilinear`
pools the outer product of conv5_3 with itself (Lin et al.: signed square root, L2
normalisation; 512 x 512 = 262,144-d features, which the GLM loss and the heads read) at
448 px. The paper's lambda = 0.8 and margins 1 are the defaults; the rest is
hierjax.recipes.paper_finetune (batch 32, SGD lr 0.001, heads 10x, 60 epochs).
Arguments: `runlocal`, `variant=NAME`, `bbox`, `bilinear`, `hierarchy=NAME`.
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS", bbox=False, bilinear=False,
                             hierarchy="species_family_order")
    config = recipes.paper_finetune("cub", args.hierarchy, "vgg16",
                                    image_size=448 if args.bilinear else 224)
    config.model.vgg_batchnorm = False
    config.model.features = "pool" if args.bilinear else "fc7"
    config.model.bilinear = args.bilinear
    config.data.use_bbox = args.bbox
    return recipes.finish(config, args)
