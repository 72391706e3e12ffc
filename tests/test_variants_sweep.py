"""The sweep command's pieces: run lists, configs per run, cached runs, table, plots."""

import json

import numpy as np
import pytest

from hierjax import settings, train
from hierjax.benchmarks import variants
from helpers import tiny_settings


def test_study_runs_cover_the_issue():
    names = [name for name, _, _ in variants.study_runs("variants", "OURS")]
    assert names == ["SM", "SM-GLM", "CSM", "CSM-GLM", "SC-CSM", "OURS", "CC b=1", "CC b=2",
                     "OURS+CC", "OURS+PQK", "OURS norm lambda=0.8"]
    assert variants.study_runs("variants", "OURS")[-1][2] == {
        "loss.glm_weight": 0.8, "loss.glm_normalize": True}
    lambdas = variants.study_runs("lambda", "SC-CSM")
    assert [o["loss.glm_weight"] for _, _, o in lambdas] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4])
    assert {v for _, v, _ in lambdas} == {"SC-CSM"}
    assert [o["loss.glm_k"] for _, _, o in variants.study_runs("k", "OURS")] == [1, 3, 5, 10]


def test_only_selects_runs_by_table_name_and_rejects_unknown_names():
    from hierjax.errors import ConfigError

    runs = variants.study_runs("scale", "OURS")
    assert [n for n, _, _ in runs][:2] == ["SM", "SC-CSM"]
    assert [n for n, _, _ in variants.selected(runs, ["SC-CSM", "SM"])] == ["SM", "SC-CSM"]
    assert variants.selected(runs, []) == runs
    with pytest.raises(ConfigError, match="--only=OURS: no such run"):
        variants.selected(runs, ["OURS", "SM"])


def test_run_config_applies_the_variant_and_overrides():
    base = settings.base_config()
    config = variants.run_config(base, "CC", {"loss.coarse_weight": 2.0}, seed=4)
    assert (config.seed, config.loss.coarse_weight, config.loss.glm_weight) == (4, 2.0, 0.0)
    assert not config.parsed_variant.cascade
    config = variants.run_config(base, "OURS", {"loss.glm_weight": 1.2}, seed=0)
    assert config.loss.glm_weight == 1.2 and base.loss.glm_weight is None  # base untouched
    assert variants.run_config(base, "SM", {}, seed=0).loss.glm_weight == 0.0


def test_a_sweep_with_its_own_results_folder_gets_its_own_table_name(tmp_path):
    # Both protocols name their BENCHMARKS.md section and figure this way: before, a
    # from-scratch sweep with --results=docs/results/scratch15 would have overwritten the
    # default sweep's section and figure.
    config = settings.base_config()
    config.data.name, config.model.name = "cifar100", "wrn"
    assert variants.table_name(config, str(variants.RESULTS)) == "cifar100-wrn"
    assert variants.table_name(config, str(tmp_path / "scratch15")) == "cifar100-wrn-scratch15"


def test_train_run_is_cached(tmp_path, monkeypatch):
    config = tiny_settings(num_steps=2)
    first = variants.train_run(config, tmp_path)
    assert first["metrics"]["count"] == 37 and first["seconds"] > 0
    assert [epoch for epoch, _ in first["curve"]] == [2 / 16]  # one eval, at step 2 of 16
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: pytest.fail("retrained"))
    assert variants.train_run(config, tmp_path) == json.loads(json.dumps(first))


def test_a_preempted_run_is_never_cached_as_a_result(tmp_path, monkeypatch):
    """A SIGTERM mid-run (e.g. `pkill -f` of the sweep) once left a half-trained run's
    validation metrics cached as its final test result."""
    from hierjax.errors import Preempted

    def stopped(*args, **kwargs):
        raise Preempted(7)

    monkeypatch.setattr(train, "train_and_evaluate", stopped)
    with pytest.raises(Preempted):
        variants.train_run(tiny_settings(num_steps=20), tmp_path / "run")
    assert not (tmp_path / "run" / "result.json").exists()
    with pytest.raises(Preempted):
        variants.transfer_run(settings.base_config(), tmp_path / "pretrained", "SM", "SM", {},
                              0, tmp_path / "t", tmp_path / "t" / "seed0.json")
    assert not (tmp_path / "t" / "seed0.json").exists()


