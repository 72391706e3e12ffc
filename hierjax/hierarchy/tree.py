"""The label hierarchy of a dataset: which coarse classes each fine class belongs to.

A `Hierarchy` has h levels. Level 0 is the fine level (the classes a model predicts);
level l > 0 groups the classes of level l - 1, coarser as l grows (species -> family ->
order). `ancestors[c]` is the path of fine class c: its id at every level.

Hierarchy file format (read by `Hierarchy.from_csv`, written by `Hierarchy.to_csv`)
-------------------------------------------------------------------------------------
A UTF-8 CSV file:

    # CUB-200-2011 species -> family -> order.
    # Source: ... (provenance; any number of leading '#' lines, ignored)
    species,family,order
    Black_footed_Albatross,Diomedeidae,Procellariiformes
    Laysan_Albatross,Diomedeidae,Procellariiformes
    Groove_billed_Ani,Cuculidae,Cuculiformes

- Optional leading lines that start with `#` are comments.
- Then a header row: the level names, fine level first, coarser levels to the right.
- Then one row per fine class. Each cell is a class name, taken literally (no
  trimming). Blank lines are skipped; empty cells are errors.
- Fine ids follow row order; the classes of a coarser level are numbered in sorted
  order of their names (CIFAR-100's superclass ids are exactly this order).
- A column whose every cell is an integer is an id column instead: its ids must be
  exactly 0..C-1, every id used (in the fine column, each id exactly once; a row's
  fine id is then its value). The class names of an id column are "0", "1", ...
- `from_csv(path, columns=(...))` selects and orders columns by header name, so a file
  with extra columns (ids, notes, alternative trees) can be read as it is.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hierjax.errors import HierarchyError, HierarchyNotFound

_INTEGER = re.compile(r"-?[0-9]+")
_NUMBERED = re.compile(r"^[0-9]+\.")  # the `001.` of CUB class directories


@dataclasses.dataclass(frozen=True, eq=False)
class Hierarchy:
    """A label tree: `ancestors[c, l]` is the level-l class of fine class c."""

    level_names: tuple[str, ...]
    class_names: tuple[tuple[str, ...], ...] = dataclasses.field(repr=False)
    ancestors: np.ndarray = dataclasses.field(repr=False)
    source: str = "<memory>"

    def __post_init__(self):
        # Tuples and a private read-only copy keep the frozen object truly immutable,
        # which makes hashing it safe (e.g. as a static argument of jax.jit).
        object.__setattr__(self, "level_names", tuple(self.level_names))
        object.__setattr__(self, "class_names", tuple(map(tuple, self.class_names)))
        where = self.source
        if not self.level_names:
            raise HierarchyError(f"{where}: a hierarchy needs at least one level (the fine one)")
        for level in self.level_names:
            if not isinstance(level, str) or not level.strip():
                raise HierarchyError(f"{where}: level names must be non-empty, got {level!r}")
        if len(set(self.level_names)) != len(self.level_names):
            raise HierarchyError(f"{where}: level names must be unique, got {self.level_names}")
        if len(self.class_names) != len(self.level_names):
            raise HierarchyError(
                f"{where}: {len(self.level_names)} level names {self.level_names} but "
                f"{len(self.class_names)} lists of class names; give one per level"
            )
        for level, names in zip(self.level_names, self.class_names):
            _check_class_names(where, level, names)

        ancestors = np.asarray(self.ancestors)
        if ancestors.dtype.kind not in "iu":
            raise HierarchyError(f"{where}: ancestors must be integer ids, got {ancestors.dtype}")
        ancestors = ancestors.astype(np.int64)  # np.bincount refuses uint64
        expected = (len(self.class_names[0]), len(self.level_names))
        if ancestors.shape != expected:
            raise HierarchyError(
                f"{where}: ancestors has shape {ancestors.shape}, expected {expected}: "
                f"one row per fine class, one column per level of {self.level_names}"
            )
        if not np.array_equal(ancestors[:, 0], np.arange(expected[0])):
            raise HierarchyError(
                f"{where}: ancestors[:, 0] must be 0..{expected[0] - 1} in order "
                "(row c is the path of fine class c, which starts at c itself)"
            )
        for l in range(1, self.num_levels):
            self._check_level(ancestors, l)
        # A fine class has one row, hence one parent: the tree check starts at level 1.
        for l in range(1, self.num_levels - 1):
            self._check_tree(ancestors, l)
        ancestors = ancestors.astype(np.int32)
        ancestors.flags.writeable = False
        object.__setattr__(self, "ancestors", ancestors)

    def _check_level(self, ancestors: np.ndarray, l: int) -> None:
        """Every level-l id is in range and every level-l class has a fine class under it."""
        column, level, names = ancestors[:, l], self.level_names[l], self.class_names[l]
        bad = np.flatnonzero((column < 0) | (column >= len(names)))
        if bad.size:
            c = bad[0]
            raise HierarchyError(
                f"{self.source}: fine class {self.class_names[0][c]!r} has {level!r} id "
                f"{column[c]}, outside 0..{len(names) - 1} ({len(names)} {level!r} classes)"
            )
        counts = np.bincount(column, minlength=len(names))
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise HierarchyError(
                f"{self.source}: level {level!r} has class(es) {_few(empty)} "
                "with no fine class under them; remove them or assign fine classes to them"
            )

    def _check_tree(self, ancestors: np.ndarray, l: int) -> None:
        """Every level-l class has a single parent at level l + 1."""
        child, parent = ancestors[:, l], ancestors[:, l + 1]
        _, first = np.unique(child, return_index=True)  # a fine class under each child
        conflicts = np.flatnonzero(parent != parent[first[child]])
        if conflicts.size:
            f2 = conflicts[0]
            f1 = first[child[f2]]
            level, up = self.level_names[l], self.level_names[l + 1]
            fine, parents = self.class_names[0], self.class_names[l + 1]
            raise HierarchyError(
                f"{self.source}: not a tree: {level!r} class "
                f"{self.class_names[l][child[f2]]!r} has two parents at level {up!r}: "
                f"{parents[parent[f1]]!r} (via fine class {fine[f1]!r}) and "
                f"{parents[parent[f2]]!r} (via fine class {fine[f2]!r}); "
                f"give every {level!r} class a single {up!r}"
            )

    def __eq__(self, other):
        # Structure only: the same tree read from two places is the same tree.
        if not isinstance(other, Hierarchy):
            return NotImplemented
        return (
            self.level_names == other.level_names
            and self.class_names == other.class_names
            and np.array_equal(self.ancestors, other.ancestors)
        )

    def __hash__(self):
        return hash((self.level_names, self.class_names, self.ancestors.tobytes()))

    @property
    def num_levels(self) -> int:
        """h, the number of levels, the fine level included."""
        return len(self.level_names)

    @property
    def num_classes(self) -> tuple[int, ...]:
        """The number of classes of each level, fine first."""
        return tuple(len(names) for names in self.class_names)

    def coarse_of(self, level: int | str) -> np.ndarray:
        """The map fine id -> level id, int32 [C_1], for a level index or name."""
        if isinstance(level, str):
            if level not in self.level_names:
                raise HierarchyError(
                    f"{self.source}: no level {level!r}; the levels are {self.level_names}"
                )
            level = self.level_names.index(level)
        if not 0 <= level < self.num_levels:
            raise HierarchyError(
                f"{self.source}: no level {level}; the levels are "
                f"0..{self.num_levels - 1} {self.level_names}"
            )
        return self.ancestors[:, level]

    def labels_for(self, fine_labels):
        """Ancestor paths [..., h] of fine labels [...]: numpy in numpy out, jax in jax out.

        Labels inside jax.jit cannot be checked: JAX clamps ids >= C_1 to the last class
        and counts negative ids from the end.
        """
        jax = sys.modules.get("jax")  # a jax array implies jax is already imported
        if jax is not None and isinstance(fine_labels, jax.Array):
            return jax.numpy.asarray(self.ancestors)[fine_labels]
        return self.ancestors[self._checked_fine(fine_labels)]

    def tree_distance(self, a, b) -> np.ndarray:
        """Height of the lowest common ancestor of fine classes a and b, int32, broadcast.

        0 if a == b, l if their paths first meet at level l, h if they never meet (an
        implicit root sits above the top level).
        """
        return lca_height(self._checked_fine(a), self._checked_fine(b), self.ancestors)

    def tree_distance_matrix(self) -> np.ndarray:
        """tree_distance of every pair of fine classes, int32 [C_1, C_1]."""
        ids = np.arange(self.num_classes[0])
        return self.tree_distance(ids[:, None], ids[None, :])

    def _checked_fine(self, labels) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise HierarchyError(f"fine labels must be integers, got dtype {labels.dtype}")
        num_fine = self.num_classes[0]
        bad = labels[(labels < 0) | (labels >= num_fine)]
        if bad.size:
            raise HierarchyError(
                f"fine label {bad[0]} is out of range: {self.source} has {num_fine} "
                f"fine classes, ids 0..{num_fine - 1}"
            )
        return labels

    @classmethod
    def from_parents(
        cls,
        fine_names: Sequence[str],
        parent_ids: Sequence[int],
        coarse_names: Sequence[str],
        *,
        level_names: Sequence[str] = ("fine", "coarse"),
        source: str = "<from_parents>",
    ) -> Hierarchy:
        """Two levels from a fine -> coarse id list (CIFAR-100's `fine_to_coarse`)."""
        parent_ids = np.asarray(parent_ids)
        if parent_ids.dtype.kind not in "iu":
            raise HierarchyError(f"{source}: parent ids must be integers, got {parent_ids.dtype}")
        if parent_ids.shape != (len(fine_names),):
            raise HierarchyError(
                f"{source}: {len(fine_names)} fine class names but parent ids of shape "
                f"{parent_ids.shape}; give one parent id per fine class"
            )
        ancestors = np.stack([np.arange(len(fine_names)), parent_ids], axis=1)
        return cls(level_names, (fine_names, coarse_names), ancestors, source)

    @classmethod
    def from_name_suffix(
        cls,
        fine_names: Sequence[str],
        *,
        separator: str = "_",
        level_names: Sequence[str] = ("fine", "coarse"),
        lowercase: bool = False,
        source: str = "<from_name_suffix>",
    ) -> Hierarchy:
        """Two levels: a fine class's coarse class is the last `separator` token of its name.

        `Black_footed_Albatross` -> `Albatross`; a leading `NNN.` (CUB's `001.`) is
        ignored; a name without the separator is a group of its own. Coarse ids follow
        sorted coarse names; fine names are kept as given.
        """
        groups = []
        for name in fine_names:
            group = _NUMBERED.sub("", name).rsplit(separator, 1)[-1]
            groups.append(group.lower() if lowercase else group)
        parent_ids, coarse_names = _sorted_ids(groups)
        return cls.from_parents(
            fine_names, parent_ids, coarse_names, level_names=level_names, source=source
        )

    @classmethod
    def from_csv(cls, path: str | Path, *, columns: Sequence[str] | None = None) -> Hierarchy:
        """Reads a hierarchy file (format: module docstring).

        `columns` selects and orders the header names to use, fine level first.
        """
        header, rows = _read_rows(path)
        names = tuple(header if columns is None else columns)
        if not names:
            raise HierarchyError(f"{path}: columns is empty; name at least the fine column")
        for name in names:
            if header.count(name) != 1:
                problem = "appears more than once" if name in header else "is not a column"
                raise HierarchyError(
                    f"{path}: {name!r} {problem} in the header; the columns are "
                    f"{', '.join(map(repr, header))}"
                )
        lines = [line for line, _ in rows]
        ids, class_names = [], []
        for level, name in enumerate(names):
            cells = [row[header.index(name)] for _, row in rows]
            for line, cell in zip(lines, cells):
                if not cell.strip():
                    raise HierarchyError(f"{path}:{line}: empty cell in column {name!r}")
            column_ids, column_names = _parse_column(path, name, cells, lines, level == 0)
            ids.append(column_ids)
            class_names.append(column_names)
        by_row = np.stack(ids, axis=1)
        ancestors = np.empty_like(by_row)
        ancestors[by_row[:, 0]] = by_row  # row order, unless the fine column holds ids
        return cls(names, class_names, ancestors, str(path))

    def to_csv(self, path: str | Path, header_comment: str | None = None) -> None:
        """Writes the hierarchy file that `from_csv` reads back as an equal hierarchy.

        `header_comment` (may span lines) becomes the leading `#` lines.
        """
        self._check_writable()
        with open(path, "w", encoding="utf-8", newline="") as f:
            for line in (header_comment or "").splitlines():
                f.write(f"# {line}\n")
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.level_names)
            for path_ids in self.ancestors:
                writer.writerow(names[i] for names, i in zip(self.class_names, path_ids))

    def _check_writable(self) -> None:
        """Refuses to write what from_csv would read back differently."""
        if self.level_names[0].startswith("#"):
            raise HierarchyError(
                f"{self.source}: level name {self.level_names[0]!r} starts with '#', so "
                "the header would read back as a comment; rename the fine level"
            )
        for l, (level, names) in enumerate(zip(self.level_names, self.class_names)):
            if all(_INTEGER.fullmatch(name) for name in names):
                if names != tuple(str(i) for i in range(len(names))):
                    raise HierarchyError(
                        f"{self.source}: every {level!r} class name is an integer, so the "
                        "column would read back as ids, but the names are not the ids "
                        f"0..{len(names) - 1} in order; rename them (e.g. name = str(id))"
                    )
            elif l > 0 and list(names) != sorted(names):
                raise HierarchyError(
                    f"{self.source}: the {level!r} class names are not in sorted order of "
                    "their ids, but from_csv numbers coarse classes in sorted name order; "
                    "renumber that level so that sorted names get ids 0, 1, ..."
                )


