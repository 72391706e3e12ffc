"""The TF-free tfds builders, end to end on tiny archives in the official layouts.

Each dataset's archive(s) are written by `official_archives`, prepared through the
`python -m hierjax.prepare` entry point and read back with `hierjax.prepare.builder`;
every stored example is compared with what was written (bytes, labels, boxes).
"""

from __future__ import annotations

import io
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import official_archives as oa
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from hierjax import prepare, settings
from hierjax.hierarchy import shipped as hierarchies
from hierjax.prepare import common, nabirds
from hierjax.hierarchy import Hierarchy

WRITERS = {
    "aircraft": oa.write_aircraft,
    "cars": oa.write_cars,
    "cifar100": oa.write_cifar100,
    "cub": oa.write_cub,
    "dogs": oa.write_dogs,
    "nabirds": oa.write_nabirds,
}
NAMES = sorted(WRITERS)

# The NABirds tree of oa.NABIRDS_CLASSES, worked out by hand: fine classes in id order
# 95, 500, 817, 1005; parents and groups numbered in sorted name order.
NABIRDS_TREE = Hierarchy(
    ("class", "parent", "group"),
    (("Eastern Phoebe", "Mallard", "Red-tailed Hawk (Adult)", "Red-tailed Hawk (Immature)"),
     ("Ducks, Geese, and Swans", "Red-tailed Hawk", "Tyrant Flycatchers"),
     ("Ducks, Geese, and Swans", "Hawks, Kites, Eagles, and Allies", "Perching Birds")),
    np.array([[0, 2, 2], [1, 0, 0], [2, 1, 1], [3, 1, 1]]),
)


def shipped_hierarchies(name: str) -> dict[str, Hierarchy]:
    """The hierarchies each dataset must store, by the name they are stored under."""
    if name == "nabirds":
        return {"class_parent_group": NABIRDS_TREE}
    short = {"aircraft": ["variant_family_manufacturer"], "cars": ["model_bodytype"],
             "cifar100": ["class_superclass"], "dogs": ["suffix"],
             "cub": ["species_family_order", "species_genus_family_order", "suffix"]}[name]
    return {h: hierarchies.load(f"{name}/{h}") for h in short}


def run_prepare(name: str, manual: Path, data: Path) -> int:
    return prepare.main([name, f"--manual_dir={manual}", f"--data_dir={data}"])


