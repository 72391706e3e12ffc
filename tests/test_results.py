"""The result-file helpers behind every benchmark table: rows of runs with diverged
seeds, and pairing by seed (hand-worked cases)."""

from hierjax.benchmarks import results


def _run(seed, top1=None, step=None):
    if step is not None:
        return {"seed": seed, "diverged": {"step": step, "reason": "loss is nan"}}
    return {"seed": seed, "top1": top1}


def test_run_rows_name_diverged_seeds_and_fill_dashes_when_none_finished():
    runs = {"SM": [_run(0, 50.0), _run(1, 52.0)],
            "SC-CSM": [_run(0, step=34), _run(1, 48.0)],
            "OURS": [_run(0, step=12), _run(1, step=40)]}
    rows = results.run_rows(runs, 4, lambda name, seeds: [name, str([r["seed"] for r in seeds])])
    assert rows == [["SM", "2", "SM", "[0, 1]"],
                    ["SC-CSM (diverged: seed 0 at step 34)", "1", "SC-CSM", "[1]"],
                    ["OURS (diverged: seed 0 at step 12, seed 1 at step 40)", "0", "-", "-"]]


def test_finished_results_drops_diverged_seeds_and_empty_runs():
    runs = {"SM": [_run(0, 50.0), _run(1, step=3)], "OURS": [_run(0, step=1)]}
    assert results.finished_results(runs) == {"SM": [_run(0, 50.0)]}


def test_paired_by_seed_pairs_equal_seeds_not_positions():
    runs = [_run(0, 10.0), _run(2, 30.0), _run(3, 40.0)]
    base = [_run(0, 1.0), _run(1, 2.0), _run(2, 3.0)]
    assert results.paired_by_seed(runs, base, lambda r: r["top1"]) == [(10.0, 1.0), (30.0, 3.0)]


def test_gain_cell_on_shared_seeds_only():
    # differences 9 and 27: mean 18, sd 12.73, t(0.975, 1) = 12.706 -> half-width 114.4
    runs = [_run(0, 10.0), _run(2, 30.0), _run(3, 40.0)]
    base = [_run(0, 1.0), _run(1, 2.0), _run(2, 3.0)]
    assert results.gain_cell(runs, base, lambda r: r["top1"]) == "18.00 ± 114.36 (2 pairs)"

