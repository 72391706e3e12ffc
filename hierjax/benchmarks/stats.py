"""Statistics of the benchmark tables: means with 95% confidence intervals over seeds,
and paired per-seed differences (seeds share initialisation and data order)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval: mean +- t_{(1+level)/2, n-1} s / sqrt(n).
    The half-width is nan for a single value (no spread to estimate)."""
    x = np.asarray(values, float)
    if x.size == 0:
        raise ValueError("mean_ci of no values")
    if x.size == 1:
        return float(x[0]), math.nan
    half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def paired_gain(values: Sequence[float], baseline: Sequence[float],
                level: float = 0.95) -> tuple[float, float]:
    """mean_ci of the per-seed differences values[s] - baseline[s]."""
    if len(values) != len(baseline):
        raise ValueError(f"paired_gain needs one baseline per seed: {len(values)} values, "
                         f"{len(baseline)} baselines")
    return mean_ci(np.asarray(values, float) - np.asarray(baseline, float), level)


def significant(mean: float, half: float) -> bool:
    """Whether the interval mean +- half excludes zero."""
    return not math.isnan(half) and abs(mean) > half


def format_ci(mean: float, half: float, digits: int = 2) -> str:
    return (f"{mean:.{digits}f}" if math.isnan(half)
            else f"{mean:.{digits}f} ± {half:.{digits}f}")
