"""What each backbone accepts: which layers it can hand the heads (`config.model.features`)
and its default, whether it has auxiliary heads, and its smallest input.

`hierjax.settings` validates the config against these facts (once, after the
command-line overrides) and `build_model` reads them, so both agree:

  network          features (default first)   aux heads   smallest input (px)
  alexnet          fc7, pool                  -           63 (fc7), 31 (pool)
  vgg16, vgg19     pool, fc7                  -           16 (pool), 32 (fc7)
  googlenet        pool                       2           15
  inception_v3     pool                       1           75; 299 with the aux head
  resnet*, wrn     pool                       -           1
"""

from __future__ import annotations

from hierjax.models import alexnet, googlenet, inception_v3, vgg

AUX_NETWORKS = ("googlenet", "inception_v3")
POOL = ("pool",)


def feature_choices(name: str) -> tuple[str, ...]:
    """The `features` a network can give the heads; the first is its default."""
    if name == "alexnet":
        return alexnet.FEATURES
    if name.startswith("vgg"):
        return vgg.FEATURES
    return POOL


def resolve_features(name: str, features: str) -> str:
    """`features`, or the network's default when it is ''."""
    return features or feature_choices(name)[0]


def min_image_size(name: str, features: str, aux_logits: bool) -> int:
    """The smallest square input (px) the network takes with these settings."""
    features = resolve_features(name, features)
    if name == "alexnet":
        return alexnet.MIN_SIZE[features]
    if name.startswith("vgg"):
        return vgg.MIN_SIZE[features]
    if name == "googlenet":
        return googlenet.MIN_SIZE
    if name == "inception_v3":
        return inception_v3.MIN_AUX_SIZE if aux_logits else inception_v3.MIN_SIZE
    return 1


def uses_transform_input(name: str, pretrained: str) -> bool:
    """Whether the network re-normalises its input for torchvision's pretrained weights.

    torchvision's GoogLeNet and Inception-V3 weights expect (x - 0.5) / 0.5 inputs and
    its models convert ImageNet-normalised ones when pretrained (transform_input=True);
    hierjax does the same whenever `config.model.pretrained` is set for them (the
    conversion assumes ImageNet's normalisation, which hierjax.data applies to every
    data set but synthetic and cifar100). From scratch the conversion, an affine map of
    the input, is left out.
    """
    return name in AUX_NETWORKS and bool(pretrained)
