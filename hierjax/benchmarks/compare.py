"""Each variant at its own settings: runs from different result folders of
`hierjax.benchmarks.variants` (say SM at the learning rate validation chose for SM, OURS at
the one it chose for OURS) against one baseline folder, paired by seed.

    python -m hierjax.benchmarks.compare --baseline=docs/results/lr0.1/transfer/variants/SM \\
        docs/results/clip5-lr0.1-heads1/transfer/variants/OURS

A row per folder of seed*.json result files (either protocol): its variant, the settings
in which it differs from the baseline (beyond the variant, the loss and the seed), the
test and validation fine top-1 (mean ± 95% CI over the seeds that finished) and the test
gain over the baseline as the mean ± 95% CI of the per-seed differences
(`stats.paired_gain`). `--write` puts the table into BENCHMARKS.md with a forest plot of
the gains (docs/figures/compare_<name>.png; rows with at least 2 paired seeds).
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import textwrap

from hierjax.benchmarks import common, markdown, stats, sweep_figure
from hierjax.benchmarks.results import (LOCATION_KEYS, diverged_label, finished, gain_cell,
                                        load_runs, paired_gains)

# Keys that make a row the variant it is, or a different draw of it, not other settings.
_OWN_KEYS = ("variant", "seed", "loss.")


def _test(run: dict) -> dict:
    return run.get("test") or run.get("metrics") or {}  # transfer / scratch protocol


def settings_apart(config: dict, baseline: dict) -> str:
    """"key value; ..." of the settings in which `config` differs from `baseline` (stored
    `settings.to_dict` forms; a key newer than a file has its default), leaving out the
    variant's own keys and the paths."""
    from hierjax import settings

    defaults = settings.defaults()
    apart = {k: new for k, (_, new)
             in settings.diff({**defaults, **baseline}, {**defaults, **config}).items()
             if not k.startswith(_OWN_KEYS) and k not in LOCATION_KEYS}
    return "; ".join(f"{k} {v}" for k, v in apart.items()) or "same"


def load_folders(baseline_dir: pathlib.Path,
                 folders: list[pathlib.Path]) -> dict[pathlib.Path, list[dict]]:
    """{folder: its runs}, the baseline's first, each folder read once."""
    return {folder: load_runs(folder) for folder in [baseline_dir, *folders]}


def compare_table(runs_by_folder: dict[pathlib.Path, list[dict]]) -> str:
    """Markdown: the baseline's row (the first folder), then one row per other folder (see
    the module docstring)."""
    baseline_dir, base_runs = next(iter(runs_by_folder.items()))
    base_config = base_runs[0].get("config", {})
    header = ["results", "variant", "settings apart from the baseline's", "seeds",
              "test fine top-1 %", "val fine top-1 %",
              "gain over the baseline (test fine top-1, paired)"]
    rows = []
    for folder, all_runs in runs_by_folder.items():
        runs = finished(all_runs)
        config = all_runs[0].get("config", {})
        cells = [diverged_label(str(folder), all_runs), config.get("variant", "?"),
                 "(baseline)" if folder == baseline_dir else settings_apart(config, base_config),
                 str(len(runs))]
        for values in ([100 * _test(r)["top1_from_fine/0"] for r in runs],
                       [100 * r["val"]["top1_from_fine/0"] for r in runs if r.get("val")]):
            cells.append(stats.format_ci(*stats.mean_ci(values)) if values else "-")
        cells.append("-" if folder == baseline_dir or not runs else gain_cell(
            runs, finished(base_runs), lambda r: 100 * _test(r)["top1_from_fine/0"]))
        rows.append(cells)
    return markdown.table(header, rows)


def forest_rows(runs_by_folder: dict[pathlib.Path, list[dict]]
                ) -> list[tuple[str, int, float, float]]:
    """(label, pairs, gain, 95% half-width) of each folder after the first (the baseline)
    with at least 2 seeds paired with the baseline's finished seeds (results.paired_gains);
    the label is the folder's name (the run's, e.g. CCb4) and its settings apart."""
    (_, base_runs), *others = runs_by_folder.items()
    base_runs = finished(base_runs)
    base_config = base_runs[0].get("config", {}) if base_runs else {}
    rows = paired_gains({folder: finished(runs) for folder, runs in others}, base_runs,
                        lambda r: 100 * _test(r)["top1_from_fine/0"])
    return [(f"{folder.name}: "
             f"{settings_apart(runs_by_folder[folder][0].get('config', {}), base_config)}",
             *rest) for folder, *rest in rows]


def forest_plot(runs_by_folder: dict[pathlib.Path, list[dict]], path: pathlib.Path) -> None:
    """Each folder's test fine top-1 gain over the baseline (the first folder) with its 95%
    CI (paired seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = forest_rows(runs_by_folder)
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.6 * max(len(rows), 1)))
    sweep_figure.forest(axis, [(textwrap.fill(f"{label} ({n} seeds)", 45), gain, half)
                               for label, n, gain, half in rows],
                        xlabel="test fine top-1 gain over the baseline (points, 95% CI)",
                        title=f"gain over {next(iter(runs_by_folder))}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> None:
    from hierjax.cli import run_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=pathlib.Path,
                        help="result folders (seed*.json) to compare with the baseline")
    parser.add_argument("--baseline", required=True, type=pathlib.Path,
                        help="result folder of the baseline run")
    parser.add_argument("--name", default="chosen", help="section name in BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a line saying what the rows are")
    parser.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = parser.parse_args(argv)

    def compare():
        runs_by_folder = load_folders(args.baseline, args.folders)
        body = "\n".join([
            f"### each at its own settings: {args.name}", "", args.note, "",
            f"    python -m hierjax.benchmarks.compare {shlex.join(sys.argv[1:])}", "",
            compare_table(runs_by_folder)])
        print(body)
        if args.write:
            figure = pathlib.Path("docs") / "figures" / f"compare_{args.name}.png"
            forest_plot(runs_by_folder, common.REPO_ROOT / figure)
            common.write_section(f"compare-{args.name}",
                                 f"{body}\n\n![gain over the baseline]({figure})")

    run_command(compare)


if __name__ == "__main__":
    main()
