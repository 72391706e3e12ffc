"""The file-backed input: samplers, decoding/augmentation, the grain pipeline, training on
a dataset prepared from an archive in the official CUB layout."""

import io
import pathlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from hierjax import config_lib, data, prepare, train
from hierjax.data import files, images
from hierjax.data.sampler import HierarchicalSampler, batch_sibling_stats, build_sampler
from hierjax.hierarchy import Hierarchy
from official_archives import write_cub

CUB_CLASSES = (0, 1, 2, 36, 37, 83, 150, 199)  # several families and orders


@pytest.fixture(scope="module")
def cub_dir(tmp_path_factory):
    """A tfds folder with hierjax_cub prepared from a tiny official-layout archive."""
    root = tmp_path_factory.mktemp("cub")
    expected = write_cub(root, classes=CUB_CLASSES, per_class=6)
    assert prepare.main(["cub", f"--manual_dir={root}", f"--data_dir={root / 'tfds'}"]) == 0
    return root / "tfds", expected


def labelled(fine_N, parents):
    """A minimal source for samplers: labels_Nxh from fine labels and a parent list."""
    fine_N = np.asarray(fine_N)
    source = ml_collections.ConfigDict()
    source.labels_Nxh = np.stack([fine_N, np.asarray(parents)[fine_N]], 1)
    source.name = "toy"

    class Toy:
        labels_Nxh = source.labels_Nxh
        name = "toy"

        def __len__(self):
            return len(fine_N)

    return Toy()


# --- samplers -------------------------------------------------------------------------

def test_hierarchical_sampler_batch_composition():
    # 12 fine classes in 4 groups of 3 (group 3 has only 1 class), 10 images each.
    parents = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    parents[9:] = [3, 2, 2]  # group 3: class 9 only; group 2: classes 6, 7, 8, 10, 11
    source = labelled(np.repeat(np.arange(12), 10), parents)
    sampler = HierarchicalSampler(p=2, q=2, k=3)
    order = sampler(source, seed=0, epoch=0)
    assert len(order) == (120 // 12) * 12
    for batch in order.reshape(-1, 12):
        fine, group = source.labels_Nxh[batch, 0], source.labels_Nxh[batch, 1]
        assert len(set(group)) == 2
        for g in set(group):
            classes, counts = np.unique(fine[group == g], return_counts=True)
            if g == 3:  # fewer classes than Q: the one class fills both slots
                assert list(classes) == [9] and list(counts) == [6]
            else:
                assert len(classes) == 2 and set(counts) == {3}
        siblings = batch_sibling_stats(source.labels_Nxh[batch])["with_sibling"]
        assert siblings == (2 / 3 if 3 in group else 1.0)  # class 9 has no sibling
    np.testing.assert_array_equal(order, sampler(source, seed=0, epoch=0))
    assert not np.array_equal(order, sampler(source, seed=0, epoch=1))
    # Images of a class are used in turn: none twice before all were used once.
    counts = np.bincount(order, minlength=120)
    for c in range(12):
        used = counts[c * 10:(c + 1) * 10]
        assert used.max() - used.min() <= 1 or used.min() >= 1


def test_batch_sibling_stats_hand_worked():
    # classes 0, 1 (group 0), 2 (group 1), 0 again: 3 distinct classes, 2 with a sibling.
    stats = batch_sibling_stats(np.array([[0, 0], [1, 0], [2, 1], [0, 0]]))
    assert stats == {"with_sibling": pytest.approx(2 / 3), "classes": 3.0}


def test_build_sampler_checks_the_batch_size():
    config = config_lib.base_config().data
    assert build_sampler(config, 32) is data.shuffled_order
    config.sampler = "hierarchical"
    config.sampler_pqk = (2, 2, 2)
    assert build_sampler(config, 8).batch_size == 8
    with pytest.raises(ValueError, match=r"sampler_pqk = \(2, 2, 2\) makes batches of 8"):
        build_sampler(config, 16)
    config.sampler = "balanced"
    with pytest.raises(ValueError, match="config.data.sampler = 'balanced'"):
        build_sampler(config, 8)
    with pytest.raises(ValueError, match="only 1 classes at level 1"):
        HierarchicalSampler(2, 1, 1)(labelled(np.arange(4), [0, 0, 0, 0]), seed=0, epoch=0)


def test_in_memory_iterator_takes_the_hierarchical_sampler():
    train_source, _ = data.make_synthetic(8, 2, train_size=64, test_size=8, image_size=8)
    iterator = data.TrainIterator(train_source, global_batch_size=8, num_devices=2, seed=1,
                                  sampler=HierarchicalSampler(p=2, q=2, k=2))
    batch = next(iterator)
    labels = batch["labels"].reshape(8, -1)
    assert batch["image"].shape == (2, 4, 8, 8, 3)
    assert len(set(labels[:, 1])) == 2 and len(set(map(tuple, labels))) == 4


# --- decoding and augmentation ----------------------------------------------------------

def encoded(array, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_eval_image_is_resize_then_centre_crop():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 60, 3), dtype=np.uint8)
    out = images.eval_image(encoded(array), size=16, resize=20)
    # By hand: shorter side 30 -> 20 gives 20 x 40; the centre 16 x 16 window. Only the
    # window is resampled, which matches to within PIL's fixed-point rounding.
    reference = np.asarray(Image.fromarray(array).resize((40, 20), Image.BILINEAR,
                                                         reducing_gap=None))
    difference = np.abs(out.astype(int) - reference[2:18, 12:28])
    assert out.shape == (16, 16, 3) and difference.max() <= 1


