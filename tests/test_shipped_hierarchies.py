"""The hierarchy files shipped in hierjax/hierarchies: they load, with the expected shape."""

import json

import numpy as np
import pytest

from hierjax.hierarchy import shipped as hierarchies
from hierjax.data.cifar100_npz import DEFAULT_DATA_DIR

EXPECTED = {
    "cub/species_family_order": (200, 38, 13),
    "cub/species_genus_family_order": (200, 122, 37, 13),
    "cub/suffix": (200, 70),
    "aircraft/variant_family_manufacturer": (100, 70, 30),
    "cars/model_bodytype": (196, 9),
    "dogs/suffix": (120, 78),
    "cifar100/class_superclass": (100, 20),
    "cifar100/transfer_source": (40, 20),
    "cifar100/transfer_target": (60, 20),
}
CUB = ("cub/species_family_order", "cub/species_genus_family_order", "cub/suffix")


def test_names_cover_every_file():
    assert set(hierarchies.NAMES) == set(EXPECTED)
    shipped = {p.name for p in hierarchies.DIRECTORY.glob("*.csv")}
    assert shipped == set(hierarchies.NAMES.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loads_with_expected_counts(name):
    assert hierarchies.load(name).num_classes == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_provenance_header(name):
    lines = hierarchies.path(name).read_text(encoding="utf-8").splitlines()
    comments = []
    for line in lines:
        if not line.startswith("#"):
            break
        comments.append(line)
    text = "\n".join(comments)
    assert len(comments) >= 5
    for needed in ("Levels:", "Source", "Changes", "Licence"):
        assert needed in text, (name, needed)


def test_kittiwake_is_charadriiformes():
    tree = hierarchies.load("cub/species_family_order")
    fine = tree.class_names[0].index("Red_legged_Kittiwake")
    family, order = tree.ancestors[fine, 1:]
    assert tree.class_names[1][family] == "Laridae"
    assert tree.class_names[2][order] == "Charadriiformes"
    assert "Coraciiformes" in tree.class_names[2]  # the kingfishers remain


def test_cub_files_agree_on_official_names():
    names = [hierarchies.load(name).class_names[0] for name in CUB]
    assert names[0] == names[1] == names[2]
    assert len(set(names[0])) == 200
    assert names[0][0] == "Black_footed_Albatross"
    assert names[0][69] == "Green_Violetear" and names[0][140] == "Artic_Tern"
    assert names[0][83] == "Red_legged_Kittiwake" and names[0][199] == "Common_Yellowthroat"


def test_cub_trees_share_orders():
    chang = hierarchies.load("cub/species_family_order").coarse_of("order")
    hrn = hierarchies.load("cub/species_genus_family_order").coarse_of("order")
    # The same partition of the species into 13 orders, whatever the ids.
    pairs = set(zip(chang.tolist(), hrn.tolist()))
    assert len(pairs) == 13


def test_aircraft_official_order():
    tree = hierarchies.load("aircraft/variant_family_manufacturer")
    assert tree.class_names[0][0] == "707-320"
    assert tree.class_names[0][21] == "A300B4"
    assert tree.class_names[1][tree.ancestors[0, 1]] == "Boeing 707"
    assert tree.class_names[2][tree.ancestors[0, 2]] == "Boeing"


def test_cifar100_matches_meta():
    meta_path = DEFAULT_DATA_DIR / "meta.json"
    if not meta_path.exists():
        pytest.skip(f"no CIFAR-100 meta.json at {meta_path}")
    meta = json.loads(meta_path.read_text())
    tree = hierarchies.load("cifar100/class_superclass")
    assert list(tree.class_names[0]) == meta["fine_names"]
    assert list(tree.class_names[1]) == meta["coarse_names"]
    np.testing.assert_array_equal(tree.coarse_of(1), meta["fine_to_coarse"])


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="cub/species_family_order") as info:
        hierarchies.load("cub/nope")
    assert "cub/nope" in str(info.value)
    assert all(name in str(info.value) for name in hierarchies.NAMES)
