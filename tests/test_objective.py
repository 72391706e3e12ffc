"""The training objective's options (hierjax.train_step.compute_loss)."""

import dataclasses

import numpy as np

from hierjax.losses import glm_loss
from hierjax.train_step import StepContext, compute_loss
from helpers import tiny_settings


def _context(**loss):
    s = tiny_settings(variant="OURS", **{f"loss.{k}": v for k, v in loss.items()})
    ancestors = np.stack([np.arange(8), np.arange(8) // 4], 1).astype(np.int32)
    return StepContext(model=None, tx=None, schedule=None, ancestors=ancestors,
                       mean=(0.0,), std=(1.0,), loss=s.loss, axis_name=None)


def _outputs(scale):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 6)).astype(np.float32) * scale
    logits = [rng.normal(size=(12, 8)).astype(np.float32),
              rng.normal(size=(12, 2)).astype(np.float32)]
    fine = np.array([0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 7])
    labels = np.stack([fine, fine // 4], 1).astype(np.int32)
    return {"features": features, "logits": logits}, labels


def test_glm_normalize_is_glm_on_unit_features_and_scale_free():
    ctx = _context(glm_normalize=True, glm_weight=0.5)
    outputs, labels = _outputs(scale=1.0)
    _, parts = compute_loss(outputs, labels, ctx)
    x = outputs["features"]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = glm_loss(unit, labels, k=ctx.loss.glm_k, margins=tuple(ctx.loss.glm_margins)[:2])
    np.testing.assert_allclose(parts["glm"], want, rtol=1e-5)
    scaled, _ = _outputs(scale=37.0)
    _, parts_scaled = compute_loss(scaled, labels, ctx)
    np.testing.assert_allclose(parts_scaled["glm"], parts["glm"], rtol=1e-4)
    # Without it the GLM term grows with the feature scale (the collapse's lever).
    raw = dataclasses.replace(ctx, loss=dataclasses.replace(ctx.loss, glm_normalize=False))
    _, raw_parts = compute_loss(scaled, labels, raw)
    assert float(raw_parts["glm"]) > 10 * float(parts["glm"])
