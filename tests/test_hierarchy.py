import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hierjax.hierarchy import Hierarchy

SHARED = Path(__file__).parents[1] / ".." / "shared"

# Hand-made 3-level tree; coarse ids follow sorted names.
#   family Canidae (0) -> genus Canis (0)    -> wolf (3)
#   family Felidae (1) -> genus Felis (1)    -> cat (2)
#                      -> genus Panthera (2) -> lion (0), tiger (1)
CATS_CSV = """\
# Big cats and a wolf.
# Provenance lines are ignored.
species,genus,family
lion,Panthera,Felidae
tiger,Panthera,Felidae
cat,Felis,Felidae
wolf,Canis,Canidae
"""
CATS_ANCESTORS = [[0, 2, 1], [1, 2, 1], [2, 1, 1], [3, 0, 0]]


def write(tmp_path, text, name="h.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def shared(*parts):
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path.resolve()}")
    return path


@pytest.fixture
def cats(tmp_path):
    return Hierarchy.from_csv(write(tmp_path, CATS_CSV))


# --- builders ------------------------------------------------------------------------


def test_from_csv_names(cats, tmp_path):
    assert cats.level_names == ("species", "genus", "family")
    assert cats.class_names == (
        ("lion", "tiger", "cat", "wolf"),
        ("Canis", "Felis", "Panthera"),
        ("Canidae", "Felidae"),
    )
    np.testing.assert_array_equal(cats.ancestors, CATS_ANCESTORS)
    assert cats.ancestors.dtype == np.int32
    assert cats.num_levels == 3
    assert cats.num_classes == (4, 3, 2)
    assert cats.source == str(tmp_path / "h.csv")
    np.testing.assert_array_equal(cats.coarse_of(1), [2, 2, 1, 0])
    np.testing.assert_array_equal(cats.coarse_of("family"), [1, 1, 1, 0])


def test_from_csv_columns_select_and_order(tmp_path):
    path = write(tmp_path, "note,family,species\nx,Felidae,lion\n,Canidae,wolf\n")
    h = Hierarchy.from_csv(path, columns=("species", "family"))
    assert h.level_names == ("species", "family")
    assert h.class_names == (("lion", "wolf"), ("Canidae", "Felidae"))
    np.testing.assert_array_equal(h.ancestors, [[0, 1], [1, 0]])


def test_from_csv_id_columns(tmp_path):
    # The fine id column decides the order of the rows, not the file order.
    path = write(tmp_path, "\ufeffid,group\n2,1\n0,0\n1,1\n\n")
    h = Hierarchy.from_csv(path)
    assert h.level_names == ("id", "group")
    assert h.class_names == (("0", "1", "2"), ("0", "1"))
    np.testing.assert_array_equal(h.ancestors, [[0, 0], [1, 1], [2, 1]])


def test_from_csv_one_level(tmp_path):
    h = Hierarchy.from_csv(write(tmp_path, "class\nb\na\n"))
    assert h.num_classes == (2,)
    np.testing.assert_array_equal(h.tree_distance_matrix(), [[0, 1], [1, 0]])


def test_from_parents():
    h = Hierarchy.from_parents(["apple", "bee", "pear"], [1, 0, 1], ["insects", "fruit"])
    assert h.level_names == ("fine", "coarse")
    assert h.class_names == (("apple", "bee", "pear"), ("insects", "fruit"))
    np.testing.assert_array_equal(h.ancestors, [[0, 1], [1, 0], [2, 1]])


def test_from_name_suffix():
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "Groove_billed_Ani"]
    names.append("Kiwi")
    h = Hierarchy.from_name_suffix(names, level_names=("species", "group"))
    assert h.class_names == (tuple(names), ("Albatross", "Ani", "Kiwi"))
    np.testing.assert_array_equal(h.ancestors, [[0, 0], [1, 0], [2, 1], [3, 2]])


def test_from_name_suffix_separator_and_lowercase():
    names = ["Blenheim spaniel", "Japanese Spaniel", "Maltese dog", "Shih-Tzu"]
    h = Hierarchy.from_name_suffix(names, separator=" ", lowercase=True)
    assert h.class_names[1] == ("dog", "shih-tzu", "spaniel")
    np.testing.assert_array_equal(h.coarse_of(1), [2, 2, 0, 1])


# --- errors --------------------------------------------------------------------------


