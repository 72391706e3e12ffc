"""CUB-200-2011 with GoogLeNet (Shi, Gong et al., cascaded softmax + GLM): 224 px,
auxiliary heads on in training, variant OURS.

    python -m hierjax.main --config=configs/cub_googlenet.py --workdir=/tmp/cub_googlenet \
        --config.model.pretrained=googlenet.safetensors
    python -m hierjax.main --config=configs/cub_googlenet.py:bbox,variant=SM ...

The GoogLeNet rows of Shi, Gong et al.'s CUB-200-2011 results (variants SM .. OURS;
`bbox` for the "with BBox" columns). torchvision's ImageNet GoogLeNet (its file carries
the auxiliary heads, untrained); the input is re-normalised as those weights expect.
GoogLeNet has no fc7: the GLM loss and the cascaded heads read the 1024-d pooled
features, the layer below the replaced classifier. Auxiliary heads (fine-class softmax,
weight 0.3 each, as GoogLeNet was trained) in training only; `--config.model.
aux_logits=False` drops them. The paper's lambda = 0.8 and margins 1 are the defaults;
the rest is hierjax.recipes.paper_finetune (batch 32, SGD lr 0.001, heads 10x, 60
epochs). Arguments: `runlocal`, `variant=NAME`, `bbox` (crop to the ground-truth box),
`hierarchy=NAME` (species_family_order, species_genus_family_order, suffix).
"""

from hierjax import recipes


def get_config(arg=None):
    args = recipes.parse_arg(arg, runlocal=False, variant="OURS", bbox=False,
                             hierarchy="species_family_order")
    config = recipes.paper_finetune("cub", args.hierarchy, "googlenet")
    config.model.aux_logits = True
    config.data.use_bbox = args.bbox
    return recipes.finish(config, args)
