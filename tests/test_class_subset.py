"""Class subsets (config.data.class_subset) and the shipped CIFAR-100 transfer split."""

import numpy as np
import pytest

from hierjax import data, settings
from hierjax.data.class_subset import ClassSubset
from hierjax.data.sources import ArraySource
from hierjax.errors import DataError
from hierjax.hierarchy import Hierarchy, shipped


def test_transfer_split_partitions_every_superclass_two_and_three():
    full = shipped.load("cifar100/class_superclass")
    source = shipped.load("cifar100/transfer_source")
    target = shipped.load("cifar100/transfer_target")
    assert source.num_classes == (40, 20) and target.num_classes == (60, 20)
    names = list(full.class_names[0])
    assert not set(source.class_names[0]) & set(target.class_names[0])
    assert set(source.class_names[0]) | set(target.class_names[0]) == set(names)
    for subset, per_superclass in ((source, 2), (target, 3)):
        assert np.all(np.bincount(subset.ancestors[:, 1]) == per_superclass)
        for c, name in enumerate(subset.class_names[0]):  # the official superclass
            official = full.ancestors[names.index(name), 1]
            assert subset.class_names[1][subset.ancestors[c, 1]] == full.class_names[1][official]
    # The rule: per superclass, the two lowest official ids are the source classes.
    for s in range(20):
        ids = sorted(i for i in range(100) if full.ancestors[i, 1] == s)
        assert {names[i] for i in ids[:2]} <= set(source.class_names[0])


def _toy():
    hierarchy = Hierarchy.from_parents(["a", "b", "c", "d"], [0, 0, 1, 1], ["x", "y"])
    fine = np.array([0, 1, 2, 3, 2, 1, 0, 3, 3])
    images = np.arange(len(fine), dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8)
    return ArraySource(images, fine, hierarchy, "toy/train"), fine


def test_subset_keeps_its_classes_relabelled_by_name():
    source, fine = _toy()
    # Another tree over two of the classes, in another order, under one new parent.
    subset_tree = Hierarchy.from_parents(["d", "b"], [0, 0], ["all"])
    subset = ClassSubset(source, subset_tree)
    kept = [i for i, f in enumerate(fine) if f in (1, 3)]
    assert len(subset) == len(kept)
    for j, i in enumerate(kept):
        record = subset[j]
        assert record["image"][0, 0, 0] == i  # the same image
        want = 0 if fine[i] == 3 else 1  # "d" is class 0 of the subset, "b" class 1
        np.testing.assert_array_equal(record["labels"], [want, 0])
        np.testing.assert_array_equal(subset.labels_Nxh[j], [want, 0])


def test_subset_naming_unknown_classes_is_an_error():
    source, _ = _toy()
    with pytest.raises(DataError, match=r"\['zebra'\] .* not classes of toy/train"):
        ClassSubset(source, Hierarchy.from_parents(["a", "zebra"], [0, 0], ["all"]))


def test_cifar100_target_set_through_the_settings(tmp_path):
    from test_data import write_cifar  # the real on-disk format, 6 classes

    write_cifar(tmp_path)
    csv = tmp_path / "subset.csv"
    Hierarchy.from_parents(["bee", "wolf", "pear"], [1, 0, 1], ["big", "small"],
                           level_names=("class", "size")).to_csv(csv)
    s = settings.resolve(settings.set_keys(settings.base_config(), {
        "data.name": "cifar100", "data.data_dir": str(tmp_path),
        "data.class_subset": str(csv)}))
    train, test = data.build_sources(s.data)
    assert train.hierarchy.class_names[0] == ("bee", "wolf", "pear")
    assert set(train.labels_Nxh[:, 0]) <= {0, 1, 2} and len(test) <= 5
    np.testing.assert_array_equal(train.labels_Nxh[:, 1],
                                  np.array([1, 0, 1])[train.labels_Nxh[:, 0]])
    for i in range(len(train)):  # the image is the one of that class in the full set
        assert train[i]["labels"][0] == train.labels_Nxh[i, 0]
