"""The figure of a variants study (hierjax/benchmarks/sweep_figure.py): the split its
curves are named after, the forest plot's gains against hand-worked paired intervals, and
PNGs with the right panels for both protocols' result formats."""

import numpy as np
import pytest
from PIL import Image

from hierjax.benchmarks import sweep_figure
from hierjax.benchmarks.results import paired_gains


def test_the_curves_are_named_after_the_split_they_were_measured_on():
    val, test = ({"config": {"data.val_fraction": f}} for f in (0.1, 0.0))
    assert sweep_figure.curve_split([val, val]) == "validation"
    assert sweep_figure.curve_split([test]) == "test"
    assert sweep_figure.curve_split([val, test]) == sweep_figure.curve_split([{}]) == "held-out"


def _scratch(top1, seed):  # a from-scratch result: curve (epoch, fine top-1)
    return {"seed": seed, "metrics": {"top1_from_fine/0": top1 / 100}, "seconds": 60.0,
            "curve": [(1.0, top1 / 200), (2.0, top1 / 100)]}


def test_forest_rows_are_paired_gains_over_the_seeds_each_run_shares_with_the_baseline():
    results = {"SM": [_scratch(40, 0), _scratch(50, 1), _scratch(45, 2)],
               # seeds listed out of order: pairs go by seed
               "A": [_scratch(47, 2), _scratch(43, 0), _scratch(52, 1)],
               "B": [_scratch(41, 0), _scratch(49, 1)],
               "C": [_scratch(60, 2)]}
    others = {name: runs for name, runs in results.items() if name != "SM"}
    rows = paired_gains(others, results["SM"], lambda r: 100 * r["metrics"]["top1_from_fine/0"])
    # C shares one seed with SM: no interval, no row.
    assert [(name, n) for name, n, *_ in rows] == [("A", 3), ("B", 2)]
    (*_, gain_a, half_a), (*_, gain_b, half_b) = rows
    # A - SM per seed: 3, 2, 2 -> mean 7/3, sample std 0.5774, t(0.975, 2) = 4.3027:
    # 4.3027 * 0.5774 / sqrt(3) = 1.4342. B - SM: 1, -1 -> 0 ± 12.706 * 1.4142 / sqrt(2).
    assert gain_a == pytest.approx(7 / 3) and half_a == pytest.approx(1.4342, abs=1e-4)
    assert gain_b == pytest.approx(0.0, abs=1e-12) and half_b == pytest.approx(12.706, abs=1e-3)


def _distinct_grays(path):
    with Image.open(path) as image:
        return image.size[0], len(np.unique(np.asarray(image.convert("L"))))


def test_figures_of_both_protocols_have_the_panels_their_study_needs(tmp_path):
    scratch = {"SM": [_scratch(40, 0), _scratch(42, 1)],
               "OURS": [_scratch(43, 0), _scratch(44, 1)],
               "OURS+CC": [{"seed": 0, "diverged": {"step": 3, "reason": "loss"}}]}
    top1 = lambda r: 100 * r["metrics"]["top1_from_fine/0"]  # noqa: E731
    sweep_figure.draw(scratch, tmp_path / "v.png", title="variants", baseline="SM",
                      test_top1=top1)
    # One seed per run: nothing to put in a forest plot, so the curves alone.
    one_seed = {name: runs[:1] for name, runs in scratch.items()}
    sweep_figure.draw(one_seed, tmp_path / "one.png", title="scale", baseline="SM",
                      test_top1=top1)
    lam = {"lambda=0.2": [_scratch(40, 0)], "lambda=0.4": [_scratch(50, 0)]}
    sweep_figure.draw(lam, tmp_path / "l.png", title="lambda-OURS", test_top1=top1,
                      swept=("lambda", "test", lambda r: r["metrics"]))
    # Transfer results: curve (epoch, fine, coarse), test and val metrics.
    transfer = {f"lr={lr}": [{"seed": 0, "test": {"top1_from_fine/0": 0.4},
                              "val": {"top1_from_fine/0": 0.4 + lr},
                              "curve": [(1.0, 0.3, 0.5), (2.0, 0.4, 0.6)]}]
                for lr in (0.01, 0.1)}
    sweep_figure.draw(transfer, tmp_path / "lr.png", title="transfer lr",
                      test_top1=lambda r: 100 * r["test"]["top1_from_fine/0"],
                      swept=("lr", "validation", lambda r: r["val"]), log_x=True)
    widths = {name: _distinct_grays(tmp_path / f"{name}.png") for name in ("v", "one", "l", "lr")}
    assert widths["one"][0] == 770 and all(widths[n][0] == 1320 for n in ("v", "l", "lr"))
    assert all(grays > 10 for _, grays in widths.values())
