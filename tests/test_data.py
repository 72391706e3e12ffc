import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from hierjax.data import (
    ArraySource,
    Prefetch,
    TrainIterator,
    augment_train,
    build_datasets,
    crop_and_flip,
    eval_batches,
    load_cifar100,
    make_synthetic,
    normalization,
    num_eval_batches,
    shard_for_process,
)
from hierjax.hierarchy import Hierarchy

CIFAR100 = Path(__file__).parents[1] / ".." / "shared" / "data" / "cifar100"

# A 6-class, 3-superclass stand-in for CIFAR-100 in the exact on-disk format.
FINE_NAMES = ["apple", "bear", "bee", "beetle", "pear", "wolf"]
COARSE_NAMES = ["fruit", "insects", "large_carnivores"]
FINE_TO_COARSE = [0, 2, 1, 1, 0, 2]
SHARD_SIZES = {"train_0.npz": 7, "train_1.npz": 7, "train_2.npz": 6, "test.npz": 5}


def write_cifar(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Shards + meta.json like the real copy; returns each shard's (images, fine)."""
    rng = np.random.default_rng(0)
    shards = {}
    for name, n in SHARD_SIZES.items():
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, len(FINE_NAMES), n).astype(np.uint8)
        coarse = np.array(FINE_TO_COARSE, np.uint8)[fine]
        np.savez_compressed(directory / name, image=images, fine=fine, coarse=coarse)
        shards[name] = images, fine
    meta = {
        "fine_names": FINE_NAMES,
        "coarse_names": COARSE_NAMES,
        "fine_to_coarse": FINE_TO_COARSE,
        "splits": {"train": ["train_0.npz", "train_1.npz", "train_2.npz"], "test": ["test.npz"]},
        "num_examples": {"train": 20, "test": 5},
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    return shards


def toy_source(n=50, num_fine=6, size=8, seed=0) -> ArraySource:
    """Images whose first pixel holds the example index, so batches can be traced."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    hierarchy = Hierarchy.from_parents(
        [f"f{i}" for i in range(num_fine)], np.arange(num_fine) % 2, ["even", "odd"]
    )
    return ArraySource(images, np.arange(n) % num_fine, hierarchy, "toy")


def ids(batch) -> np.ndarray:
    """The example index of every row of an unaugmented batch, flattened."""
    return batch["image"][..., 0, 0, 0].reshape(-1)


# --- CIFAR-100 loader -------------------------------------------------------------


def test_cifar100_loads_shards_in_order_with_labels_and_hierarchy(tmp_path):
    shards = write_cifar(tmp_path)
    train = load_cifar100(tmp_path, "train")
    test = load_cifar100(str(tmp_path), "test")
    assert (len(train), len(test)) == (20, 5)
    assert train.image_shape == (32, 32, 3) and train.name == "cifar100/train"
    assert train.hierarchy.level_names == ("class", "superclass")
    assert train.hierarchy.num_classes == (6, 3)
    assert train.hierarchy.class_names == (tuple(FINE_NAMES), tuple(COARSE_NAMES))
    batch = train.read(np.arange(20))
    images = np.concatenate([shards[f"train_{i}.npz"][0] for i in range(3)])
    fine = np.concatenate([shards[f"train_{i}.npz"][1] for i in range(3)])
    np.testing.assert_array_equal(batch["image"], images)
    assert batch["labels"].dtype == np.int32 and batch["labels"].shape == (20, 2)
    np.testing.assert_array_equal(batch["labels"][:, 0], fine)
    np.testing.assert_array_equal(batch["labels"][:, 1], np.array(FINE_TO_COARSE)[fine])
    np.testing.assert_array_equal(test.read([4, 0])["image"], shards["test.npz"][0][[4, 0]])


def test_cifar100_rejects_coarse_labels_that_disagree_with_meta(tmp_path):
    write_cifar(tmp_path)
    with np.load(tmp_path / "train_1.npz") as npz:
        arrays = dict(npz)
    arrays["coarse"][3] = (arrays["coarse"][3] + 1) % 3
    np.savez_compressed(tmp_path / "train_1.npz", **arrays)
    with pytest.raises(ValueError, match=r"train_1\.npz.*row 3"):
        load_cifar100(tmp_path, "train")
    load_cifar100(tmp_path, "test")  # the other split is fine


def test_cifar100_rejects_a_count_that_disagrees_with_meta(tmp_path):
    write_cifar(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["num_examples"]["train"] = 50000
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"20 examples \(train_0\.npz: 7, .*says 50000"):
        load_cifar100(tmp_path, "train")


def test_cifar100_missing_directory_or_shard_says_where_and_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_cifar100(tmp_path / "nowhere", "train")
    message = str(error.value)
    assert str((tmp_path / "nowhere" / "meta.json").resolve()) in message
    assert "../shared/data/cifar100" in message and "--config.data.data_dir=" in message
    write_cifar(tmp_path)
    (tmp_path / "train_2.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_2\.npz"):
        load_cifar100(tmp_path, "train")
    with pytest.raises(ValueError, match="no split 'val'"):
        load_cifar100(tmp_path, "val")


def test_cifar100_max_examples_is_a_deterministic_take_of_every_class(tmp_path):
    write_cifar(tmp_path)
    full = load_cifar100(tmp_path, "train")
    fine = full.labels_Nxh[:, 0]
    small = load_cifar100(tmp_path, "train", max_examples=8)
    assert len(small) == 8
    assert set(small.labels_Nxh[:, 0]) == set(fine)  # every class present
    # The first example of each class, then second ones in file order, order kept.
    firsts = [int(np.flatnonzero(fine == c)[0]) for c in np.unique(fine)]
    seconds = sorted(
        int(np.flatnonzero(fine == c)[1]) for c in np.unique(fine) if (fine == c).sum() > 1
    )
    keep = np.sort(firsts + seconds[: 8 - len(firsts)])
    np.testing.assert_array_equal(small.images_NxHxWxC, full.images_NxHxWxC[keep])
    np.testing.assert_array_equal(small.labels_Nxh, full.labels_Nxh[keep])
    assert len(load_cifar100(tmp_path, "train", max_examples=100)) == 20


def test_real_cifar100_test_split():
    if not (CIFAR100 / "meta.json").exists():
        pytest.skip(f"the offline CIFAR-100 copy is not at {CIFAR100.resolve()}")
    test = load_cifar100(CIFAR100, "test")
    assert len(test) == 10_000 and test.image_shape == (32, 32, 3)
    assert test.hierarchy.num_classes == (100, 20)
    assert test.hierarchy.level_names == ("class", "superclass")
    labels = test.labels_Nxh
    np.testing.assert_array_equal(np.bincount(labels[:, 0], minlength=100), 100)
    np.testing.assert_array_equal(labels[:, 1], test.hierarchy.coarse_of(1)[labels[:, 0]])
    mean, std = normalization(ml_collections.ConfigDict({"name": "cifar100"}))
    pixels = test.images_NxHxWxC.reshape(-1, 3) / 255
    np.testing.assert_allclose(pixels.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(pixels.std(0), std, atol=0.01)


# --- augmentation ------------------------------------------------------------------


def test_crop_and_flip_matches_a_per_example_loop():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
    offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [3, 5], [8, 1]])
    flips = np.array([False, True, False, True, True, False])
    out = crop_and_flip(images, offsets, flips, pad=4)
    assert out.shape == images.shape and out.dtype == np.uint8
    for image, (oy, ox), flip, got in zip(images, offsets, flips, out):
        padded = np.zeros((16, 18, 3), np.uint8)
        padded[4:12, 4:14] = image
        crop = padded[oy : oy + 8, ox : ox + 10]
        np.testing.assert_array_equal(got, crop[:, ::-1] if flip else crop)
    np.testing.assert_array_equal(out[2], images[2])  # centre crop, no flip: identity
    np.testing.assert_array_equal(out[0, :4], 0)  # the top rows come from the zero pad


def test_augment_train_returns_crops_of_the_zero_padded_image_and_flips_half():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (400, 6, 6, 3), dtype=np.uint8)  # no zeros: pad shows
    out = augment_train(images, np.random.default_rng(2), pad=2)
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    seen, flipped = set(), 0
    for image, got in zip(padded, out):
        matches = [
            (oy, ox, flip)
            for oy in range(5)
            for ox in range(5)
            for flip in (False, True)
            if np.array_equal(got, image[oy : oy + 6, ox : ox + 6][:, :: -1 if flip else 1])
        ]
        assert matches, "not a (flipped) crop of the padded image"
        seen.add(matches[0][:2])
        flipped += matches[0][2]
    assert len(seen) == 25  # every offset in 0..2 * pad occurs
    assert 150 < flipped < 250
    unflipped = augment_train(images, np.random.default_rng(2), pad=0, flip=False)
    np.testing.assert_array_equal(unflipped, images)
    again = augment_train(images, np.random.default_rng(2), pad=2)
    np.testing.assert_array_equal(again, out)


# --- training batches ---------------------------------------------------------------


def test_train_iterator_shapes_and_one_pass_over_the_data_per_epoch():
    source = toy_source(n=50)
    it = TrainIterator(source, global_batch_size=8, num_devices=2, seed=0, augment=False)
    assert it.steps_per_epoch == 6  # 48 of 50 examples; the last partial batch is dropped
    batch = next(it)
    assert batch["image"].shape == (2, 4, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["labels"].shape == (2, 4, 2) and batch["labels"].dtype == np.int32
    expected_labels = source.read(ids(batch))["labels"].reshape(2, 4, 2)
    np.testing.assert_array_equal(batch["labels"], expected_labels)
    for epoch in range(2):
        seen = np.concatenate([ids(batch)] + [ids(next(it)) for _ in range(5)])
        assert len(set(seen)) == 48, f"epoch {epoch} repeats an example"
        batch = next(it)
    assert it.get_state() == {"epoch": 2, "batch_in_epoch": 1}


def test_train_iterator_is_deterministic_and_seeds_differ():
    source = toy_source(n=40)

    def first_batches(seed, augment):
        it = TrainIterator(
            source, global_batch_size=8, num_devices=1, seed=seed, augment=augment
        )
        return [next(it) for _ in range(7)]  # into the second epoch

    for augment in (False, True):
        a, b, c = first_batches(3, augment), first_batches(3, augment), first_batches(4, augment)
        for x, y in zip(a, b):
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        assert not np.array_equal(a[0]["image"], c[0]["image"])
    # Epochs are shuffled differently.
    epoch_0 = np.concatenate([ids(batch) for batch in first_batches(3, False)[:5]])
    epoch_1 = ids(first_batches(3, False)[5])
    assert not np.array_equal(epoch_0[:8], epoch_1)


@pytest.mark.parametrize("consumed", [3, 5, 6, 12])  # mid-epoch, last batch, boundaries
def test_train_iterator_resumes_exactly_from_its_state(consumed):
    source = toy_source(n=50)
    settings = dict(global_batch_size=8, num_devices=2, seed=7)
    reference = TrainIterator(source, **settings)
    for _ in range(consumed):
        next(reference)
    state = json.loads(json.dumps(reference.get_state()))  # survives a JSON checkpoint
    resumed = TrainIterator(source, **settings)
    resumed.set_state(state)
    for _ in range(8):  # across the next epoch boundary
        expected, got = next(reference), next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["labels"], expected["labels"])


def test_train_iterator_errors_name_the_config_key():
    source = toy_source(n=20)
    with pytest.raises(ValueError, match=r"config\.batch_size=10 .*multiple .*\(4\)"):
        TrainIterator(source, global_batch_size=10, num_devices=4, seed=0)
    with pytest.raises(ValueError, match=r"config\.batch_size=32 is larger .*20 examples"):
        TrainIterator(source, global_batch_size=32, num_devices=1, seed=0)
    it = TrainIterator(source, global_batch_size=8, num_devices=1, seed=0)
    with pytest.raises(ValueError, match="batch_in_epoch in 0..1"):
        it.set_state({"epoch": 0, "batch_in_epoch": 2})
    with pytest.raises(ValueError, match="keys"):
        it.set_state({"step": 3})


def test_prefetch_yields_the_same_batches_and_the_state_of_consumed_ones():
    source = toy_source(n=50)
    settings = dict(global_batch_size=8, num_devices=2, seed=1)
    plain = TrainIterator(source, **settings)
    prefetched = Prefetch(TrainIterator(source, **settings), buffer_size=3)
    try:
        for _ in range(4):
            np.testing.assert_array_equal(next(prefetched)["image"], next(plain)["image"])
        assert prefetched.get_state() == plain.get_state() == {"epoch": 0, "batch_in_epoch": 4}
        prefetched.set_state({"epoch": 0, "batch_in_epoch": 1})
        plain.set_state({"epoch": 0, "batch_in_epoch": 1})
        for _ in range(7):
            np.testing.assert_array_equal(next(prefetched)["image"], next(plain)["image"])
        assert prefetched.get_state() == plain.get_state()
    finally:
        prefetched.close()


class Failing:
    """Two batches, then an error: a stand-in for a broken reader."""

    def __init__(self):
        self.step = 0

    def get_state(self):
        return {"step": self.step}

    def __next__(self):
        if self.step == 2:
            raise OSError("disk gone")
        self.step += 1
        return self.step


def test_prefetch_reraises_the_worker_error_after_the_good_batches():
    prefetched = Prefetch(Failing())
    assert [next(prefetched), next(prefetched)] == [1, 2]
    with pytest.raises(OSError, match="disk gone"):
        next(prefetched)
    assert prefetched.get_state() == {"step": 2}


# --- evaluation batches --------------------------------------------------------------


def test_eval_batches_cover_every_example_once_in_order_with_padding_masked():
    source = toy_source(n=21)
    batches = list(eval_batches(source, global_batch_size=8, num_devices=2))
    assert len(batches) == num_eval_batches(21, 8) == 3
    for batch in batches:
        assert batch["image"].shape == (2, 4, 8, 8, 3)
        assert batch["labels"].shape == (2, 4, 2)
        assert batch["valid"].shape == (2, 4) and batch["valid"].dtype == bool
    valid = np.concatenate([b["valid"].reshape(-1) for b in batches])
    np.testing.assert_array_equal(valid, np.arange(24) < 21)
    rows = np.concatenate([ids(b) for b in batches])[valid]
    np.testing.assert_array_equal(rows, np.arange(21))
    labels = np.concatenate([b["labels"].reshape(-1, 2) for b in batches])[valid]
    np.testing.assert_array_equal(labels, source.labels_Nxh)
    # A batch larger than the data set is one padded batch.
    (single,) = eval_batches(source, global_batch_size=32, num_devices=4)
    assert single["valid"].sum() == 21
    with pytest.raises(ValueError, match=r"config\.batch_size=6"):
        eval_batches(source, global_batch_size=6, num_devices=4)


def test_process_shards_partition_the_examples_for_evaluation():
    source = toy_source(n=23)
    assert shard_for_process(source, 0, 1) is source
    shards = [shard_for_process(source, p, 3) for p in range(3)]
    assert [len(shard) for shard in shards] == [7, 8, 8]
    assert shards[1].hierarchy == source.hierarchy and shards[1].image_shape == (8, 8, 3)
    rows = [
        ids(batch)[batch["valid"].reshape(-1)]
        for shard in shards
        for batch in eval_batches(shard, global_batch_size=4, num_devices=2)
    ]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(23))
    with pytest.raises(IndexError, match=r"toy\[7:15\]"):
        shards[1].read([8])


# --- synthetic data --------------------------------------------------------------------


def nearest_class_mean_accuracy(train, test, level) -> float:
    x_train = train.images_NxHxWxC.reshape(len(train), -1) / 255
    x_test = test.images_NxHxWxC.reshape(len(test), -1) / 255
    y_train, y_test = train.labels_Nxh[:, level], test.labels_Nxh[:, level]
    means = np.stack([x_train[y_train == c].mean(0) for c in range(y_train.max() + 1)])
    distances = (x_test**2).sum(1, keepdims=True) - 2 * x_test @ means.T + (means**2).sum(1)
    return float((distances.argmin(1) == y_test).mean())


def test_synthetic_is_deterministic_hierarchical_and_learnable():
    train, test = make_synthetic(20, 5, train_size=2000, test_size=400, seed=0)
    assert (len(train), len(test)) == (2000, 400)
    assert train.image_shape == (32, 32, 3) and train.images_NxHxWxC.dtype == np.uint8
    assert train.hierarchy.level_names == ("fine", "coarse")
    assert train.hierarchy.num_classes == (20, 5)
    assert test.hierarchy == train.hierarchy
    np.testing.assert_array_equal(np.bincount(train.labels_Nxh[:, 0]), 100)  # balanced
    again, _ = make_synthetic(20, 5, train_size=2000, test_size=400, seed=0)
    np.testing.assert_array_equal(again.images_NxHxWxC, train.images_NxHxWxC)
    np.testing.assert_array_equal(again.labels_Nxh, train.labels_Nxh)
    other, _ = make_synthetic(20, 5, train_size=2000, test_size=400, seed=1)
    assert not np.array_equal(other.images_NxHxWxC, train.images_NxHxWxC)
    fine = nearest_class_mean_accuracy(train, test, 0)
    coarse = nearest_class_mean_accuracy(train, test, 1)
    assert fine > 0.4, f"fine accuracy {fine} (chance 0.05)"
    assert coarse > 0.8 and coarse > fine, f"coarse accuracy {coarse} (chance 0.2)"
    mean, std = normalization(ml_collections.ConfigDict({"name": "synthetic"}))
    pixels = train.images_NxHxWxC.reshape(-1, 3) / 255
    np.testing.assert_allclose(pixels.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(pixels.std(0), std, atol=0.03)


def test_synthetic_sizes_and_uneven_groups():
    train, test = make_synthetic(7, 3, train_size=10, test_size=3, image_size=16, seed=2)
    assert train.image_shape == (16, 16, 3) and len(test) == 3
    np.testing.assert_array_equal(train.hierarchy.coarse_of(1), [0, 0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="synthetic_num_coarse=8"):
        make_synthetic(4, 8)


# --- building by config ------------------------------------------------------------------


def data_config(**overrides) -> ml_collections.ConfigDict:
    config = dict(
        name="synthetic",
        data_dir="",
        max_train_examples=0,
        max_eval_examples=0,
        synthetic_num_fine=6,
        synthetic_num_coarse=2,
        synthetic_train_size=60,
        synthetic_test_size=30,
        image_size=16,
    )
    return ml_collections.ConfigDict(config | overrides)


def test_build_datasets_by_name(tmp_path):
    train, test = build_datasets(data_config(max_eval_examples=12))
    assert (len(train), len(test)) == (60, 12) and train.image_shape == (16, 16, 3)
    assert set(test.labels_Nxh[:, 0]) == set(range(6))
    write_cifar(tmp_path)
    cifar = data_config(
        name="cifar100", data_dir=str(tmp_path), image_size=8, max_train_examples=9
    )
    train, test = build_datasets(cifar)
    assert (len(train), len(test)) == (9, 5) and train.hierarchy.num_classes == (6, 3)
    assert train.image_shape == (32, 32, 3)  # image_size is a synthetic-only key
    with pytest.raises(ValueError, match=r"config\.data\.name = 'cub' is not an in-memory"):
        build_datasets(data_config(name="cub"))
    with pytest.raises(ValueError, match=r"config\.data\.name='imagenet'.*'synthetic'.*'cub'"):
        normalization(data_config(name="imagenet"))
    with pytest.raises(ValueError, match=r"config\.data\.max_train_examples=-1"):
        build_datasets(data_config(max_train_examples=-1))
    mean, std = normalization(data_config(name="cifar100"))
    np.testing.assert_allclose(mean, [0.507075, 0.486549, 0.440918], rtol=1e-6)
    np.testing.assert_allclose(std, [0.267334, 0.256438, 0.276150], rtol=1e-6)
