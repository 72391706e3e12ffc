"""The transfer protocol of `python -m hierjax.benchmarks.variants --protocol=transfer`,
on a CIFAR-100 copy in the real on-disk format with every one of the 100 classes (a few
tiny images each): pretraining on the source classes, fine-tuning on the target ones
from it, the two-step constraint, cached result files and the table."""

import copy
import json

import numpy as np
import pytest

from hierjax.benchmarks import transfer, variants
from hierjax.errors import ConfigError
from hierjax.hierarchy import shipped
from helpers import tiny_config


@pytest.fixture(scope="module")
def cifar_all_classes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar100")
    full = shipped.load("cifar100/class_superclass")
    rng = np.random.default_rng(0)
    shards = {"train_0.npz": 6, "test.npz": 2}  # images per class
    for name, per_class in shards.items():
        fine = np.repeat(np.arange(100), per_class).astype(np.uint8)
        images = rng.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
        np.savez_compressed(directory / name, image=images, fine=fine,
                            coarse=full.ancestors[fine, 1].astype(np.uint8))
    meta = {"fine_names": list(full.class_names[0]), "coarse_names": list(full.class_names[1]),
            "fine_to_coarse": full.ancestors[:, 1].tolist(),
            "splits": {"train": ["train_0.npz"], "test": ["test.npz"]},
            "num_examples": {"train": 600, "test": 200}}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def _base(data_dir):
    return tiny_config(**{"data.name": "cifar100", "data.data_dir": str(data_dir),
                          "data.image_size": 32, "batch_size": 16, "num_steps": 0,
                          "num_epochs": 2, "eval_every_steps": 0})


def test_pretrain_then_finetune_and_two_steps(cifar_all_classes, tmp_path):
    base = _base(cifar_all_classes)
    pre = transfer.pretrain_config(base, epochs=1, lr=0.05)
    assert pre.variant == "SM" and pre.data.class_subset == transfer.SOURCE
    results = tmp_path / "results"
    variants.train_run(pre, tmp_path / "pretrain")
    pretrained = tmp_path / "pretrain"

    ours = variants.transfer_run(base, pretrained, "OURS", "OURS", {}, 0,
                                 tmp_path / "ours", results / "OURS" / "seed0.json")
    config = ours["config"]
    assert config["data.class_subset"] == transfer.TARGET
    assert config["data.val_fraction"] == transfer.VAL_FRACTION
    assert config["model.init_from"] == str(pretrained)
    assert config["loss.glm_weight"] == 0.8  # the paper's lambda: the backbone is trained
    assert set(ours["test"]) >= {"top1_from_fine/0", "top1_from_fine/1"} and ours["curve"]
    # 60 target classes x 2 test images each, evaluated once.
    assert ours["test"]["count"] == 120

    # Cached: the file is the result, nothing trains again.
    again = variants.transfer_run(base, pretrained, "OURS", "OURS", {}, 0,
                                  tmp_path / "elsewhere", results / "OURS" / "seed0.json")
    assert again == json.loads((results / "OURS" / "seed0.json").read_text())
    assert not (tmp_path / "elsewhere").exists()
    # ... but only for the settings it was trained with: a changed learning rate is an
    # error naming the file and the key, never the stale result.
    changed = copy.deepcopy(base)
    changed.optimizer.lr = 0.5
    with pytest.raises(ConfigError, match=r"seed0.json was trained with other settings "
                                          r"\(optimizer.lr: [0-9.]+ there, 0.5 now\)"):
        variants.transfer_run(changed, pretrained, "OURS", "OURS", {}, 0,
                              tmp_path / "elsewhere", results / "OURS" / "seed0.json")
    assert not (tmp_path / "elsewhere").exists()

    two = variants.transfer_run(base, pretrained, "CC two-step", "CC-2step", {}, 0,
                                tmp_path / "two", results / "CC" / "seed0.json")
    assert two["stage1_config"]["variant"] == "SM" and two["config"]["variant"] == "CC"
    assert two["config"]["model.init_from"] == str(tmp_path / "two" / "stage1")
    assert two["stage1_config"]["num_epochs"] + two["config"]["num_epochs"] == 2

    table = variants.transfer_table({"SM": [ours, ours], "OURS": [ours, ours]}, "SM")
    assert "| OURS | 2 |" in table and "0.00 ± 0.00" in table

    # A run that diverges is a result (recorded, cached, named in the table), not the end
    # of the sweep; the two-step form does not start stage 2 from a diverged stage 1.
    explode = copy.deepcopy(base)
    explode.optimizer.lr = 1e30
    bad = variants.transfer_run(explode, pretrained, "SM", "SM", {}, 1, tmp_path / "bad",
                                results / "SM" / "seed1.json")
    assert bad["test"] is None and bad["diverged"]["step"] >= 1
    assert "is not finite" in bad["diverged"]["reason"]
    assert json.loads((results / "SM" / "seed1.json").read_text())["diverged"] == bad["diverged"]
    bad2 = variants.transfer_run(explode, pretrained, "CC two-step", "CC-2step", {}, 1,
                                 tmp_path / "bad2", results / "CC" / "seed1.json")
    assert bad2["diverged"] and not (tmp_path / "bad2" / "stage2").exists()
    table = variants.transfer_table(
        {"SM": [{**ours, "seed": 0}, {**bad, "seed": 1}],
         "CC two-step": [{**bad2, "seed": 1}]}, "SM")
    sm, two_step = table.splitlines()[2:]
    assert sm.startswith(f"| SM (diverged: seed 1 at step {bad['diverged']['step']}) | 1 | ")
    assert two_step.startswith("| CC two-step (diverged: seed 1 at step ") and two_step.endswith(
        "| 0 | - | - | - | - | - | - | - | - |")


def test_study_runs_keep_one_cc_row_when_the_best_b_is_one():
    names = [n for n, _, _ in variants.transfer_study_runs("variants", "OURS", 1.0)]
    assert names.count("CC b=1") == 1 and "CC two-step" in names
    assert [n for n, _, _ in variants.transfer_study_runs("b", "OURS", 2.0)] == [
        "b=0.5", "b=1", "b=2", "b=4"]
