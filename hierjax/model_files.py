"""A trained model as a self-contained folder: what `python -m hierjax.export` writes and
`hierjax.Classifier.load` reads, with neither the workdir nor orbax.

    model_dir/
      model.safetensors   every parameter and BatchNorm statistic, float32, named
                          "params/<module path>" and "batch_stats/<module path>" (the
                          flax variable tree joined with "/"); metadata: format, step
      config.json         the run's resolved config (`hierjax.settings.write_json`): the
                          network, the variant's heads, the data settings
      hierarchy.csv       the label tree with the class names (`Hierarchy.to_csv`)
      preprocessing.json  what the network expects, for other runtimes: uint8 RGB ->
                          (shorter side to `resize`, centre crop `image_size`, or the
                          image as it is when `crop` is "as_is") -> x / 255 -> (x - mean)
                          / std, NHWC; hierjax itself preprocesses from config.json
                          (`hierjax.data.transforms.EvalTransform`), so the two agree

`TrainedModel` is what both a model folder and a workdir checkpoint (`hierjax.restore`)
give: settings, hierarchy, host variables and the step they were trained to.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from hierjax import settings as settings_lib
from hierjax.errors import HierarchyError, ModelError
from hierjax.hierarchy import Hierarchy

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
HIERARCHY = "hierarchy.csv"
PREPROCESSING = "preprocessing.json"
FORMAT = "hierjax-model-1"
COLLECTIONS = ("params", "batch_stats")
FILES = (WEIGHTS, CONFIG, HIERARCHY, PREPROCESSING)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained network and everything needed to run it.

    Attributes:
      settings: the run's resolved config.
      hierarchy: its label tree (class names, ancestors).
      variables: {"params": ..., "batch_stats": ...}, nested dicts of numpy arrays.
      step: the training step of the weights.
      origin: where they came from, for messages (a checkpoint or a model folder).
    """

    settings: settings_lib.Settings
    hierarchy: Hierarchy
    variables: dict[str, Any]
    step: int
    origin: str


def flatten(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """{"params": {"a": {"b": x}}} -> {"params/a/b": x} (numpy, contiguous)."""
    out = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict) or hasattr(node, "items"):
            for name, child in node.items():
                walk(f"{prefix}/{name}" if prefix else str(name), child)
        else:
            out[prefix] = np.ascontiguousarray(np.asarray(node))

    for collection in COLLECTIONS:
        walk(collection, variables.get(collection) or {})
    return out


def unflatten(tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of `flatten`; every collection present, possibly empty."""
    out: dict[str, Any] = {c: {} for c in COLLECTIONS}
    for name, array in tensors.items():
        *path, leaf = name.split("/")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = array
    return out


def preprocessing(settings: settings_lib.Settings) -> dict[str, Any]:
    """preprocessing.json's content (module docstring)."""
    from hierjax.data import normalization
    from hierjax.data.transforms import ImageSettings

    images = ImageSettings.from_data_settings(settings.data)
    mean, std = normalization(settings.data)
    as_is = images.train_crop == "pad_crop"
    return {"image_size": images.size, "resize": images.size if as_is else images.resize,
            "crop": "as_is" if as_is else "centre",
            "crop_note": "centre: shorter side to resize, centre crop image_size x "
                         "image_size; as_is: image_size x image_size images as they are, "
                         "other sizes resized (shorter side to image_size) and centre-cropped",
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
            "input": "uint8 RGB, NHWC; x / 255, then (x - mean) / std per channel"}


def write(out_dir, model: TrainedModel) -> list[Path]:
    """Writes the model folder (module docstring); returns the files written."""
    from safetensors.numpy import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.astype(np.float32) if v.dtype.kind == "f" else v
               for k, v in flatten(model.variables).items()}
    # Written as bytes, so the file gets the usual permissions (save_file's are 0600).
    (out / WEIGHTS).write_bytes(save(tensors, metadata={"format": FORMAT,
                                                        "step": str(model.step)}))
    settings_lib.write_json(model.settings, out / CONFIG)
    model.hierarchy.to_csv(out / HIERARCHY, header_comment=(
        f"Label tree of a hierjax model ({model.origin}, step {model.step})."))
    (out / PREPROCESSING).write_text(json.dumps(preprocessing(model.settings), indent=1) + "\n")
    return [out / name for name in FILES]


def read(model_dir) -> TrainedModel:
    """The model of a folder `write` made; ModelError when a file is missing or broken."""
    from safetensors import SafetensorError, safe_open

    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ModelError(f"{model_dir} is not a directory; give the folder that "
                         "`python -m hierjax.export --out` wrote")
    missing = [name for name in (WEIGHTS, CONFIG, HIERARCHY) if not (folder / name).is_file()]
    if missing:
        raise ModelError(f"{folder} lacks {', '.join(missing)}, so it is no exported hierjax "
                         "model; export one with `python -m hierjax.export --workdir W --out "
                         f"{folder}`")
    try:
        with safe_open(folder / WEIGHTS, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, OSError) as e:
        raise ModelError(f"{folder / WEIGHTS} could not be read ({e}); export the model "
                         "again") from None
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{folder / WEIGHTS} is not a {FORMAT} file (metadata "
                         f"{metadata}); export the model again with this hierjax")
    try:
        hierarchy = Hierarchy.from_csv(folder / HIERARCHY)
    except HierarchyError as e:
        raise ModelError(f"{folder / HIERARCHY}: {e}") from None
    return TrainedModel(settings=settings_lib.read_json(folder / CONFIG), hierarchy=hierarchy,
                        variables=unflatten(tensors), step=int(metadata.get("step", -1)),
                        origin=str(folder))
