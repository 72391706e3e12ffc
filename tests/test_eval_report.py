import json
import sys

import numpy as np
import pytest

from hierjax import eval_report as er
from hierjax.hierarchy import Hierarchy

# species -> genus -> family, fine classes listed out of tree order:
#   family X: genus A = {a1, a2, a3}, genus C = {c1};  family Y: genus B = {b1, b2}.
# Coarse ids follow sorted names: A=0, B=1, C=2; X=0, Y=1.
FINE = ("a1", "b1", "a2", "c1", "b2", "a3")
HIERARCHY = Hierarchy(
    ("species", "genus", "family"),
    (FINE, ("A", "B", "C"), ("X", "Y")),
    np.array([[0, 0, 0], [1, 1, 1], [2, 0, 0], [3, 2, 0], [4, 1, 1], [5, 0, 0]]),
)

# Ten examples; preds are tree paths of the fine predictions. Per example, label ->
# prediction (LCA height when wrong):
#   0: a1 -> a1;   1: a1 -> a2 (1);   2: a1 -> a2 (1);   3: a2 -> a2;   4: a2 -> a1 (1)
#   5: c1 -> a1 (2, same family X);   6: b1 -> b1;   7: b1 -> b2 (1)
#   8: b2 -> a1 (3, no shared family);   9: c1 -> a3 (2)
# a3 is never a label (support 0).
FINE_LABELS = np.array([0, 0, 0, 2, 2, 3, 1, 1, 4, 3])
FINE_PREDS = np.array([0, 2, 2, 2, 0, 0, 1, 4, 0, 5])
LABELS = HIERARCHY.ancestors[FINE_LABELS]
PREDS = HIERARCHY.ancestors[FINE_PREDS]
# Whether the label is among the top k, per example, at the fine level.
TOPK_FINE = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0, 0], dtype=bool)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_tree_order_puts_siblings_together():
    # species by (family, genus, id): X/A: a1 a2 a3, X/C: c1, Y/B: b1 b2.
    np.testing.assert_array_equal(er.tree_order(HIERARCHY, 0), [0, 2, 5, 3, 1, 4])
    # genus by (family, id): X: A, C; Y: B.
    np.testing.assert_array_equal(er.tree_order(HIERARCHY, 1), [0, 2, 1])
    np.testing.assert_array_equal(er.tree_order(HIERARCHY, 2), [0, 1])
    # Group lines: between a3|c1 and c1|b1 for genus, only c1|b1 for family.
    np.testing.assert_array_equal(er.group_starts(HIERARCHY, 0, 1), [3, 4])
    np.testing.assert_array_equal(er.group_starts(HIERARCHY, 0, 2), [4])
    np.testing.assert_array_equal(er.group_starts(HIERARCHY, 1, 2), [2])


def test_tree_order_groups_every_level_of_a_random_tree():
    rng = np.random.default_rng(0)
    sizes = (40, 9, 3)
    columns = [np.arange(sizes[0])]
    for n, p in zip(sizes, sizes[1:]):
        parent = rng.permutation(np.concatenate([np.arange(p), rng.integers(0, p, n - p)]))
        columns.append(parent[columns[-1]])
    ancestors = np.stack(columns, axis=1)
    names = [tuple(f"{l}-{i}" for i in range(n)) for l, n in enumerate(sizes)]
    hierarchy = Hierarchy(("f", "m", "t"), names, ancestors)
    order = er.tree_order(hierarchy, 0)
    assert sorted(order) == list(range(40))
    for l in (1, 2):
        groups = ancestors[order, l]
        # Contiguous: each group id occurs in a single run.
        runs = groups[np.r_[True, groups[1:] != groups[:-1]]]
        assert len(runs) == len(set(runs)) == sizes[l]


def test_confusion_matrix_equals_a_brute_force_count():
    rng = np.random.default_rng(1)
    labels, preds = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    expected = np.zeros((7, 7), int)
    for t, p in zip(labels, preds):
        expected[t, p] += 1
    np.testing.assert_array_equal(er.confusion_matrix(labels, preds, 7), expected)
    with pytest.raises(ValueError, match="outside 0..6"):
        er.confusion_matrix(np.array([0, 7]), np.array([0, 0]), 7)


