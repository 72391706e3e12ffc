"""`python -m hierjax.benchmarks.param_norms`: parameter norms per group of a trained run."""

import numpy as np
import pytest

from helpers import tiny_config
from hierjax import train
from hierjax.benchmarks import param_norms


def test_group_norms_pool_the_backbone_and_keep_each_head_tensor():
    params = {"backbone": {"conv": {"kernel": np.full((2, 2), 1.0)},
                           "bn": {"scale": np.array([3.0, 4.0])}},
              "heads": {"level0": {"kernel": np.array([[0.0, 5.0]]), "bias": np.zeros(2)},
                        "level1": {"kernel": np.array([[1.0, 2.0], [2.0, 4.0]])}}}
    # backbone: sqrt(4 * 1 + 9 + 16) = sqrt(29); level1 kernel: sqrt(1 + 4 + 4 + 16) = 5.
    assert param_norms.group_norms(params) == pytest.approx({
        "backbone": np.sqrt(29.0), "heads/level0/kernel": 5.0, "heads/level0/bias": 0.0,
        "heads/level1/kernel": 5.0})


def test_norms_table_of_a_trained_cascade_run(tmp_path, capsys):
    train.train_and_evaluate(tiny_config(variant="OURS", num_steps=2), tmp_path / "run")
    capsys.readouterr()  # the training's own output
    param_norms.main([str(tmp_path / "run")])
    header, _, row = capsys.readouterr().out.strip().splitlines()
    assert header == ("| run | step | backbone | heads/level0/bias | heads/level0/kernel | "
                      "heads/level1/bias | heads/level1/kernel |")
    cells = row.strip("| ").split(" | ")
    assert cells[:2] == [str(tmp_path / "run"), "2"]
    backbone, bias0, kernel0, bias1, kernel1 = map(float, cells[2:])
    # Initialised kernels are far from 0; biases start at 0 and moved for 2 steps.
    assert min(backbone, kernel0, kernel1) > 1.0 and 0.0 <= min(bias0, bias1) < 1.0


def test_a_folder_that_is_no_run_is_an_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        param_norms.main([str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    # It names the argument given, not the config key of init_from (whose code it reuses).
    assert f"workdir = {str(tmp_path)!r}" in err and "init_from" not in err