def test_box_crop_keeps_the_object():
    array = np.zeros((40, 60, 3), np.uint8)
    array[10:30, 30:60] = (255, 0, 0)  # the object: rows 10..29, columns 30..59
    box = np.array([10 / 40, 30 / 60, 30 / 40, 1.0], np.float32)
    out = images.eval_image(encoded(array), size=8, resize=8, box=box)
    assert out.shape == (8, 8, 3) and (out[..., 0] > 250).all() and (out[..., 1:] < 5).all()


def test_train_crops_are_seeded_and_flip():
    array = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3))
    raw = encoded(array)
    for crop in images.TRAIN_CROPS:
        def run(seed):
            return images.train_image(raw, np.random.default_rng(seed), size=24, resize=32,
                                      crop=crop, min_scale=0.3)
        outs = [run(s) for s in range(8)]
        assert all(o.shape == (24, 24, 3) and o.dtype == np.uint8 for o in outs)
        np.testing.assert_array_equal(outs[0], run(0))
        # The ramp rises left to right, or right to left when flipped: both occur.
        directions = {np.sign(int(o[0, -1, 0]) - int(o[0, 0, 0])) for o in outs}
        assert directions == {-1, 1}
    with pytest.raises(ValueError, match="config.data.train_crop = 'centre'"):
        images.train_image(raw, np.random.default_rng(0), size=8, resize=8, crop="centre",
                           min_scale=0.5)


def test_draft_decoding_keeps_enough_pixels():
    array = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    image = images.decode(encoded(array, "JPEG"), min_short_side=90)
    assert 90 <= min(image.size) < 400  # decoded at a reduced DCT scale, not below 90


# --- the grain pipeline on a prepared dataset -------------------------------------------

def test_tfds_source_reads_the_prepared_records(cub_dir):
    tfds_dir, expected = cub_dir
    source = files.TfdsSource("cub", str(tfds_dir), "train", "species_genus_family_order")
    assert len(source) == len(expected["train"]) and source.hierarchy.num_levels == 4
    fine = sorted(label for _, label, _, _ in expected["train"])
    assert sorted(source.labels_Nxh[:, 0]) == fine
    np.testing.assert_array_equal(source.labels_Nxh,
                                  source.hierarchy.labels_for(source.labels_Nxh[:, 0]))
    with pytest.raises(ValueError, match="config.data.hierarchy = 'genus'.*species_family_order"):
        files.TfdsSource("cub", str(tfds_dir), "train", "genus")
    with pytest.raises(ValueError, match="no split 'val'.*train, test|no split 'val'.*test, train"):
        files.TfdsSource("cub", str(tfds_dir), "val")
    with pytest.raises(FileNotFoundError, match="python -m hierjax.prepare cub"):
        files.TfdsSource("cub", str(tfds_dir / "elsewhere"), "train")


def _take(iterator, n):
    batches = [next(iterator) for _ in range(n)]
    iterator.close()
    return batches


@pytest.mark.parametrize("sampler", ["shuffle", "hierarchical"])
def test_grain_batches_are_deterministic_and_resume(cub_dir, sampler):
    tfds_dir, _ = cub_dir
    source = files.TfdsSource("cub", str(tfds_dir), "train")  # 24 images
    settings = files.ImageSettings(size=16, resize=20)
    order = (data.shuffled_order if sampler == "shuffle"
             else HierarchicalSampler(p=2, q=1, k=2))

    def iterator(workers):
        return files.GrainTrainIterator(source, settings, global_batch_size=4, num_devices=2,
                                        seed=3, num_workers=workers, sampler=order)

    straight = _take(iterator(0), 9)  # 6 steps per epoch: crosses an epoch boundary
    assert straight[0]["image"].shape == (2, 2, 16, 16, 3)
    assert straight[0]["labels"].shape == (2, 2, 3)
    with_workers = _take(iterator(2), 9)
    for a, b in zip(straight, with_workers):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    resumed = iterator(2)
    resumed.set_state({"epoch": 1, "batch_in_epoch": 1})  # = batch 7 of the run
    for a, b in zip(straight[7:], _take(resumed, 2)):
        np.testing.assert_array_equal(a["image"], b["image"])
    if sampler == "shuffle":  # an epoch is a permutation of the 24 images
        epoch_labels = np.concatenate([b["labels"].reshape(4, 3) for b in straight[:6]])
        assert sorted(epoch_labels[:, 0]) == sorted(source.labels_Nxh[:, 0])


