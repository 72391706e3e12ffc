"""TF-free tensorflow-datasets builders for the hierarchical fine-grained datasets.

One module a dataset (its docstring gives the official archive layout and counts):
`aircraft` (FGVC-Aircraft), `cars` (Stanford Cars), `cifar100`, `cub` (CUB-200-2011),
`dogs` (Stanford Dogs) and `nabirds` (its hierarchy is read from the archive).

`python -m hierjax.prepare <dataset> --manual_dir=DIR --data_dir=DIR` prepares one from
its official archive(s); `builder(name, data_dir)` opens a prepared one. The stored
example layout is in `hierjax.datasets.common`. Only the builder modules import
tensorflow_datasets, and only the file-backed input path imports them.
"""

from __future__ import annotations

import importlib

# hierjax dataset name -> "module:Builder class"
BUILDERS = {
    "aircraft": "aircraft:Aircraft",
    "cars": "cars:Cars",
    "cifar100": "cifar100:Cifar100",
    "cub": "cub:Cub",
    "dogs": "dogs:Dogs",
    "nabirds": "nabirds:Nabirds",
}


def builder_class(name: str):
    """The builder class of a hierjax dataset name (a key of BUILDERS)."""
    if name not in BUILDERS:
        raise ValueError(
            f"unknown dataset {name!r}; the prepared datasets are "
            f"{', '.join(sorted(BUILDERS))}")
    module, cls = BUILDERS[name].split(":")
    return getattr(importlib.import_module(f"hierjax.datasets.{module}"), cls)


def builder(name: str, data_dir: str):
    """The builder of `name` over data_dir, which must hold the prepared dataset."""
    b = builder_class(name)(data_dir=data_dir)
    if not b.is_prepared():
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared in {data_dir} (config.data.data_dir): "
            f"no {b.data_path}. Prepare it once with\n"
            f"  python -m hierjax.prepare {name} --manual_dir=DIR_WITH_ARCHIVES "
            f"--data_dir={data_dir}")
    return b
