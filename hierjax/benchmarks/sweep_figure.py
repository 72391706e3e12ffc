"""The figure of a `hierjax.benchmarks.variants` study, from scratch or in the transfer
protocol: accuracy against epoch per run, beside either each run's gain over the baseline
(a forest plot, also drawn by `hierjax.benchmarks.compare`) or the final accuracy against
the swept value."""

from __future__ import annotations

import pathlib
from typing import Callable

import numpy as np

from hierjax.benchmarks.results import finished_results, paired_gains


def curve_split(runs: list[dict]) -> str:
    """The split the runs' eval curves were measured on: "validation" when every run held
    part of its training set out, "test" when none did, else (or for result files without
    their config) "held-out"."""
    fractions = {r.get("config", {}).get("data.val_fraction") for r in runs}
    if None in fractions or len(fractions) != 1:
        return "held-out"
    return "validation" if fractions.pop() > 0 else "test"


def forest(axis, rows: list[tuple[str, float, float]], *, xlabel: str, title: str,
           colors: list | None = None) -> None:
    """A forest plot on `axis`: each row (label, gain, 95% CI half-width) top to bottom as
    a point with its interval (in colors[i] when given), against a line at zero."""
    for y, (_, gain, half) in enumerate(rows):
        axis.errorbar([gain], [y], xerr=[[half], [half]], fmt="o", capsize=4,
                      color=colors[y] if colors else None)
    axis.axvline(0, color="grey", lw=1)
    axis.set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize=7)
    axis.invert_yaxis()
    axis.set(xlabel=xlabel, title=title)


def draw(results: dict[str, list[dict]], path: pathlib.Path, *, title: str,
         test_top1: Callable[[dict], float], baseline: str | None = None,
         swept: tuple[str, str, Callable[[dict], dict]] | None = None,
         log_x: bool = False) -> None:
    """Writes the PNG at `path`. `results`: {run name: its seeds' results}, each with a
    "curve" of (epoch, fine top-1, ...) and a "seed"; diverged seeds are left out.

    Left: fine top-1 on the curves' split (curve_split) against epoch per run, the mean
    over seeds with a band from the lowest to the highest seed. Right, with `baseline`:
    each run's test fine top-1 gain over it, test_top1(run) - test_top1(baseline run) per
    shared seed, as the mean and 95% Student-t CI in the run's curve colour
    (results.paired_gains; no panel when no run has two paired seeds). Right, with
    `swept` = (knob, split, final metrics of a result): final fine top-1 against the value
    in each run's name ("lambda=0.4" -> 0.4), mean over seeds with the seed std as error
    bars, on a log axis if `log_x`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = finished_results(results)
    rows = (paired_gains({n: r for n, r in results.items() if n != baseline},
                         results[baseline], test_top1) if baseline in results else [])
    two = bool(rows) or swept is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2 if two else 1, figsize=(12 if two else 7, 4.5),
                                squeeze=False)
    curves, colors = axes[0, 0], {}
    for name, seeds in results.items():
        epochs = [e for e, *_ in seeds[0]["curve"]]
        top1 = np.array([[100 * a for _, a, *_ in r["curve"]] for r in seeds])
        line, = curves.plot(epochs, top1.mean(0), marker="." if len(epochs) < 30 else None,
                            label=name)
        colors[name] = line.get_color()
        if len(seeds) > 1:
            curves.fill_between(epochs, top1.min(0), top1.max(0), alpha=0.15,
                                color=line.get_color())
    split = curve_split([r for seeds in results.values() for r in seeds])
    curves.set(xlabel="epoch", ylabel=f"{split} fine top-1 (%)",
               title=f"{title}: {split} accuracy (band: seed range)")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7, ncol=2)
    if two:
        right = axes[0, 1]
        if rows:
            n_base = len(results[baseline])
            # A run that shares fewer seeds with the baseline than it has says so.
            forest(right, [(name if n == n_base else f"{name} ({n} seeds)", gain, half)
                           for name, n, gain, half in rows],
                   xlabel=f"test fine top-1 gain over {baseline} (points, 95% CI)",
                   title=f"gain over {baseline}, paired by seed ({n_base} seeds)",
                   colors=[colors[name] for name, *_ in rows])
        else:
            knob, final_split, final = swept
            values = [float(name.split("=")[1]) for name in results]
            finals = [[100 * final(r)["top1_from_fine/0"] for r in runs]
                      for runs in results.values()]
            right.errorbar(values, [np.mean(f) for f in finals],
                           yerr=[np.std(f, ddof=1) if len(f) > 1 else 0 for f in finals],
                           marker="o", capsize=3)
            right.set(xlabel=knob, ylabel=f"final {final_split} fine top-1 (%)",
                      title=f"{final_split} accuracy against {knob}")
            if log_x:
                right.set_xscale("log")
        right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