def test_per_class_csvs_hand_worked(tmp_path):
    written = er.write_report(
        tmp_path, HIERARCHY, LABELS, PREDS, {}, topk=np.stack([TOPK_FINE] * 3, 1),
        plots=False,
    )
    names = sorted(p.name for p in written)
    assert names == [
        "metrics.json", "per_class_0_species.csv", "per_class_1_genus.csv",
        "per_class_2_family.csv",
    ]
    assert read_csv(tmp_path / "per_class_0_species.csv") == [
        "species,genus,family,support,correct,top1,top5,confused_with,confused_count",
        "a1,A,X,3,1,0.3333,0.6667,a2,2",  # ex 0-2; a2 twice
        "a2,A,X,2,1,0.5000,1.0000,a1,1",  # ex 3-4
        "a3,A,X,0,0,,,,0",  # never a label
        "c1,C,X,2,0,0.0000,0.5000,a1,1",  # ex 5 (a1) and 9 (a3): a tie, lowest id a1
        "b1,B,Y,2,1,0.5000,1.0000,b2,1",  # ex 6-7
        "b2,B,Y,1,0,0.0000,0.0000,a1,1",  # ex 8
    ]
    # Genus labels A A A A A C B B B C, preds A A A A A A B B A A; the same top-k hits
    # at every level, so A has 4 of ex 0-4.
    assert read_csv(tmp_path / "per_class_1_genus.csv") == [
        "genus,family,support,correct,top1,top5,confused_with,confused_count",
        "A,X,5,5,1.0000,0.8000,,0",
        "C,X,2,0,0.0000,0.5000,A,2",
        "B,Y,3,2,0.6667,0.6667,A,1",
    ]
    # Family labels: X but for ex 6-8 (Y); only ex 8 crosses families.
    assert read_csv(tmp_path / "per_class_2_family.csv") == [
        "family,support,correct,top1,top5,confused_with,confused_count",
        "X,7,7,1.0000,0.7143,,0",
        "Y,3,2,0.6667,0.6667,X,1",
    ]


def test_mistake_severities_hand_worked():
    severities = er.mistake_severities(HIERARCHY, LABELS, PREDS)
    # Wrong examples 1, 2, 4, 5, 7, 8, 9.
    np.testing.assert_array_equal(severities, [1, 1, 1, 2, 1, 3, 2])


def test_metrics_json_is_sorted_and_indented(tmp_path):
    rates = {"top1/0": np.float32(0.25), "count": 10.0, "marginal/top1/0": 0.5}
    er.write_report(tmp_path, HIERARCHY, LABELS, PREDS, rates, plots=False)
    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text) == {"count": 10.0, "marginal/top1/0": 0.5, "top1/0": 0.25}
    assert text.splitlines()[:2] == ["{", '  "count": 10.0,']


def test_several_methods_get_a_folder_each(tmp_path):
    other = HIERARCHY.ancestors[FINE_LABELS]  # a perfect decode
    written = er.write_report(tmp_path, HIERARCHY, LABELS, {"fine": PREDS, "joint": other},
                              {}, plots=False)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        "metrics.json",
        *(f"{m}/per_class_{l}_{n}.csv" for m in ("fine", "joint")
          for l, n in enumerate(("species", "genus", "family"))),
    }
    assert read_csv(tmp_path / "joint" / "per_class_2_family.csv")[1:] == [
        "X,7,7,1.0000,,0", "Y,3,3,1.0000,,0"
    ]


def test_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"integer \[N, 3\]"):
        er.write_report(tmp_path, HIERARCHY, LABELS[:, :2], PREDS, {}, plots=False)
    padded = LABELS.copy()
    padded[0, 1] = -1
    with pytest.raises(ValueError, match="drop padded rows"):
        er.write_report(tmp_path, HIERARCHY, padded, PREDS, {}, plots=False)
    with pytest.raises(ValueError, match="no preds"):
        er.write_report(tmp_path, HIERARCHY, LABELS, {"fine": PREDS}, {},
                        topk={"joint": PREDS == LABELS}, plots=False)


def test_pngs_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    written = er.write_report(tmp_path, HIERARCHY, LABELS, {"fine": PREDS}, {"count": 10},
                              title="test split")
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in written if p.suffix == ".png")
    assert pngs == [
        "fine/confusion_0_species.png", "fine/confusion_1_genus.png",
        "fine/confusion_2_family.png", "fine/severity.png",
    ]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_levels_with_over_200_classes_get_no_confusion_png(tmp_path):
    pytest.importorskip("matplotlib")
    num_fine = 201
    hierarchy = Hierarchy.from_parents(
        [f"f{i:03d}" for i in range(num_fine)], np.arange(num_fine) % 3, ("p", "q", "r")
    )
    rng = np.random.default_rng(2)
    labels = hierarchy.ancestors[rng.integers(0, num_fine, 300)]
    preds = hierarchy.ancestors[rng.integers(0, num_fine, 300)]
    written = er.write_report(tmp_path, hierarchy, labels, preds, {})
    assert sorted(p.name for p in written) == [
        "confusion_1_coarse.png", "metrics.json", "per_class_0_fine.csv",
        "per_class_1_coarse.csv", "severity.png",
    ]


def test_without_matplotlib_the_tables_are_still_written(tmp_path, monkeypatch):
    # None in sys.modules makes an import fail as if the package were not installed.
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install matplotlib.*bench"):
        er.write_report(tmp_path, HIERARCHY, LABELS, PREDS, {"count": 10})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.json", "per_class_0_species.csv", "per_class_1_genus.csv",
        "per_class_2_family.csv",
    ]
