"""The input pipeline: the CIFAR-100 npz reader, synthetic data, the per-record
augmentation, the grain chain (determinism, resume, workers, evaluation passes),
process shards, device prefetch and building by settings."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from hierjax import settings
from hierjax.data import (
    ArraySource,
    EvalInput,
    TrainInput,
    build_input,
    build_sources,
    normalization,
    num_eval_batches,
    shard,
    take,
)
from hierjax.data.cifar100_npz import load_cifar100
from hierjax.data.synthetic import make_synthetic
from hierjax.data.transforms import EvalTransform, ImageSettings, TrainTransform, pad_crop_flip
from hierjax.hierarchy import Hierarchy
from hierjax.prefetch import DevicePrefetch, replicate
from hierjax.train_step import AXIS
import grain

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


def read(source, indices):
    """dict(image [n, ...], labels [n, h]) of the records at indices."""
    records = [source[int(i)] for i in indices]
    return {"image": np.stack([r["image"] for r in records]),
            "labels": np.stack([r["labels"] for r in records])}


def ids(batch) -> np.ndarray:
    """The example index of every row of an unaugmented batch, flattened."""
    return batch["image"][..., 0, 0, 0].reshape(-1)


class Unaugmented(grain.transforms.Map):
    """A train transform that keeps the images as they are, to trace the order."""

    def map(self, record):
        return {"image": record["image"], "labels": record["labels"]}


PAD_CROP = ImageSettings(size=8, resize=9, train_crop="pad_crop")


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
    batch = read(train, np.arange(20))
    images = np.concatenate([shards[f"train_{i}.npz"][0] for i in range(3)])
    fine = np.concatenate([shards[f"train_{i}.npz"][1] for i in range(3)])
    np.testing.assert_array_equal(batch["image"], images)
    assert batch["labels"].dtype == np.int32 and batch["labels"].shape == (20, 2)
    np.testing.assert_array_equal(batch["labels"][:, 0], fine)
    np.testing.assert_array_equal(batch["labels"][:, 1], np.array(FINE_TO_COARSE)[fine])
    np.testing.assert_array_equal(read(test, [4, 0])["image"], shards["test.npz"][0][[4, 0]])


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
    assert take(full, 8).indices.tolist() == small.indices.tolist()
    assert len(small) == 8
    assert set(small.labels_Nxh[:, 0]) == set(fine)  # every class present
    # The first example of each class, then second ones in file order, order kept.
    firsts = [int(np.flatnonzero(fine == c)[0]) for c in np.unique(fine)]
    seconds = sorted(
        int(np.flatnonzero(fine == c)[1]) for c in np.unique(fine) if (fine == c).sum() > 1
    )
    keep = np.sort(firsts + seconds[: 8 - len(firsts)])
    np.testing.assert_array_equal(read(small, range(8))["image"], full.images_NxHxWxC[keep])
    np.testing.assert_array_equal(small.labels_Nxh, full.labels_Nxh[keep])
    assert len(load_cifar100(tmp_path, "train", max_examples=100)) == 20


def test_cifar100_test_split_and_its_statistics(tmp_path):
    """The real copy: 10,000 images, 100 per class, the official tree, and the per-channel
    statistics hierjax normalises with. Without the copy: the same loader on a written
    copy, and the statistics recomputed from it."""
    if (CIFAR100 / "meta.json").exists():
        test = load_cifar100(CIFAR100, "test")
        assert len(test) == 10_000 and test.hierarchy.num_classes == (100, 20)
        np.testing.assert_array_equal(np.bincount(test.labels_Nxh[:, 0], minlength=100), 100)
        mean, std = normalization(settings.DataSettings(name="cifar100"))
    else:
        write_cifar(tmp_path)
        test = load_cifar100(tmp_path, "test")
        assert len(test) == 5 and test.hierarchy.num_classes == (6, 3)
        pixels = test.images_NxHxWxC.reshape(-1, 3) / 255
        mean, std = pixels.mean(0), pixels.std(0)
    assert test.image_shape == (32, 32, 3)
    assert test.hierarchy.level_names == ("class", "superclass")
    labels = test.labels_Nxh
    np.testing.assert_array_equal(labels[:, 1], test.hierarchy.coarse_of(1)[labels[:, 0]])
    pixels = test.images_NxHxWxC.reshape(-1, 3) / 255
    np.testing.assert_allclose(pixels.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(pixels.std(0), std, atol=0.01)


# --- augmentation ------------------------------------------------------------------


def test_pad_crop_flip_gives_every_crop_of_the_zero_padded_image_and_flips_half():
    rng = np.random.default_rng(1)
    image = rng.integers(1, 256, (6, 6, 3), dtype=np.uint8)  # no zeros: the pad shows
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    seen, flipped = set(), 0
    for i in range(1000):
        got = pad_crop_flip(image, np.random.default_rng([7, i]))
        assert got.shape == image.shape and got.dtype == np.uint8 and got.flags.c_contiguous
        matches = [(oy, ox, flip) for oy in range(9) for ox in range(9) for flip in (0, 1)
                   if np.array_equal(got, padded[oy:oy + 6, ox:ox + 6][:, ::-1 if flip else 1])]
        assert matches, "not a (flipped) crop of the padded image"
        seen.add(matches[0][:2])
        flipped += matches[0][2]
    assert len(seen) == 81  # every offset in 0..2 * pad occurs
    assert 400 < flipped < 600
    again = pad_crop_flip(image, np.random.default_rng([7, 3]))
    np.testing.assert_array_equal(again, pad_crop_flip(image, np.random.default_rng([7, 3])))


def test_train_transform_depends_on_the_seed_and_the_global_record_number():
    record = toy_source(n=1)[0]
    transform = TrainTransform(PAD_CROP, seed=3)
    images = [transform.map({**record, "g": g})["image"] for g in range(20)]
    assert len({image.tobytes() for image in images}) > 10
    np.testing.assert_array_equal(transform.map({**record, "g": 5})["image"], images[5])
    other = TrainTransform(PAD_CROP, seed=4).map({**record, "g": 5})["image"]
    assert not all(np.array_equal(other, TrainTransform(PAD_CROP, seed=4).map(
        {**record, "g": g})["image"]) for g in (4, 6))


# --- training batches ---------------------------------------------------------------


def train_input(source, *, batch=8, devices=2, seed=0, workers=0, transform=None):
    return TrainInput(source, transform or Unaugmented(), batch_size=batch,
                      num_devices=devices, seed=seed, num_workers=workers)


def test_train_batches_shapes_and_one_pass_over_the_data_per_epoch():
    source = toy_source(n=50)
    it = train_input(source)
    assert it.steps_per_epoch == 6  # 48 of 50 examples; the last partial batch is dropped
    batch = next(it)
    assert batch["image"].shape == (2, 4, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["labels"].shape == (2, 4, 2) and batch["labels"].dtype == np.int32
    np.testing.assert_array_equal(batch["labels"],
                                  read(source, ids(batch))["labels"].reshape(2, 4, 2))
    for epoch in range(2):
        seen = np.concatenate([ids(batch)] + [ids(next(it)) for _ in range(5)])
        assert len(set(seen)) == 48, f"epoch {epoch} repeats an example"
        batch = next(it)
    assert it.get_state() == {"epoch": 2, "batch_in_epoch": 1}
    it.close()


def first_batches(source, n, **kwargs):
    it = train_input(source, **kwargs)
    try:
        return [next(it) for _ in range(n)]
    finally:
        it.close()


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_batches_are_deterministic_and_seeds_differ():
    source = toy_source(n=40)
    augment = TrainTransform(PAD_CROP, seed=3)
    for transform in (None, augment):
        a = first_batches(source, 7, seed=3, transform=transform)  # into the second epoch
        assert_same(a, first_batches(source, 7, seed=3, transform=transform))
        c = first_batches(source, 7, seed=4, transform=transform)
        assert not np.array_equal(a[0]["image"], c[0]["image"])
    # Epochs are shuffled differently.
    batches = first_batches(source, 6, seed=3)
    assert not np.array_equal(ids(batches[0]), ids(batches[5]))


def test_batches_do_not_depend_on_the_number_of_worker_processes():
    source = toy_source(n=40)
    augment = TrainTransform(PAD_CROP, seed=3)
    in_process = first_batches(source, 7, seed=3, transform=augment)
    assert_same(in_process, first_batches(source, 7, seed=3, transform=augment, workers=2))


@pytest.mark.parametrize("consumed", [3, 5, 6, 12])  # mid-epoch, last batch, boundaries
def test_train_batches_resume_exactly_from_their_state(consumed):
    source = toy_source(n=50)
    transform = TrainTransform(PAD_CROP, seed=7)
    reference = train_input(source, seed=7, transform=transform)
    for _ in range(consumed):
        next(reference)
    state = json.loads(json.dumps(reference.get_state()))  # survives a JSON checkpoint
    resumed = train_input(source, seed=7, transform=transform)
    resumed.set_state(state)
    assert_same([next(reference) for _ in range(8)],  # across the next epoch boundary
                [next(resumed) for _ in range(8)])
    reference.close()
    resumed.close()


def test_train_input_errors_name_the_config_key():
    source = toy_source(n=20)
    with pytest.raises(ValueError, match=r"config\.batch_size=10 .*multiple .*\(4\)"):
        train_input(source, batch=10, devices=4)
    with pytest.raises(ValueError, match=r"config\.batch_size = 32 .*is larger .*20 examples"):
        train_input(source, batch=32, devices=1)
    it = train_input(source, devices=1)
    with pytest.raises(ValueError, match="batch_in_epoch in 0..1"):
        it.set_state({"epoch": 0, "batch_in_epoch": 2})
    with pytest.raises(ValueError, match="keys"):
        it.set_state({"step": 3})


def test_device_prefetch_yields_the_batches_and_the_state_of_consumed_ones():
    source = toy_source(n=50)
    devices = jax.local_devices()[:2]
    plain = train_input(source, seed=1)
    prefetched = DevicePrefetch(train_input(source, seed=1), devices=devices, size=3)
    for _ in range(4):
        batch = next(prefetched)
        assert [shard.device for shard in batch["image"].addressable_shards] == devices
        np.testing.assert_array_equal(np.asarray(batch["image"]), next(plain)["image"])
    assert prefetched.get_state() == plain.get_state() == {"epoch": 0, "batch_in_epoch": 4}
    plain.close()


def test_replicated_state_keeps_the_compiled_step():
    """A state from `replicate` is laid out like the step's output, so feeding the output
    back does not compile the step a second time (flax.jax_utils.replicate's layout did:
    10 s of a small WRN's start-up on this CPU)."""
    compiles = []

    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    step = jax.pmap(lambda s: {"w": s["w"] + jax.lax.pmean(s["w"], AXIS),
                               "count": s["count"] * 2}, axis_name=AXIS, donate_argnums=(0,))
    state = replicate({"w": np.ones((2, 3), np.float32), "count": np.int32(1)})
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        state = step(state)
        first = len(compiles)
        for _ in range(3):
            state = step(state)
        jax.block_until_ready(state)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first >= 1 and len(compiles) == first
    np.testing.assert_array_equal(np.asarray(state["count"]), [16] * jax.local_device_count())


# --- evaluation batches --------------------------------------------------------------


def eval_input(source, *, batch=8, devices=2, workers=0):
    return EvalInput(source, EvalTransform(PAD_CROP), batch_size=batch, num_devices=devices,
                     num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_batches_cover_every_example_once_in_order_with_padding_masked(workers):
    source = toy_source(n=21)
    inputs = eval_input(source, workers=workers)
    assert inputs.num_batches == num_eval_batches(21, 8) == 3
    for _ in range(3):  # every pass the same; workers are started once
        batches = list(inputs.batches())
        assert len(batches) == 3
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
    # A pass abandoned half-way: the next one still starts at the first example.
    next(inputs.batches())
    assert ids(next(inputs.batches()))[0] == 0
    inputs.close()
    # A batch larger than the data set is one padded batch.
    (single,) = eval_input(source, batch=32, devices=4).batches()
    assert single["valid"].sum() == 21
    with pytest.raises(ValueError, match=r"config\.batch_size=6"):
        eval_input(source, batch=6, devices=4)


def test_process_shards_partition_the_examples_for_evaluation():
    source = toy_source(n=23)
    assert shard(source, 0, 1) is source
    shards = [shard(source, p, 3) for p in range(3)]
    assert [len(s) for s in shards] == [7, 8, 8]
    assert shards[1].hierarchy == source.hierarchy and shards[1].image_shape == (8, 8, 3)
    rows = [ids(batch)[batch["valid"].reshape(-1)]
            for s in shards for batch in eval_input(s, batch=4).batches()]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(23))
    with pytest.raises(IndexError, match=r"toy\[7:15\]"):
        shards[1][8]


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
    mean, std = normalization(settings.DataSettings(name="synthetic"))
    pixels = train.images_NxHxWxC.reshape(-1, 3) / 255
    np.testing.assert_allclose(pixels.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(pixels.std(0), std, atol=0.03)


def test_synthetic_sizes_and_uneven_groups():
    train, test = make_synthetic(7, 3, train_size=10, test_size=3, image_size=16, seed=2)
    assert train.image_shape == (16, 16, 3) and len(test) == 3
    np.testing.assert_array_equal(train.hierarchy.coarse_of(1), [0, 0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="synthetic_num_coarse=8"):
        make_synthetic(4, 8)


# --- building by settings ----------------------------------------------------------


def data_settings(**overrides) -> settings.Settings:
    values = {"data.synthetic_num_fine": 6, "data.synthetic_num_coarse": 2,
              "data.synthetic_train_size": 60, "data.synthetic_test_size": 30,
              "data.image_size": 16, "batch_size": 8, **overrides}
    return settings.resolve(settings.set_keys(settings.base_config(), values))


def test_build_sources_and_input_by_name(tmp_path):
    train, test = build_sources(data_settings(**{"data.max_eval_examples": 12}).data)
    assert (len(train), len(test)) == (60, 12) and train.image_shape == (16, 16, 3)
    assert set(test.labels_Nxh[:, 0]) == set(range(6))
    write_cifar(tmp_path)
    cifar = data_settings(**{"data.name": "cifar100", "data.data_dir": str(tmp_path),
                             "data.image_size": 32, "data.max_train_examples": 9})
    train, test = build_sources(cifar.data)
    assert (len(train), len(test)) == (9, 5) and train.hierarchy.num_classes == (6, 3)
    inputs = build_input(cifar, num_devices=2)
    assert inputs.image_shape == (32, 32, 3) and inputs.train.steps_per_epoch == 1
    assert next(inputs.train)["image"].shape == (2, 4, 32, 32, 3)
    inputs.close()
    wrong_size = data_settings(**{"data.name": "cifar100", "data.data_dir": str(tmp_path),
                                  "data.image_size": 24})
    with pytest.raises(settings.ConfigError, match=r"config\.data\.image_size = 24 but "
                                                   r"cifar100/train holds 32 x 32"):
        build_input(wrong_size, num_devices=1)
    wrong_crop = data_settings(**{"data.train_crop": "resize_random"})
    with pytest.raises(settings.ConfigError, match="held in memory as arrays; use 'pad_crop'"):
        build_input(wrong_crop, num_devices=1)
    with pytest.raises(settings.ConfigError, match=r"config\.data\.data_dir is empty"):
        build_sources(data_settings(**{"data.name": "cub"}).data)
    mean, std = normalization(cifar.data)
    np.testing.assert_allclose(mean, [0.507075, 0.486549, 0.440918], rtol=1e-6)
    np.testing.assert_allclose(std, [0.267334, 0.256438, 0.276150], rtol=1e-6)
