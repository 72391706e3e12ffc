"""The file-backed input: samplers, decoding/augmentation, the grain pipeline, training on
a dataset prepared from an archive in the official CUB layout."""

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from hierjax import data, prepare, recipes, settings, train
from hierjax.data import images as images_lib
from hierjax.data.folder_source import ImageFolderSource
from hierjax.data.sampler import HierarchicalSampler, batch_sibling_stats, build_sampler
from hierjax.data.sources import shard, take
from hierjax.data.tfds_source import TfdsSource
from hierjax.errors import DataError
from hierjax.data.transforms import EvalTransform, ImageSettings, TrainTransform
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
    data_settings = settings.DataSettings()
    assert build_sampler(data_settings, 32) is data.shuffled_order
    pqk = settings.DataSettings(sampler="hierarchical", sampler_pqk=(2, 2, 2))
    assert build_sampler(pqk, 8).batch_size == 8
    with pytest.raises(settings.ConfigError, match=r"sampler_pqk = \(2, 2, 2\) makes batches of 8"):
        build_sampler(pqk, 16)
    with pytest.raises(ValueError, match="only 1 classes at level 1"):
        HierarchicalSampler(2, 1, 1)(labelled(np.arange(4), [0, 0, 0, 0]), seed=0, epoch=0)


def test_in_memory_source_takes_the_hierarchical_sampler():
    s = settings.resolve(settings.set_keys(settings.base_config(), {
        "data.synthetic_num_fine": 8, "data.synthetic_num_coarse": 2,
        "data.synthetic_train_size": 64, "data.synthetic_test_size": 8,
        "data.image_size": 8, "batch_size": 8, "data.sampler": "hierarchical",
        "data.sampler_pqk": (2, 2, 2)}))
    inputs = data.build_input(s, num_devices=2)
    batch = next(inputs.train)
    inputs.close()
    labels = batch["labels"].reshape(8, -1)
    assert batch["image"].shape == (2, 4, 8, 8, 3)
    assert len(set(labels[:, 1])) == 2 and len(set(map(tuple, labels))) == 4


