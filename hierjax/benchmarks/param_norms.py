"""Parameter norms of trained runs: where a run's weights went (the backbone, each head).

    python -m hierjax.benchmarks.param_norms WORKDIR [WORKDIR...]

Reads each run's newest good checkpoint (read-only; its config.json rebuilds the shapes)
and prints a markdown row per run: its step, the L2 norm ||w|| = sqrt(sum w^2) of all
backbone parameters together (BatchNorm scales and offsets included) and of every head
parameter (`params/heads/<level>/<kernel|bias>`). A head whose norm runs away while the
loss climbs is the head that diverged (BENCHMARKS.md: the cascade at high rates).
"""

from __future__ import annotations

import argparse

import numpy as np
from flax import traverse_util

from hierjax.benchmarks import markdown
from hierjax.models import HEADS_PARAMS


def group_norms(params) -> dict[str, float]:
    """{"backbone": ||all non-head parameters||, "heads/<level>/<name>": ||that tensor||}."""
    squares: dict[str, float] = {}
    for path, value in traverse_util.flatten_dict(params, sep="/").items():
        group = path if path.startswith(HEADS_PARAMS + "/") else "backbone"
        squares[group] = squares.get(group, 0.0) + float(
            np.sum(np.square(np.asarray(value, np.float64))))
    return {group: float(np.sqrt(total)) for group, total in squares.items()}


def norms_table(workdirs: list[str]) -> str:
    """Markdown: one row per run (module docstring); a column per group any run has."""
    from hierjax import init_from

    rows = []
    for workdir in workdirs:
        state, step = init_from.newest_state(workdir)
        rows.append((workdir, step, group_norms(state.params)))
    groups = sorted({g for _, _, norms in rows for g in norms}, key=lambda g: (g != "backbone", g))
    return markdown.table(["run", "step", *groups],
                          [[workdir, str(step), *(f"{norms[g]:.1f}" if g in norms else "-"
                                                  for g in groups)]
                           for workdir, step, norms in rows])


def main(argv=None) -> None:
    from hierjax.cli import run_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+", help="hierjax run workdirs")
    args = parser.parse_args(argv)
    run_command(lambda: print(norms_table(args.workdirs)))


if __name__ == "__main__":
    main()