def write(name: str, root: Path, **kwargs):
    """The official archive(s) of `name` in root/manual; (manual dir, expected)."""
    manual = root / "manual"
    manual.mkdir(parents=True)
    return manual, WRITERS[name](manual, **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """name -> (data_dir, manual_dir, expected) of a prepared tiny dataset (made once)."""
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            manual, expected = write(name, root)
            assert run_prepare(name, manual, root / "data") == 0
            cache[name] = (root / "data", manual, expected)
        return cache[name]

    return get


def archived_file(manual: Path, filename: str) -> bytes:
    """The bytes of the one archive member named `filename` (or ending in /filename)."""
    found = [data for archive in manual.iterdir() if archive.suffix in (".tar", ".tgz", ".gz")
             for member, data in oa.read_tar(archive).items()
             if member == filename or member.endswith("/" + filename)]
    assert len(found) == 1, filename
    return found[0]


def cifar_pixels(manual: Path, split: str) -> np.ndarray:
    batch = pickle.loads(oa.read_tar(manual / "cifar-100-python.tar.gz")[
        f"cifar-100-python/{split}"], encoding="bytes")
    return batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def assert_same_hierarchy(found: Hierarchy, expected: Hierarchy):
    assert found.level_names == expected.level_names
    assert found.class_names == expected.class_names
    np.testing.assert_array_equal(found.ancestors, expected.ancestors)


@pytest.mark.parametrize("name", NAMES)
def test_prepared_examples_match_the_archive(name, prepared):
    data_dir, manual, expected = prepared(name)
    builder = prepare.builder(name, str(data_dir))
    trees = shipped_hierarchies(name)
    fine_names = next(iter(trees.values())).class_names[0]
    assert builder.info.features["label"].names == list(fine_names)
    assert set(builder.info.splits) == set(expected) == set(builder.SPLITS)
    for split, rows in expected.items():
        assert builder.info.splits[split].num_examples == len(rows)
        source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        stored = {ex["filename"].decode(): ex for ex in (source[i] for i in range(len(source)))}
        assert sorted(stored) == sorted(row[0] for row in rows)
        for index, (filename, fine, (x0, y0, x1, y1), (width, height)) in enumerate(rows):
            ex = stored[filename]
            assert ex["label"] == fine, filename
            for tree_name, tree in trees.items():
                np.testing.assert_array_equal(ex["labels"][tree_name], tree.ancestors[fine])
            np.testing.assert_allclose(
                ex["bbox"], [y0 / height, x0 / width, y1 / height, x1 / width], atol=1e-6)
            if name == "cifar100":  # stored as PNG: lossless, so the pixels are equal
                pixels = np.asarray(Image.open(io.BytesIO(ex["image"])))
                np.testing.assert_array_equal(pixels, cifar_pixels(manual, split)[index])
            else:  # stored as published, not re-encoded
                assert ex["image"] == archived_file(manual, filename), filename


@pytest.mark.parametrize("name", NAMES)
def test_metadata_rebuilds_the_hierarchies(name, prepared):
    data_dir, _, _ = prepared(name)
    builder = prepare.builder(name, str(data_dir))
    found = common.hierarchies_from_metadata(builder.info.metadata, str(data_dir))
    expected = shipped_hierarchies(name)
    assert list(found) == list(expected)
    for tree_name, tree in expected.items():
        assert_same_hierarchy(found[tree_name], tree)


def test_list_names_every_dataset_and_archive(capsys):
    assert prepare.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in prepare.BUILDERS:
        assert f"{name}:" in out
        for archive in prepare.builder_class(name).ARCHIVES:
            assert archive in out


def test_mock_data_gives_the_example_shapes_without_tensorflow(tmp_path):
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        source = prepare.builder_class("aircraft")(data_dir=tmp_path).as_data_source("val")
        assert len(source) == 2
        ex = source[0]
    assert ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
    assert ex["bbox"].shape == (4,)
    assert ex["labels"]["variant_family_manufacturer"].shape == (3,)
    assert "tensorflow.python" not in sys.modules


# --- errors: each must stop preparation with a message that says what to do ---------

def failed_prepare(name, manual, data, capsys) -> str:
    """stderr of a preparation that must fail, after checking nothing was left prepared."""
    assert run_prepare(name, manual, data) == 1
    with pytest.raises(FileNotFoundError, match="not prepared"):
        prepare.builder(name, str(data))
    return capsys.readouterr().err


# The archive whose absence, truncation or damage each error test exercises.
MAIN_ARCHIVE = {"aircraft": "fgvc-aircraft-2013b.tar.gz", "cars": "cars_train.tgz",
                "cifar100": "cifar-100-python.tar.gz", "cub": "CUB_200_2011.tgz",
                "dogs": "images.tar", "nabirds": "nabirds.tar.gz"}
# A table member of an archive, and that archive.
TABLE = {"aircraft": ("fgvc-aircraft-2013b.tar.gz", "fgvc-aircraft-2013b/data/images_box.txt"),
         "cars": ("car_devkit.tgz", "devkit/cars_meta.mat"),
         "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python/meta"),
         "cub": ("CUB_200_2011.tgz", "CUB_200_2011/bounding_boxes.txt"),
         "dogs": ("lists.tar", "test_list.mat"),
         "nabirds": ("nabirds.tar.gz", "nabirds/hierarchy.txt")}


@pytest.mark.parametrize("name", NAMES)
def test_missing_archive_is_named(name, tmp_path, capsys):
    manual, _ = write(name, tmp_path)
    for archive in prepare.builder_class(name).ARCHIVES:  # each one, in turn
        shutil.move(manual / archive, tmp_path / archive)
        err = failed_prepare(name, manual, tmp_path / "data", capsys)
        assert archive in err and "official archive" in err and "--manual_dir" in err
        shutil.move(tmp_path / archive, manual / archive)


@pytest.mark.parametrize("name", NAMES)
def test_truncated_archive(name, tmp_path, capsys):
    manual, _ = write(name, tmp_path)
    path = manual / MAIN_ARCHIVE[name]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    err = failed_prepare(name, manual, tmp_path / "data", capsys)
    assert MAIN_ARCHIVE[name] in err
    assert "truncated" in err or "incomplete" in err