def _check_class_names(where: str, level: str, names: tuple[str, ...]) -> None:
    if not names:
        raise HierarchyError(f"{where}: level {level!r} has no classes")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise HierarchyError(
                f"{where}: class names must be non-empty strings; level {level!r} has "
                f"{name!r}"
            )
    if len(set(names)) != len(names):
        seen, repeated = set(), []
        for name in names:
            if name in seen:
                repeated.append(name)
            seen.add(name)
        raise HierarchyError(
            f"{where}: level {level!r} has duplicate class names {_few(repeated)}; "
            "class names must be unique within a level"
        )


def _sorted_ids(names: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The id of each name when the distinct names are numbered in sorted order."""
    distinct = tuple(sorted(set(names)))
    index = {name: i for i, name in enumerate(distinct)}
    return np.array([index[name] for name in names]), distinct


def _few(items, limit: int = 5) -> str:
    """A short listing for error messages."""
    items = list(items)
    shown = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, cells) of each data row of a hierarchy file."""
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs write.
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise HierarchyNotFound(f"hierarchy file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise HierarchyError(f"{path} is not UTF-8 text ({e}); save it as UTF-8") from None
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    reader = csv.reader(lines[skip:])
    rows = [(skip + reader.line_num, cells) for cells in reader if cells]
    if not rows:
        raise HierarchyError(f"{path}: no header row; after the comments, name the levels")
    (_, header), rows = rows[0], rows[1:]
    if not rows:
        raise HierarchyError(f"{path}: no data rows after the header; add one per fine class")
    for line, cells in rows:
        if len(cells) != len(header):
            raise HierarchyError(
                f"{path}:{line}: {len(cells)} cells, but the header has {len(header)} "
                f"columns ({', '.join(header)})"
            )
    return header, rows


def _parse_column(
    path, column: str, cells: list[str], lines: list[int], fine: bool
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The class id of each row and the class names of one column of a hierarchy file."""
    if all(_INTEGER.fullmatch(cell) for cell in cells):
        ids = np.array([int(cell) for cell in cells])
        _check_id_column(path, column, ids, fine)
        return ids, tuple(str(i) for i in range(ids.max() + 1))
    if not fine:
        return _sorted_ids(cells)
    first_line = {}
    for line, name in zip(lines, cells):
        if name in first_line:
            raise HierarchyError(
                f"{path}:{line}: fine class {name!r} already appears on line "
                f"{first_line[name]}; fine class names must be unique"
            )
        first_line[name] = line
    return np.arange(len(cells)), tuple(cells)


def _check_id_column(path, column: str, ids: np.ndarray, fine: bool) -> None:
    """Integer ids must be exactly 0..C-1: all used, and once each in the fine column."""
    num = len(ids) if fine else max(ids.max() + 1, 0)
    values, counts = np.unique(ids, return_counts=True)
    problems = []
    missing = np.setdiff1d(np.arange(num), values)
    if missing.size:
        problems.append(f"missing {_few(missing.tolist())}")
    outside = values[(values < 0) | (values >= num)]
    if outside.size:
        problems.append(f"out of range {_few(outside.tolist())}")
    if fine and (counts > 1).any():
        problems.append(f"repeated {_few(values[counts > 1].tolist())}")
    if problems:
        each = "once each, one per row" if fine else "every one used"
        raise HierarchyError(
            f"{path}: column {column!r} holds integer ids, so they must be exactly "
            f"0..{num - 1} ({each}), but: {'; '.join(problems)}. Renumber them from 0 "
            "(subtract 1 from 1-based ids), or pick a column of names with columns=(...)"
        )


def paths_meet_at(match_xH):
    """The level where two root-to-leaf paths of a tree first agree, h if never, from
    match_xH[..., l] = (the paths agree at level l); int32, numpy or JAX alike.

    Paths that meet at level l agree at every level above it, so that level is h minus
    the number of agreeing levels.
    """
    return (match_xH.shape[-1] - match_xH.sum(-1)).astype("int32")


def lca_height(a, b, ancestors_CxH):
    """Height of the lowest common ancestor of fine classes a and b (broadcast; numpy or
    JAX arrays, traced ones included): 0 if a == b, l if their paths first meet at level
    l, h if they never meet (an implicit root sits above the top level)."""
    return paths_meet_at(ancestors_CxH[a] == ancestors_CxH[b])