def encoded(array, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# --- the grain pipeline on a prepared dataset -------------------------------------------

def test_tfds_source_reads_the_prepared_records(cub_dir):
    tfds_dir, expected = cub_dir
    source = TfdsSource("cub", str(tfds_dir), "train", "species_genus_family_order")
    assert len(source) == len(expected["train"]) and source.hierarchy.num_levels == 4
    fine = sorted(label for _, label, _, _ in expected["train"])
    assert sorted(source.labels_Nxh[:, 0]) == fine
    np.testing.assert_array_equal(source.labels_Nxh,
                                  source.hierarchy.labels_for(source.labels_Nxh[:, 0]))
    with pytest.raises(ValueError, match="config.data.hierarchy = 'genus'.*species_family_order"):
        TfdsSource("cub", str(tfds_dir), "train", "genus")
    with pytest.raises(ValueError, match="no split 'val'.*train, test|no split 'val'.*test, train"):
        TfdsSource("cub", str(tfds_dir), "val")
    with pytest.raises(FileNotFoundError, match="python -m hierjax.prepare cub"):
        TfdsSource("cub", str(tfds_dir / "elsewhere"), "train")


def _take(iterator, n):
    batches = [next(iterator) for _ in range(n)]
    iterator.close()
    return batches


@pytest.mark.parametrize("sampler", ["shuffle", "hierarchical"])
def test_file_batches_are_deterministic_and_resume(cub_dir, sampler):
    tfds_dir, _ = cub_dir
    source = TfdsSource("cub", str(tfds_dir), "train")  # 24 images
    images = ImageSettings(size=16, resize=20)
    order = (data.shuffled_order if sampler == "shuffle"
             else HierarchicalSampler(p=2, q=1, k=2))

    def train_input(workers):
        return data.TrainInput(source, TrainTransform(images, seed=3), batch_size=4,
                               num_devices=2, seed=3, num_workers=workers, sampler=order)

    straight = _take(train_input(0), 9)  # 6 steps per epoch: crosses an epoch boundary
    assert straight[0]["image"].shape == (2, 2, 16, 16, 3)
    assert straight[0]["labels"].shape == (2, 2, 3)
    with_workers = _take(train_input(2), 9)
    for a, b in zip(straight, with_workers):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    resumed = train_input(2)
    resumed.set_state({"epoch": 1, "batch_in_epoch": 1})  # = batch 7 of the run
    for a, b in zip(straight[7:], _take(resumed, 2)):
        np.testing.assert_array_equal(a["image"], b["image"])
    if sampler == "shuffle":  # an epoch is a permutation of the 24 images
        epoch_labels = np.concatenate([b["labels"].reshape(4, 3) for b in straight[:6]])
        assert sorted(epoch_labels[:, 0]) == sorted(source.labels_Nxh[:, 0])


def test_file_eval_covers_every_example_once_cropped_to_its_box(cub_dir):
    tfds_dir, expected = cub_dir
    source = TfdsSource("cub", str(tfds_dir), "test")
    boxed = ImageSettings(size=16, resize=16, use_bbox=True)
    # The archive's boxes are not the whole image, so the crop changes what is seen.
    assert not np.allclose(np.stack([source[i]["bbox"] for i in range(len(source))]),
                           [0, 0, 1, 1])
    for workers in (0, 2):
        inputs = data.EvalInput(source, EvalTransform(boxed), batch_size=10, num_devices=2,
                                num_workers=workers)
        batches = list(inputs.batches())
        inputs.close()
        assert len(batches) == -(-len(source) // 10)
        valid = np.concatenate([b["valid"].reshape(-1) for b in batches])
        images = np.concatenate([b["image"].reshape(-1, 16, 16, 3) for b in batches])[valid]
        labels = np.concatenate([b["labels"].reshape(-1, 3) for b in batches])[valid]
        assert valid.sum() == len(source) == len(expected["test"])
        np.testing.assert_array_equal(labels, source.labels_Nxh)
        # Each example is its stored image cropped to its stored box, then resized.
        for i, image in enumerate(images):
            record = source[i]
            want = images_lib.eval_image(record["image"], size=16, resize=16,
                                         box=record["bbox"])
            np.testing.assert_array_equal(image, want)
            whole = images_lib.eval_image(record["image"], size=16, resize=16)
            assert not np.array_equal(image, whole)


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
    with pytest.raises(DataError, match="1 classes of .* have no images: robin"):
        ImageFolderSource(str(tmp_path / "images"), "train", str(csv))
    source = ImageFolderSource(str(tmp_path / "images"), "train", str(csv),
                               allow_missing_classes=True)
    assert len(source) == 5
    np.testing.assert_array_equal(source.labels_Nxh, [[2, 1]] * 3 + [[0, 0]] * 2)
    assert source[0]["image"] == (tmp_path / "images/train/gull/0.jpg").read_bytes()
    (tmp_path / "images" / "train" / "eagle").mkdir()
    with pytest.raises(ValueError, match=r"\['eagle'\].*not fine classes of"):
        ImageFolderSource(str(tmp_path / "images"), "train", str(csv),
                          allow_missing_classes=True)
    with pytest.raises(FileNotFoundError, match="no folder .*test"):
        ImageFolderSource(str(tmp_path / "images"), "test", str(csv))


def test_shards_and_heads_of_a_file_source(cub_dir):
    tfds_dir, _ = cub_dir
    source = TfdsSource("cub", str(tfds_dir), "train")
    shards = [shard(source, p, 3) for p in range(3)]
    assert sum(len(s) for s in shards) == len(source)
    labels = np.concatenate([s.labels_Nxh for s in shards])
    np.testing.assert_array_equal(labels, source.labels_Nxh)
    head = take(source, len(CUB_CLASSES))
    assert sorted(head.labels_Nxh[:, 0]) == sorted(CUB_CLASSES)  # one of every class


# --- training on it ---------------------------------------------------------------------

def cub_config(tfds_dir, **overrides):
    config = recipes.finetune("cub", "species_family_order")
    return settings.set_keys(config, {
        "variant": "OURS", "data.data_dir": str(tfds_dir), "data.image_size": 16,
        "model.pretrained": "none",
        "data.num_workers": 0, "model.name": "wrn", "model.wrn_depth": 10,
        "model.wrn_width": 1, "model.dtype": "float32",
        "batch_size": 8, "num_steps": 4, "log_every_steps": 2, "eval_every_steps": 2,
        "checkpoint_every_steps": 2, "async_checkpoints": False,
        "optimizer.warmup_epochs": 0.0, **overrides})


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


def test_cub_runlocal_config_builds_its_input(cub_dir):
    tfds_dir, _ = cub_dir
    config = recipes.finish(recipes.finetune("cub", "suffix"),
                            recipes.parse_arg("runlocal", runlocal=False, variant="OURS"))
    settings.set_keys(config, {"data.data_dir": str(tfds_dir), "batch_size": 8,
                               "model.pretrained": "none"})
    inputs = data.build_input(settings.resolve(config), num_devices=2)
    assert inputs.hierarchy.num_classes == (200, 70) and inputs.image_shape == (64, 64, 3)
    batch = next(inputs.train)
    inputs.close()
    assert batch["image"].shape == (2, 4, 64, 64, 3) and batch["labels"].shape == (2, 4, 2)
    np.testing.assert_allclose(data.normalization(settings.resolve(config).data)[0],
                               data.build.IMAGENET_MEAN)
