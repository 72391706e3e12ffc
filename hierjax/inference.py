"""Running a trained model on new images: `hierjax.Classifier`, the inference wrapper.

    clf = hierjax.Classifier.load("model_dir")          # an exported model (hierjax.export)
    clf = hierjax.Classifier.from_workdir("W", "best")   # or a run's checkpoint
    preds = clf.predict(images_uint8_NxHxWx3, top_k=5)   # {level name: LevelPrediction}
    preds["species"].names[i], preds["species"].probs[i]

Not to be confused with the flax module `hierjax.models.Classifier` (backbone + heads),
which this class builds from the run's config and runs.

The images go through the preprocessing of evaluation, `EvalTransform` (shorter side to
`resize`, centre crop; or, for a model trained on fixed-size arrays, the image as it
is) and the model's normalisation, and through the same forward pass as evaluation
(`hierjax.train_step.eval_logits`), batched over every local device with `jax.pmap`, so
a prediction is what evaluation would have computed. Per level l the probabilities are
the decode's (`hierjax.decode.level_probabilities`): with q the fine distribution
(softmax(z_0); softmax of the joint path score for "joint"),
p_l(g) = sum_{c : ancestors[c, l] = g} q(c); the predicted class of every level is the
tree-consistent decode (`hierjax.decode.decode`), so the levels always form a path.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hierjax import decode as decode_lib
from hierjax import model_files
from hierjax.data import normalization
from hierjax.data.sources import WHOLE_IMAGE
from hierjax.data.transforms import EvalTransform, ImageSettings
from hierjax.errors import ModelError
from hierjax.models import build_model
from hierjax.prefetch import replicate
from hierjax.train_step import StepContext, eval_logits


def eval_context(settings, hierarchy) -> StepContext:
    """The `StepContext` of evaluation: the run's network over the hierarchy's classes
    (its variant's heads), the data's normalisation; no optimizer or loss."""
    variant = settings.parsed_variant
    model = build_model(settings.model, hierarchy.num_classes, cascade=variant.cascade,
                        skip=variant.skip)
    mean, std = normalization(settings.data)
    return StepContext(model=model, tx=None, schedule=None,
                       ancestors=np.asarray(hierarchy.ancestors), mean=tuple(mean),
                       std=tuple(std), loss=None, axis_name=None)


def check_variables(trained: model_files.TrainedModel, ctx: StepContext) -> None:
    """ModelError naming the first tensor that the config's network lacks or shapes
    differently (a model folder whose files do not belong together)."""
    size = trained.settings.data.image_size
    want = jax.eval_shape(lambda: ctx.model.init(
        jax.random.key(0), np.zeros((1, size, size, 3), np.float32), train=False))
    want = {"/".join((c, *path)): tuple(leaf.shape) for c in model_files.COLLECTIONS
            for path, leaf in traverse_util.flatten_dict(want.get(c) or {}).items()}
    got = {k: tuple(v.shape) for k, v in model_files.flatten(trained.variables).items()}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ModelError(
                f"{trained.origin}: tensor {name} is {got.get(name, 'missing')} there but "
                f"{want.get(name, 'absent')} in the network its config describes "
                f"(config.model.name = {trained.settings.model.name!r}, variant "
                f"{trained.settings.variant!r}, classes {trained.hierarchy.num_classes}); "
                "export the model again")


class Preprocess:
    """An image (encoded bytes, or a decoded uint8 [H, W, 3] array) -> the uint8
    [S, S, 3] input of the network, exactly as evaluation prepares it (`EvalTransform`
    of the run's data settings)."""

    def __init__(self, data_settings):
        self.images = ImageSettings.from_data_settings(data_settings)
        self._transform = EvalTransform(self.images)

    def __call__(self, image, name: str = "an image") -> np.ndarray:
        if isinstance(image, np.ndarray) and (image.dtype != np.uint8 or image.ndim != 3
                                              or image.shape[-1] != 3):
            raise ValueError(f"{name}: images must be uint8 [H, W, 3] (RGB), got "
                             f"{image.dtype} of shape {image.shape}")
        record = {"image": image, "labels": np.zeros(1, np.int32), "valid": True,
                  "bbox": WHOLE_IMAGE, "name": name}
        return self._transform.map(record)["image"]


@dataclasses.dataclass(frozen=True)
class LevelPrediction:
    """One level's predictions for N images.

    Attributes:
      level: the level's name (e.g. "species").
      label: [N] the decoded class of every image (the levels form a tree path).
      prob: float32 [N] its probability p_l.
      names: [N][k] the k most probable classes, most probable first.
      probs: float32 [N, k] their probabilities.
    """

    level: str
    label: list[str]
    prob: np.ndarray
    names: list[list[str]]
    probs: np.ndarray


def _predict_step(variables, images, *, ctx: StepContext, method: str, top_k: tuple[int, ...],
                  num_classes: tuple[int, ...]):
    """Per device: logits, the decoded path [b, h], its probability per level, and the
    top-k (probabilities, ids) of every level."""
    logits = eval_logits(variables, images, ctx)
    probs = decode_lib.level_probabilities(logits, ctx.ancestors, method,
                                           num_classes=num_classes)
    path = decode_lib.decode(logits, ctx.ancestors, method)
    path_p = [jnp.take_along_axis(p, path[:, l:l + 1], axis=1)[:, 0]
              for l, p in enumerate(probs)]
    tops = [jax.lax.top_k(p, k) for p, k in zip(probs, top_k)]
    return {"logits": logits, "path": path, "path_p": path_p,
            "top_p": [t[0] for t in tops], "top_i": [t[1] for t in tops]}


class Classifier:
    """A trained hierjax model for inference (module docstring). The public
    `hierjax.Classifier`; it runs the flax module `hierjax.models.Classifier`.

    Args:
      trained: the model (`model_files.read`, `restore.restore`).
      batch_size: images per forward pass over all local devices (rounded up to a
        multiple of their number; default: the run's batch size).
    """

    def __init__(self, trained: model_files.TrainedModel, *, batch_size: int | None = None):
        self.trained = trained
        self.settings, self.hierarchy = trained.settings, trained.hierarchy
        self.ctx = eval_context(self.settings, self.hierarchy)
        check_variables(trained, self.ctx)
        self.preprocess = Preprocess(self.settings.data)
        self.devices = jax.local_devices()
        per_device = -(-(batch_size or self.settings.batch_size) // len(self.devices))
        self.batch_size = per_device * len(self.devices)
        self._variables = replicate(trained.variables, self.devices)
        self._steps = {}

    @classmethod
    def load(cls, model_dir, **kwargs) -> Classifier:
        """From an exported model folder; needs neither the workdir nor orbax."""
        return cls(model_files.read(model_dir), **kwargs)

    @classmethod
    def from_workdir(cls, workdir, checkpoint: str | int = "latest", **kwargs) -> Classifier:
        """From a checkpoint of a run's workdir ("latest", "best" or a step)."""
        from hierjax.restore import restore  # orbax: only for workdirs

        return cls(restore(workdir, checkpoint), **kwargs)

    @property
    def level_names(self) -> tuple[str, ...]:
        return self.hierarchy.level_names

    def top_k(self, k: int) -> tuple[int, ...]:
        """k per level, at most the level's number of classes."""
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        return tuple(min(k, c) for c in self.hierarchy.num_classes)

    def run(self, inputs_NxSxSx3: np.ndarray, *, decode: str | None = None, top_k: int = 5
            ) -> dict[str, list[np.ndarray]]:
        """`_predict_step`'s outputs (numpy, N rows) for already preprocessed uint8
        inputs [N, S, S, 3], in batches of `batch_size` over every local device."""
        method = decode or self.settings.eval.decode
        key = (method, self.top_k(top_k))
        if key not in self._steps:
            self._steps[key] = jax.pmap(functools.partial(
                _predict_step, ctx=self.ctx, method=method, top_k=key[1],
                num_classes=tuple(self.hierarchy.num_classes)), in_axes=(0, 0))
        step, d = self._steps[key], len(self.devices)
        n = len(inputs_NxSxSx3)
        if n == 0:
            raise ValueError("no images to run the model on")
        chunks = []
        for start in range(0, n, self.batch_size):
            chunk = inputs_NxSxSx3[start:start + self.batch_size]
            padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.uint8)
            padded[:len(chunk)] = chunk
            out = step(self._variables, padded.reshape(d, -1, *chunk.shape[1:]))
            chunks.append(jax.tree.map(
                lambda x, m=len(chunk): np.asarray(x).reshape(-1, *x.shape[2:])[:m], out))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)

    def logits(self, images) -> list[np.ndarray]:
        """Logits per level, float32 [N, C_l] (one head for a flat variant), of uint8
        images [N, H, W, 3] (preprocessed as evaluation does)."""
        return self.run(self._inputs(images))["logits"]

    def predict(self, images, *, top_k: int = 5, decode: str | None = None
                ) -> dict[str, LevelPrediction]:
        """Per level, fine first: the decoded class and the top-k classes with their
        probabilities, of uint8 images [N, H, W, 3] (or a list of [H, W, 3] arrays of
        any sizes). `decode`: fine | marginal | joint (default: the run's
        config.eval.decode)."""
        return self.describe(self.run(self._inputs(images), decode=decode, top_k=top_k))

    def describe(self, out: dict) -> dict[str, LevelPrediction]:
        """`run`'s outputs as class names and probabilities per level."""
        result = {}
        for l, level in enumerate(self.level_names):
            names = self.hierarchy.class_names[l]
            result[level] = LevelPrediction(
                level=level, label=[names[i] for i in out["path"][:, l]],
                prob=out["path_p"][l],
                names=[[names[i] for i in row] for row in out["top_i"][l]],
                probs=out["top_p"][l])
        return result

    def _inputs(self, images) -> np.ndarray:
        if len(images) == 0:
            raise ValueError("no images to predict")
        return np.stack([self.preprocess(image, f"image {i}") for i, image in enumerate(images)])