def test_not_a_tree(tmp_path):
    path = write(
        tmp_path, "species,genus,family\nlion,Panthera,Felidae\ntiger,Panthera,Canidae\n"
    )
    with pytest.raises(
        ValueError,
        match=r"h\.csv: not a tree: 'genus' class 'Panthera' has two parents at level "
        r"'family': 'Felidae' \(via fine class 'lion'\) and "
        r"'Canidae' \(via fine class 'tiger'\)",
    ):
        Hierarchy.from_csv(path)


def test_unknown_column(tmp_path):
    path = write(tmp_path, CATS_CSV)
    with pytest.raises(
        ValueError, match=r"h\.csv: 'order' is not a column .* 'species', 'genus', 'family'"
    ):
        Hierarchy.from_csv(path, columns=("species", "order"))


def test_repeated_header_column(tmp_path):
    path = write(tmp_path, "species,genus,genus\nlion,Panthera,Felidae\n")
    for columns in (None, ("species", "genus")):
        with pytest.raises(ValueError, match=r"h\.csv: 'genus' appears more than once in"):
            Hierarchy.from_csv(path, columns=columns)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="hierarchy file not found: .*nope.csv"):
        Hierarchy.from_csv(tmp_path / "nope.csv")


def test_not_utf8(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes("species\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"h\.csv is not UTF-8"):
        Hierarchy.from_csv(path)


def test_unused_coarse_class():
    with pytest.raises(ValueError, match=r"'coarse' has class\(es\) 'birds' with no fine"):
        Hierarchy.from_parents(["apple", "pear"], [0, 0], ["fruit", "birds"])


def test_parent_id_out_of_range():
    with pytest.raises(ValueError, match=r"class 'pear' has 'coarse' id 2, outside 0\.\.1"):
        Hierarchy.from_parents(["apple", "pear"], [0, 2], ["fruit", "birds"])


def test_parent_ids_length_mismatch():
    with pytest.raises(ValueError, match=r"2 fine class names but parent ids of shape \(3"):
        Hierarchy.from_parents(["apple", "pear"], [0, 0, 0], ["fruit"])
    with pytest.raises(ValueError, match="parent ids must be integers, got float64"):
        Hierarchy.from_parents(["apple", "pear"], [0.0, 0.0], ["fruit"])


def test_empty_level():
    with pytest.raises(ValueError, match="level 'coarse' has no classes"):
        Hierarchy(("fine", "coarse"), (("a",), ()), np.zeros((1, 2), int))


def test_duplicate_names(tmp_path):
    path = write(tmp_path, "species,genus\nlion,Panthera\ncat,Felis\nlion,Panthera\n")
    duplicate = r"h\.csv:4: fine class 'lion' already appears on line 2"
    with pytest.raises(ValueError, match=duplicate):
        Hierarchy.from_csv(path)
    with pytest.raises(ValueError, match=r"level 'coarse' has duplicate class names 'fruit'"):
        Hierarchy.from_parents(["apple", "pear"], [0, 1], ["fruit", "fruit"])


def test_fine_ids_not_0_to_c(tmp_path):
    path = write(tmp_path, "id,group\n1,a\n2,a\n2,b\n")
    with pytest.raises(
        ValueError,
        match=r"h\.csv: column 'id' holds integer ids, so they must be exactly 0\.\.2 "
        r"\(once each, one per row\), but: missing 0; repeated 2",
    ):
        Hierarchy.from_csv(path)


def test_coarse_ids_not_0_to_c(tmp_path):
    path = write(tmp_path, "species,genus_id\nlion,1\ncat,3\n")
    with pytest.raises(
        ValueError, match=r"h\.csv: column 'genus_id' .* exactly 0\.\.3 .* missing 0, 2\."
    ):
        Hierarchy.from_csv(path)


def test_ragged_row(tmp_path):
    path = write(tmp_path, "# note\nspecies,genus\nlion,Panthera\ncat\n")
    with pytest.raises(ValueError, match=r"h\.csv:4: 1 cells, but the header has 2 columns"):
        Hierarchy.from_csv(path)


def test_empty_cell(tmp_path):
    path = write(tmp_path, "species,genus\nlion,Panthera\ncat, \n")
    with pytest.raises(ValueError, match=r"h\.csv:3: empty cell in column 'genus'"):
        Hierarchy.from_csv(path)


def test_no_data_rows(tmp_path):
    with pytest.raises(ValueError, match=r"h\.csv: no data rows after the header"):
        Hierarchy.from_csv(write(tmp_path, "# only a header\nspecies,genus\n"))
    with pytest.raises(ValueError, match=r"h\.csv: no header row"):
        Hierarchy.from_csv(write(tmp_path, "# nothing\n"))


def test_invalid_ancestors():
    names = (("a", "b"), ("x",))
    with pytest.raises(ValueError, match=r"ancestors\[:, 0\] must be 0\.\.1 in order"):
        Hierarchy(("fine", "coarse"), names, [[1, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"ancestors has shape \(2, 3\), expected \(2, 2\)"):
        Hierarchy(("fine", "coarse"), names, [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="2 level names .* but 1 lists of class names"):
        Hierarchy(("fine", "coarse"), names[:1], [[0, 0], [1, 0]])
    with pytest.raises(ValueError, match="at least one level"):
        Hierarchy((), (), np.zeros((0, 0), int))


# --- labels, distances, equality -----------------------------------------------------


def test_labels_for_numpy(cats):
    labels = cats.labels_for(np.array([[3, 0], [2, 1]]))
    assert isinstance(labels, np.ndarray) and labels.shape == (2, 2, 3)
    np.testing.assert_array_equal(labels[0, 0], [3, 0, 0])
    np.testing.assert_array_equal(labels[1], [[2, 1, 1], [1, 2, 1]])
    with pytest.raises(ValueError, match=r"fine label 4 is out of range: .* 4 fine classes"):
        cats.labels_for(np.array([0, 4]))
    with pytest.raises(ValueError, match="fine label -1 is out of range"):
        cats.labels_for(-1)


def test_labels_for_jax_under_jit(cats):
    labels = jax.jit(cats.labels_for)(jnp.array([3, 1, 0]))
    assert isinstance(labels, jax.Array)
    np.testing.assert_array_equal(labels, [[3, 0, 0], [1, 2, 1], [0, 2, 1]])


def test_tree_distance(cats):
    lion, tiger, cat, wolf = 0, 1, 2, 3
    assert cats.tree_distance(lion, lion) == 0
    assert cats.tree_distance(lion, tiger) == 1  # same genus
    assert cats.tree_distance(tiger, cat) == 2  # same family only
    assert cats.tree_distance(cat, wolf) == 3  # only the implicit root
    np.testing.assert_array_equal(cats.tree_distance([0, 1, 2], 3), [3, 3, 3])
    expected = [[0, 1, 2, 3], [1, 0, 2, 3], [2, 2, 0, 3], [3, 3, 3, 0]]
    matrix = cats.tree_distance_matrix()
    assert matrix.dtype == np.int32
    np.testing.assert_array_equal(matrix, expected)
    with pytest.raises(ValueError, match="fine label 7 is out of range"):
        cats.tree_distance(0, 7)


def test_equality_hash_and_immutability(cats):
    twin = Hierarchy(cats.level_names, cats.class_names, CATS_ANCESTORS)
    assert twin == cats and hash(twin) == hash(cats)  # the source is not compared
    other = Hierarchy.from_parents(["a"], [0], ["x"])
    assert other != cats
    assert len({cats, twin, other}) == 2
    with pytest.raises(ValueError):
        cats.ancestors[0, 0] = 1
    mutable = np.array(CATS_ANCESTORS)
    h = Hierarchy(cats.level_names, cats.class_names, mutable)
    mutable[0, 1] = 0
    assert h == cats


def test_to_csv_round_trip(cats, tmp_path):
    path = tmp_path / "out.csv"
    cats.to_csv(path, header_comment="Big cats.\nSecond line.")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Big cats.\n# Second line.\nspecies,genus,family\nlion,")
    assert Hierarchy.from_csv(path) == cats


def test_to_csv_round_trip_ids_and_quoting(tmp_path):
    names = (("0", "1", "2"), ('a "b"', "c,d"))
    h = Hierarchy(("id", "kind, quoted"), names, [[0, 1], [1, 0], [2, 0]])
    h.to_csv(tmp_path / "out.csv")
    assert Hierarchy.from_csv(tmp_path / "out.csv") == h


def test_to_csv_refuses_what_would_not_round_trip(tmp_path):
    unsorted = Hierarchy.from_parents(["apple", "bee"], [0, 1], ["fruit", "bee_family"])
    with pytest.raises(ValueError, match="'coarse' class names are not in sorted order"):
        unsorted.to_csv(tmp_path / "out.csv")
    numbered = Hierarchy.from_parents(["apple", "bee"], [0, 1], ["1", "2"])
    with pytest.raises(ValueError, match="every 'coarse' class name is an integer"):
        numbered.to_csv(tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# --- the shared benchmark hierarchies ------------------------------------------------


def read_dicts(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_cifar100_superclasses(tmp_path):
    meta = json.loads(shared("data", "cifar100", "meta.json").read_text())
    fine_names = meta["fine_names"]
    h = Hierarchy.from_parents(fine_names, meta["fine_to_coarse"], meta["coarse_names"])
    assert h.num_classes == (100, 20)
    apple = fine_names.index("apple")
    assert h.class_names[1][h.coarse_of(1)[apple]] == "fruit_and_vegetables"
    # CIFAR-100 numbers its superclasses alphabetically, as from_csv does.
    path = tmp_path / "cifar100.csv"
    h.to_csv(path, header_comment="CIFAR-100 classes and superclasses.")
    assert Hierarchy.from_csv(path) == h


def test_cub_suffix_groups():
    path = shared("hierarchies", "cub200_suffix70_derived.csv")
    rows = read_dicts(path)
    h = Hierarchy.from_name_suffix([row["species"] for row in rows])
    assert h.num_classes == (200, 70)
    groups = [h.class_names[1][i] for i in h.coarse_of(1)]
    assert groups == [row["suffix_coarse"] for row in rows]
    from_file = Hierarchy.from_csv(path, columns=("species", "suffix_coarse"))
    np.testing.assert_array_equal(from_file.ancestors, h.ancestors)


def test_cub_hrn_ids(tmp_path):
    path = shared("hierarchies", "cub200_species_genus122_family37_order13_hrn.csv")
    with pytest.raises(
        ValueError,
        match=r"cub200_species_genus122_family37_order13_hrn\.csv: column 'class_id' holds "
        r"integer ids, so they must be exactly 0\.\.199 .* missing 0; out of range 200",
    ):
        Hierarchy.from_csv(path)
    rows = read_dicts(path)
    zero_based = tmp_path / "cub_hrn_0based.csv"
    with open(zero_based, "w", encoding="utf-8", newline="") as f:
        f.write("# HRN CUB tree, ids renumbered from 0.\n")
        writer = csv.writer(f)
        writer.writerow(["class_dir", "genus", "family", "order"])
        for row in rows:
            ids = [int(row[k]) - 1 for k in ("genus_id", "family_id", "order_id")]
            writer.writerow([row["class_dir"], *ids])
    h = Hierarchy.from_csv(zero_based)
    assert h.num_classes == (200, 122, 37, 13)
    assert h.class_names[0][0] == "001.Black_footed_Albatross"
    # The class directories carry the species names the suffix rule needs.
    suffix = Hierarchy.from_name_suffix(h.class_names[0])
    assert suffix.num_classes == (200, 70)


def test_cub_chang_names_are_not_a_tree():
    # Chang et al.'s table puts Red_legged_Kittiwake (Laridae) in Coraciiformes.
    path = shared("hierarchies", "cub200_species_family_order_chang2021.csv")
    with pytest.raises(
        ValueError,
        match=r"'family_name_xlsx' class 'Laridae' has two parents at level "
        r"'order_name_xlsx': 'Charadriiformes' .* 'Coraciiformes' \(via fine class "
        r"'Red_legged_Kittiwake'\)",
    ):
        Hierarchy.from_csv(path, columns=("species", "family_name_xlsx", "order_name_xlsx"))


def test_fgvc_aircraft():
    path = shared("hierarchies", "fgvc_aircraft_variant100_family70_manufacturer30.csv")
    h = Hierarchy.from_csv(path, columns=("variant", "family", "manufacturer"))
    assert h.num_classes == (100, 70, 30)
    # Sorted names give the official family and manufacturer indices.
    official = Hierarchy.from_csv(
        path,
        columns=(
            "variant_idx_0based_official",
            "family_idx_0based_official",
            "manufacturer_idx_0based_official",
        ),
    )
    np.testing.assert_array_equal(official.ancestors, h.ancestors)
    distances = h.tree_distance_matrix()
    assert distances.shape == (100, 100)
    assert set(np.unique(distances)) == {0, 1, 2, 3}