def test_a_run_stopped_and_resumed_counts_the_time_of_both_segments(tmp_path, monkeypatch):
    import time

    from hierjax.errors import Preempted

    real = train.train_and_evaluate

    def stopped(*args, **kwargs):
        raise Preempted(7)

    monkeypatch.setattr(train, "train_and_evaluate", stopped)
    with pytest.raises(Preempted):
        variants.train_run(tiny_settings(num_steps=2), tmp_path)
    kept = tmp_path / variants.STOPPED_SECONDS_FILE
    assert json.loads(kept.read_text())["seconds"] >= 0
    kept.write_text(json.dumps({"seconds": 1000.0}))  # as if the first segment ran 1000 s
    monkeypatch.setattr(train, "train_and_evaluate", real)
    start = time.perf_counter()
    seconds = variants.train_run(tiny_settings(num_steps=2), tmp_path)["seconds"]
    assert 1000.0 < seconds <= 1000.0 + time.perf_counter() - start


def test_a_diverged_run_is_recorded_and_tabled_not_raised(tmp_path, monkeypatch):
    config = tiny_settings(num_steps=3, **{"optimizer.lr": 1e30})
    bad = variants.train_run(config, tmp_path)
    assert bad["metrics"] is None and bad["diverged"]["step"] >= 1
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: pytest.fail("retrained"))
    assert variants.train_run(config, tmp_path)["diverged"] == bad["diverged"]
    step = bad["diverged"]["step"]
    text = variants.table({"SM": [result(0.40, 0)], "OURS": [{**bad, "seed": 0}]},
                          {"SM": 0.25, "OURS": 0.5})
    assert text.splitlines()[3] == (f"| OURS (diverged: seed 0 at step {step}) | 0 | "
                                    + "- | " * 7)[:-1]


def result(top1, seed=0, seconds=60.0):
    metrics = {"top1_from_fine/0": top1, "top1_from_fine/1": 0.5, "top5/0": 0.9,
               "mistake_severity": 1.5}
    return {"metrics": metrics, "seconds": seconds, "seed": seed,
            "curve": [(1.0, top1 / 2), (2.0, top1)]}


def test_table_gives_mean_ci_and_gain_paired_by_seed(tmp_path):
    # OURS lists its seeds in the other order: pairs go by seed, not by position.
    results = {"SM": [result(0.40, 0), result(0.50, 1)],
               "OURS": [result(0.55, 1), result(0.43, 0)], "CC": [result(0.47, 1)]}
    text = variants.table(results, {"SM": 0.25, "OURS": 0.5, "CC": 0.25})
    sm, ours, cc = text.splitlines()[2:]
    # SM: mean 45, sample std of (40, 50) 7.071, t(0.975, 1) = 12.706: 12.706 * 7.071 / sqrt(2)
    # = 63.53. Gains (3, 5): mean 4, std 1.414 -> 12.706 * 1.414 / sqrt(2) = 12.71.
    assert sm.startswith("| SM | 2 | 45.00 ± 63.53 | 50.00 ± 0.00 | 90.00 ± 0.00 | "
                         "1.50 ± 0.00 | 1.00 ± 0.00 | - | 25% |")
    assert ours.endswith("| 4.00 ± 12.71 | 50% |")
    # One seed: its value and its one paired difference (47 - 50), no interval.
    assert cc.startswith("| CC | 1 | 47.00 | 50.00 |") and cc.endswith("| -3.00 | 25% |")


def test_sibling_fraction_rises_with_the_hierarchical_sampler():
    classes = {"data.synthetic_num_fine": 8, "data.synthetic_num_coarse": 4}
    shuffled = variants.sibling_fraction(tiny_settings(**classes))
    pqk = tiny_settings(**classes, **{"data.sampler": "hierarchical",
                                      "data.sampler_pqk": (4, 2, 2)})
    assert variants.sibling_fraction(pqk) == 1.0 > shuffled
    assert np.isfinite(shuffled)
