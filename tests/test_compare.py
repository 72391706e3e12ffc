"""`python -m hierjax.benchmarks.compare`: runs from different result folders (each
variant at its own settings) against a baseline folder, paired by seed; hand-worked
numbers."""

import json

import pytest

from hierjax.benchmarks import compare


def write(folder, config, top1s, diverged=()):
    folder.mkdir(parents=True)
    for seed, top1 in enumerate(top1s):
        result = ({"test": None, "val": {}, "diverged": {"step": 34, "reason": "step 34: nan"}}
                  if seed in diverged else
                  {"test": {"top1_from_fine/0": top1}, "val": {"top1_from_fine/0": top1 + 0.01}})
        (folder / f"seed{seed}.json").write_text(json.dumps({**result, "config": config}))
    return folder


def test_rows_name_the_settings_apart_and_pair_gains_by_seed(tmp_path, capsys):
    sm = write(tmp_path / "lr0.1" / "SM", {"variant": "SM", "seed": 0, "optimizer.lr": 0.1,
                                            "optimizer.head_lr_multiplier": 10.0,
                                            "data.data_dir": "/here"}, [0.40, 0.50, 0.45])
    ours = write(tmp_path / "heads1" / "OURS",
                 {"variant": "OURS", "seed": 0, "optimizer.lr": 0.1, "loss.glm_weight": 0.8,
                  "optimizer.head_lr_multiplier": 1.0, "optimizer.grad_clip_norm": 5.0,
                  "data.data_dir": "/elsewhere"}, [0.42, 0.53, 0.46])
    bad = write(tmp_path / "lr1" / "SC-CSM", {"variant": "SC-CSM", "optimizer.lr": 1.0,
                                              "optimizer.head_lr_multiplier": 10.0},
                [0.0], diverged={0})
    table = compare.compare_table(compare.load_folders(sm, [ours, bad]))
    base_row, ours_row, bad_row = table.splitlines()[2:]
    # SM: mean 45, std 5, t(0.975, 2) = 4.303: 4.303 * 5 / sqrt(3) = 12.42.
    assert base_row == f"| {sm} | SM | (baseline) | 3 | 45.00 ± 12.42 | 46.00 ± 12.42 | - |"
    # OURS: 42, 53, 46: mean 47, std sqrt(62 / 2) = 5.568 -> 4.303 * 5.568 / sqrt(3) = 13.83.
    # Gains 2, 3, 1: mean 2, std 1 -> 4.303 / sqrt(3) = 2.48; the data path is not a setting.
    assert ours_row == (f"| {ours} | OURS | optimizer.grad_clip_norm 5.0; "
                        "optimizer.head_lr_multiplier 1.0 | 3 | 47.00 ± 13.83 | "
                        "48.00 ± 13.83 | 2.00 ± 2.48 |")
    # Keys a file lacks (written before they existed) have their defaults on both sides.
    assert bad_row == (f"| {bad} (diverged: seed 0 at step 34) | SC-CSM | optimizer.lr 1.0 | "
                       "0 | - | - | - |")

    compare.main([str(ours), f"--baseline={sm}"])
    assert "| 2.00 ± 2.48 |" in capsys.readouterr().out


def test_a_folder_without_results_is_an_error_naming_it(tmp_path, capsys):
    sm = write(tmp_path / "SM", {"variant": "SM"}, [0.4])
    with pytest.raises(SystemExit) as exit_:
        compare.main([str(tmp_path / "typo"), f"--baseline={sm}"])
    assert exit_.value.code == 2
    assert f"{tmp_path / 'typo'}: no seed*.json result files" in capsys.readouterr().err


def test_forest_rows_are_the_folders_with_two_paired_seeds(tmp_path):
    from PIL import Image

    sm = write(tmp_path / "SM", {"variant": "SM", "optimizer.lr": 0.1}, [0.40, 0.50, 0.45])
    ours = write(tmp_path / "OURS", {"variant": "OURS", "optimizer.lr": 0.03},
                 [0.42, 0.53, 0.46])
    one_seed = write(tmp_path / "CC", {"variant": "CC", "optimizer.lr": 0.1}, [0.47])
    half_diverged = write(tmp_path / "SC", {"variant": "SC-CSM", "optimizer.lr": 0.1},
                          [0.0, 0.51, 0.0], diverged={0, 2})
    rows = compare.forest_rows(compare.load_folders(sm, [ours, one_seed, half_diverged]))
    # OURS: gains 2, 3, 1 -> 2.00 ± 2.48 (as in the table); the others pair one seed or none.
    assert [(label, n) for label, n, _, _ in rows] == [("OURS: optimizer.lr 0.03", 3)]
    assert rows[0][2:] == pytest.approx((2.0, 2.484), abs=1e-3)

    compare.forest_plot(compare.load_folders(sm, [ours, one_seed, half_diverged]),
                        tmp_path / "forest.png")
    with Image.open(tmp_path / "forest.png") as image:
        assert image.size[0] > 600
