"""The label hierarchies shipped with hierjax, one CSV file per tree in `files/`.

`load(name)` reads one as a `hierjax.hierarchy.Hierarchy`; `NAMES` maps each short name
to its file in `files/`. File format: the `hierjax.hierarchy` module docstring (leading
`#` lines, a header of level names, one row per fine class, fine level first). Every file
starts with `#` lines giving the levels and class counts, the source, what was changed
from it (errata fixed) and the class order. Row i is the dataset's official class id i
(0-based), named as the official dataset spells it.

- `cub/species_family_order`: CUB-200-2011, 200 species / 38 families / 13 orders (the
  Chang et al. 2021 names; Red_legged_Kittiwake's order fixed to Charadriiformes).
- `cub/species_genus_family_order`: CUB-200-2011, 200 / 122 genera / 37 families / 13
  orders (HRN / HSE ids only, named `genus_001`, `family_01`, `order_01`, ...).
- `cub/suffix`: CUB-200-2011, 200 species -> 70 groups by the last `_` token of the name.
- `aircraft/variant_family_manufacturer`: FGVC-Aircraft, 100 / 70 / 30, `variants.txt` order.
- `cars/model_bodytype`: Stanford Cars, 196 models -> 9 body types.
- `dogs/suffix`: Stanford Dogs, 120 breeds -> 78 groups by the last `_` token, lower-cased.
- `cifar100/class_superclass`: CIFAR-100, 100 classes -> 20 official superclasses.
- `cifar100/transfer_source`, `cifar100/transfer_target`: the transfer split of
  CIFAR-100 (BENCHMARKS.md): per superclass, the 2 lowest official fine ids (40
  classes) and the other 3 (60 classes), both under the 20 superclasses.

These are facts about public datasets, re-tabulated from public sources; the datasets
themselves keep their own terms.
"""

from __future__ import annotations

from pathlib import Path

from hierjax.hierarchy.tree import Hierarchy

DIRECTORY = Path(__file__).resolve().parent / "files"

NAMES: dict[str, str] = {
    "cub/species_family_order": "cub200_species_family_order.csv",
    "cub/species_genus_family_order": "cub200_species_genus_family_order.csv",
    "cub/suffix": "cub200_suffix.csv",
    "aircraft/variant_family_manufacturer": "aircraft_variant_family_manufacturer.csv",
    "cars/model_bodytype": "cars_model_bodytype.csv",
    "dogs/suffix": "dogs_suffix.csv",
    "cifar100/class_superclass": "cifar100_class_superclass.csv",
    "cifar100/transfer_source": "cifar100_transfer_source.csv",
    "cifar100/transfer_target": "cifar100_transfer_target.csv",
}


def path(name: str) -> Path:
    """The file of a shipped hierarchy, by its short name (a key of `NAMES`)."""
    if name not in NAMES:
        raise ValueError(
            f"no shipped hierarchy {name!r}; the available ones are: {', '.join(sorted(NAMES))}"
        )
    return DIRECTORY / NAMES[name]


def load(name: str) -> Hierarchy:
    """Reads a shipped hierarchy by its short name, e.g. load("cub/species_family_order")."""
    return Hierarchy.from_csv(path(name))


__all__ = ["NAMES", "DIRECTORY", "path", "load"]
