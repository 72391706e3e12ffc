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


def finished_results(results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each run's finished seeds, leaving out the runs none of whose seeds finished."""
    return {name: runs for name, runs in
            ((name, finished(runs)) for name, runs in results.items()) if runs}


def diverged_label(name: str, runs: list[dict]) -> str:
    """A table row's name, with the seeds that diverged and at which step."""
    bad = [f"seed {r['seed']} at step {r['diverged']['step']}" for r in runs
           if "diverged" in r]
    return f"{name} (diverged: {', '.join(bad)})" if bad else name


def run_rows(results: dict[str, list[dict]], width: int, cells) -> list[list[str]]:
    """One table row of `width` cells per run: its name (with the seeds that diverged),
    the number of seeds that finished, then cells(name, finished seeds), or dashes if
    none finished."""
    rows = []
    for name, all_runs in results.items():
        runs = finished(all_runs)
        head = [diverged_label(name, all_runs), str(len(runs))]
        rows.append(head + (cells(name, runs) if runs else ["-"] * (width - len(head))))
    return rows


def paired_by_seed(runs: list[dict], base_runs: list[dict], key) -> list[tuple[float, float]]:
    """(key(run), key(baseline run)) for every seed both have."""
    base_by_seed = {b["seed"]: b for b in base_runs}
    return [(key(r), key(base_by_seed[r["seed"]])) for r in runs if r["seed"] in base_by_seed]


def gain_cell(runs: list[dict], base_runs: list[dict], key) -> str:
    """The paired gain of `runs` over `base_runs` on the seeds both have: mean ± 95% CI of
    the per-seed differences of key(run) (one seed: the difference alone)."""
    pairs = paired_by_seed(runs, base_runs, key)
    if not pairs:
        return "-"
    gain, half = stats.paired_gain(*zip(*pairs))
    return (stats.format_ci(gain, half)
            + (" (CI excludes 0)" if stats.significant(gain, half) else "")
            + (f" ({len(pairs)} pairs)" if len(pairs) < len(runs) else ""))


def paired_gains(named_runs: dict, base_runs: list[dict],
                 key) -> list[tuple[object, int, float, float]]:
    """(name, seeds paired, mean gain, 95% CI half-width) of every named entry of `named_runs`
    with at least two seeds in common with `base_runs`: stats.paired_gain of key(run) -
    key(baseline run) over the shared seeds (the forest plots' rows)."""
    rows = []
    for name, runs in named_runs.items():
        pairs = paired_by_seed(runs, base_runs, key)
        if len(pairs) > 1:
            rows.append((name, len(pairs), *stats.paired_gain(*zip(*pairs))))
    return rows
