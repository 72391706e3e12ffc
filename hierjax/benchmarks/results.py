"""The result files of `hierjax.benchmarks.variants` (one seedN.json per finished or
diverged run): reading a folder of them, and the cells of the tables drawn from them."""

from __future__ import annotations

import json
import pathlib

from hierjax.benchmarks import stats
from hierjax.errors import ConfigError

# Where the data and the pretrained run live, not what trains: may differ between machines.
LOCATION_KEYS = frozenset({"data.data_dir", "model.init_from"})


def load_runs(folder: pathlib.Path) -> list[dict]:
    """The results in folder/seed*.json, each with its "seed"; an error if there are none."""
    paths = sorted(folder.glob("seed*.json"))
    if not paths:
        raise ConfigError(f"{folder}: no seed*.json result files (written by "
                          "python -m hierjax.benchmarks.variants). Check the path.")
    return [{**json.loads(p.read_text()), "seed": int(p.stem.removeprefix("seed"))}
            for p in paths]


def finished(runs: list[dict]) -> list[dict]:
    """The runs (seeds) that trained to the end, i.e. not diverged."""
    return [r for r in runs if "diverged" not in r]


def diverged_label(name: str, runs: list[dict]) -> str:
    """A table row's name, with the seeds that diverged and at which step."""
    bad = [f"seed {r['seed']} at step {r['diverged']['step']}" for r in runs
           if "diverged" in r]
    return f"{name} (diverged: {', '.join(bad)})" if bad else name


def gain_cell(runs: list[dict], base_runs: list[dict], key) -> str:
    """The paired gain of `runs` over `base_runs` on the seeds both have: mean ± 95% CI of
    the per-seed differences of key(run) (one seed: the difference alone)."""
    base_by_seed = {b["seed"]: b for b in base_runs}
    pairs = [(key(r), key(base_by_seed[r["seed"]])) for r in runs if r["seed"] in base_by_seed]
    if not pairs:
        return "-"
    gain, half = stats.paired_gain(*zip(*pairs))
    return (stats.format_ci(gain, half)
            + (" (CI excludes 0)" if stats.significant(gain, half) else "")
            + (f" ({len(pairs)} pairs)" if len(pairs) < len(runs) else ""))