@pytest.mark.parametrize("name", NAMES)
def test_archive_lacking_a_table(name, tmp_path, capsys):
    manual, _ = write(name, tmp_path)
    archive, member = TABLE[name]
    oa.rewrite_tar(manual / archive, lambda files: {
        m: d for m, d in files.items() if m != member})
    err = failed_prepare(name, manual, tmp_path / "data", capsys)
    assert f"has no {member}" in err and "official file" in err


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"cifar100"}))
def test_archive_lacking_an_image(name, tmp_path, capsys):
    manual, expected = write(name, tmp_path)
    first = expected["test"][0][0]
    archive = "cars_test.tgz" if name == "cars" else MAIN_ARCHIVE[name]
    oa.rewrite_tar(manual / archive, lambda files: {
        m: d for m, d in files.items() if not (m == first or m.endswith("/" + first))})
    err = failed_prepare(name, manual, tmp_path / "data", capsys)
    assert "test images but the archive holds" in err and "incomplete" in err
    # The missing file is named, with its class.
    assert "missing: " in err and first in err and "(class " in err, err


@pytest.mark.parametrize("name, rename", [
    ("aircraft", {37: "BAE 146-2OO"}),
    ("cars", {3: "Acura TL Type S 2008"}),
    ("cifar100", {41: "lawn-mower"}),
    ("cub", {1: "Laysan_albatross"}),
    ("dogs", {4: "Shih_Tzu"}),
])
def test_class_names_must_match_the_shipped_hierarchy(name, rename, tmp_path, capsys):
    manual, _ = write(name, tmp_path, rename=rename)
    err = failed_prepare(name, manual, tmp_path / "data", capsys)
    (_, wrong), = rename.items()
    assert wrong in err and "official" in err
    assert "do not match" in err or "directory names" in err


def test_aircraft_family_must_agree_with_the_hierarchy(tmp_path, capsys):
    manual, _ = write("aircraft", tmp_path)
    member = "fgvc-aircraft-2013b/data/images_family_trainval.txt"
    oa.rewrite_tar(manual / "fgvc-aircraft-2013b.tar.gz", lambda files: {
        **files, member: files[member].replace(b"BAE 146", b"Boeing 707", 1)})
    err = failed_prepare("aircraft", manual, tmp_path / "data", capsys)
    assert "'Boeing 707'" in err and "puts 'BAE 146-200' under 'BAE 146'" in err


def test_cifar100_coarse_labels_must_agree_with_the_hierarchy(tmp_path, capsys):
    manual, _ = write("cifar100", tmp_path, coarse_offset=1)
    err = failed_prepare("cifar100", manual, tmp_path / "data", capsys)
    assert "coarse label" in err and "shipped hierarchy" in err


# --- NABirds: a hierarchy that comes from the archive -------------------------------

def test_nabirds_reads_a_prepared_dataset_without_the_archive(tmp_path):
    manual, expected = write("nabirds", tmp_path)
    data = tmp_path / "data"
    assert run_prepare("nabirds", manual, data) == 0
    shutil.rmtree(manual)
    builder = prepare.builder("nabirds", str(data))  # a fresh builder: metadata only
    assert_same_hierarchy(builder.hierarchies()["class_parent_group"], NABIRDS_TREE)
    assert builder.info.features["label"].names == list(NABIRDS_TREE.class_names[0])
    assert builder.info.features["labels"]["class_parent_group"].shape == (3,)
    source = builder.as_data_source("test", decoders={"image": tfds.decode.SkipDecoding()})
    assert len(source) == len(expected["test"])
    manual.mkdir()  # preparing again reuses the data and needs no archive
    assert run_prepare("nabirds", manual, data) == 0


def test_nabirds_unprepared_builder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m hierjax.prepare nabirds"):
        prepare.builder("nabirds", str(tmp_path))
    with pytest.raises(RuntimeError, match="not prepared"):
        prepare.builder_class("nabirds")(data_dir=tmp_path).hierarchies()