def test_grain_eval_covers_every_example_once(cub_dir):
    tfds_dir, expected = cub_dir
    source = files.TfdsSource("cub", str(tfds_dir), "test")
    settings = files.ImageSettings(size=16, resize=16, use_bbox=True)
    for workers in (0, 2):
        batches = list(files.grain_eval_batches(source, settings, global_batch_size=10,
                                                num_devices=2, num_workers=workers))
        assert len(batches) == -(-len(source) // 10)
        valid = np.concatenate([b["valid"].reshape(-1) for b in batches])
        labels = np.concatenate([b["labels"].reshape(-1, 3) for b in batches])[valid]
        assert valid.sum() == len(source) == len(expected["test"])
        np.testing.assert_array_equal(labels, source.labels_Nxh)


def test_image_folder_source(tmp_path):
    hierarchy = Hierarchy.from_parents(["wren", "robin", "gull"], [0, 0, 1],
                                       ["passerine", "seabird"], level_names=("bird", "group"))
    csv = tmp_path / "birds.csv"
    hierarchy.to_csv(csv)
    rng = np.random.default_rng(0)
    for name, count in (("wren", 2), ("gull", 3)):
        folder = tmp_path / "images" / "train" / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{i}.jpg").write_bytes(
                encoded(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "JPEG"))
    (tmp_path / "images" / "train" / "wren" / "notes.txt").write_text("not an image")
    source = files.ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    assert len(source) == 5
    np.testing.assert_array_equal(source.labels_Nxh, [[2, 1]] * 3 + [[0, 0]] * 2)
    assert source[0]["image"] == (tmp_path / "images/train/gull/0.jpg").read_bytes()
    (tmp_path / "images" / "train" / "eagle").mkdir()
    with pytest.raises(ValueError, match=r"\['eagle'\].*not fine classes of"):
        files.ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    with pytest.raises(FileNotFoundError, match="no folder .*test"):
        files.ImageFolderSource(str(tmp_path / "images"), "test", str(csv))


def test_subset_partitions_between_processes(cub_dir):
    tfds_dir, _ = cub_dir
    source = files.TfdsSource("cub", str(tfds_dir), "train")
    shards = [files.subset(source, max_examples=0, process_index=p, num_processes=3)
              for p in range(3)]
    assert sum(len(s) for s in shards) == len(source)
    labels = np.concatenate([s.labels_Nxh for s in shards])
    np.testing.assert_array_equal(labels, source.labels_Nxh)
    head = files.subset(source, max_examples=len(CUB_CLASSES), process_index=0,
                        num_processes=1)
    assert sorted(head.labels_Nxh[:, 0]) == sorted(CUB_CLASSES)  # one of every class


# --- training on it ---------------------------------------------------------------------

def cub_config(tfds_dir, **overrides):
    config = config_lib.finetune_config("cub", "species_family_order")
    config_lib.apply_variant(config, "OURS")
    config.data.data_dir = str(tfds_dir)
    config.data.image_size = 16
    config.data.num_workers = 0
    config.model.name = "resnet18"
    config.model.dtype = "float32"
    config.batch_size = 8
    config.num_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.async_checkpoints = False
    config.optimizer.warmup_epochs = 0.0
    return config_lib.set_keys(config, overrides)


def test_training_on_a_prepared_cub_resumes_mid_epoch(cub_dir, tmp_path):
    tfds_dir, expected = cub_dir
    # A constant learning rate, so 2 steps + 2 resumed ones follow the 4-step schedule.
    constant = {"optimizer.schedule": "step", "optimizer.decay_epochs": ()}
    train.train_and_evaluate(cub_config(tfds_dir, **constant, **{"num_steps": 2}),
                             tmp_path / "split")
    resumed = train.train_and_evaluate(cub_config(tfds_dir, **constant), tmp_path / "split")
    straight = train.train_and_evaluate(cub_config(tfds_dir, **constant), tmp_path / "straight")
    assert resumed["count"] == straight["count"] == len(expected["test"])
    assert {"top1/0", "top1/1", "top1/2", "mistake_severity"} <= set(resumed)
    for key in resumed:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, err_msg=key)
    again = train.train_and_evaluate(cub_config(tfds_dir, **{"data.use_bbox": True}),
                                     tmp_path / "straight")
    assert again["count"] == straight["count"]  # finished: evaluates only, with boxes


def test_cub_runlocal_config_builds_its_input(cub_dir):
    tfds_dir, _ = cub_dir
    config = config_lib.finalize(config_lib.finetune_config("cub", "suffix"),
                                 config_lib.parse_arg("runlocal", runlocal=False,
                                                      variant="OURS"))
    config.data.data_dir = str(tfds_dir)
    config.batch_size = 8
    inputs = data.build_input(config, num_devices=2)
    assert inputs.hierarchy.num_classes == (200, 70) and inputs.image_shape == (64, 64, 3)
    batch = next(inputs.train)
    inputs.train.close()
    assert batch["image"].shape == (2, 4, 64, 64, 3) and batch["labels"].shape == (2, 4, 2)
    np.testing.assert_allclose(data.normalization(config.data)[0], data.build.IMAGENET_MEAN)
    config.data.eval_resize = 32
    with pytest.raises(ValueError, match="config.data.eval_resize = 32 is smaller"):
        data.build_input(config, num_devices=2)