def test_nabirds_tree_names_nodes_that_share_a_name_by_id():
    names = {0: "Birds", 1: "Gulls", 2: "Gulls", 3: "Gull A", 4: "Gull B", 5: "Gull C"}
    parent = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    tree = nabirds.build_tree(names, parent, [3, 4, 5], "test")
    assert tree.class_names[1] == ("Gulls (id 1)", "Gulls (id 2)")
    assert tree.class_names[2] == ("Gulls (id 1)", "Gulls (id 2)")
    np.testing.assert_array_equal(tree.ancestors, [[0, 0, 0], [1, 1, 1], [2, 1, 1]])


@pytest.mark.parametrize("tree, message", [
    ({**oa.NABIRDS_CLASSES, 10: ("Tyrant Flycatchers", 95)}, "cycle"),
    ({**oa.NABIRDS_CLASSES, 2: ("Ducks, Geese, and Swans", 7)}, "not one tree"),
    ({k: v for k, v in oa.NABIRDS_CLASSES.items() if k != 300}, "not one tree"),
])
def test_nabirds_broken_tree(tree, message, tmp_path, capsys):
    manual, _ = write("nabirds", tmp_path, tree=tree)
    err = failed_prepare("nabirds", manual, tmp_path / "data", capsys)
    assert message in err and "nabirds.tar.gz" in err


def test_nabirds_tables_must_cover_the_same_images(tmp_path, capsys):
    manual, _ = write("nabirds", tmp_path)
    member = "nabirds/bounding_boxes.txt"
    oa.rewrite_tar(manual / "nabirds.tar.gz", lambda files: {
        **files, member: b"".join(files[member].splitlines(keepends=True)[1:])})
    err = failed_prepare("nabirds", manual, tmp_path / "data", capsys)
    assert "bounding_boxes.txt and images.txt list different images" in err


def load_config(path: str, arg: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("config", Path(__file__).parents[1] / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name", ["aircraft", "cars", "cub", "dogs", "nabirds"])
def test_each_finetuning_config_reads_its_prepared_dataset(name, prepared):
    from hierjax import data

    data_dir, _, expected = prepared(name)
    config = load_config(f"configs/{name}_resnet50.py", "runlocal")
    settings.set_keys(config, {"data.data_dir": str(data_dir), "batch_size": 2,
                               "data.num_workers": 0, "data.eval_split": "test",
                               "model.pretrained": "none"})
    inputs = data.build_input(settings.resolve(config), num_devices=2)
    # Every fine-tuning config validates on a validation split and reports the test one.
    assert inputs.eval_name == "validation" and inputs.test is not None
    assert len(inputs.test) == len(expected["test"])
    if name == "aircraft":  # the official val split
        assert len(inputs.eval) == len(expected["val"])
    assert inputs.hierarchy == next(iter(shipped_hierarchies(name).values()))
    batch = next(inputs.train)
    assert batch["image"].shape == (2, 1, 64, 64, 3)
    assert batch["labels"].shape == (2, 1, inputs.hierarchy.num_levels)
    valid = sum(int(b["valid"].sum()) for b in inputs.test.batches())
    inputs.close()
    assert valid == len(expected["test"])


def test_cifar100_config_reads_a_prepared_tarball(prepared):
    from hierjax import data

    data_dir, manual, expected = prepared("cifar100")
    config = load_config("configs/cifar100_resnet18.py", "runlocal")
    settings.set_keys(config, {"data.data_dir": str(data_dir), "batch_size": 2})
    s = settings.resolve(config)
    splits = data.build_splits(s.data)  # the config holds out 10% of train as validation
    train, test = splits.train, splits.test
    assert (len(train) + len(splits.val), len(test)) == (len(expected["train"]),
                                                         len(expected["test"]))
    labels = np.concatenate([train.labels_Nxh[:, 0], splits.val.labels_Nxh[:, 0]])
    assert sorted(labels) == sorted(label for _, label, _, _ in expected["train"])
    inputs = data.build_input(s, num_devices=2)
    assert inputs.image_shape == (32, 32, 3)
    batches = list(inputs.test.batches())
    inputs.close()
    pixels = np.concatenate([b["image"].reshape(-1, 32 * 32 * 3) for b in batches])
    pixels = pixels[np.concatenate([b["valid"].reshape(-1) for b in batches])]
    np.testing.assert_array_equal(np.sort(pixels, 0),
                                  np.sort(cifar_pixels(manual, "test").reshape(len(test), -1), 0))
