"""The files an evaluation writes: per-class tables, confusion matrices, mistake severity.

Everything here works on host numpy arrays (no JAX). Inputs, for N examples of a
`Hierarchy` with h levels (level 0 = fine):

  labels_NxH  int [N, h], the true class at every level.
  preds_NxH   int [N, h], a decoded prediction at every level (`hierjax.decode`),
              one array per decode method.
  topk_NxH    optional bool [N, h], whether labels[:, l] is among the method's top k
              classes at level l (e.g. from `decode.level_probabilities`).

`write_report(out_dir, ...)` writes, for each decode method, into out_dir/<method>/
(straight into out_dir when a single preds array is given):

  per_class_<l>_<level>.csv  one row per level-l class in tree order (`tree_order`):
                             the class and its ancestors' names, support, correct, top1,
                             top<k> (when given), confused_with and confused_count (the
                             class it is most often predicted as when wrong; ties go to
                             the lowest class id; empty and 0 when never wrong). top1 and
                             top<k> are empty for a class without examples.
  confusion_<l>_<level>.png  row-normalised confusion matrix in tree order, for every
                             level with at most `max_confusion_classes` (200) classes;
                             lines separate the parent groups, class names on the axes
                             up to 40 classes.
  severity.png               histogram of the LCA height (1..h) of the wrong fine
                             predictions.

and out_dir/metrics.json, the `rates` dict given, keys sorted. The PNGs need
matplotlib (the `bench` extra), imported only when plotting: without it the CSV and
JSON files are written and the plotting step raises ImportError.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only attributes of it are used, so no import at run time
    from hierjax.hierarchy import Hierarchy

MAX_CONFUSION_CLASSES = 200
MAX_LABELLED_CLASSES = 40


def tree_order(hierarchy: Hierarchy, level: int) -> np.ndarray:
    """The level-`level` class ids sorted so that classes with one parent are adjacent.

    Sort key of class g: its ancestor ids from the top level down, then g itself,
    i.e. (a_{h-1}(g), ..., a_{level+1}(g), g); so siblings are contiguous, and so are
    the groups of every coarser level. Returns int64 [C_level], a permutation of ids.
    """
    _check_level(hierarchy, level)
    # Every class has a fine class under it, so first[g] is one (the lowest id) for
    # g = 0..C-1, and its row holds g's path from `level` up.
    _, first = np.unique(hierarchy.ancestors[:, level], return_index=True)
    paths_CxK = hierarchy.ancestors[first, level:]
    # lexsort's last key is the primary one: the top level.
    return np.lexsort(paths_CxK.T)


def group_starts(hierarchy: Hierarchy, level: int, group_level: int) -> np.ndarray:
    """Positions i in `tree_order(level)` where the level-`group_level` ancestor changes
    from the class at i - 1: where a line goes between two parent groups. int64 [K]."""
    _check_level(hierarchy, group_level)
    if group_level <= level:
        raise ValueError(f"group_level {group_level} must be coarser than level {level}")
    order = tree_order(hierarchy, level)
    _, first = np.unique(hierarchy.ancestors[:, level], return_index=True)
    group = hierarchy.ancestors[first[order], group_level]
    return np.flatnonzero(group[1:] != group[:-1]) + 1


def confusion_matrix(labels_N, preds_N, num_classes: int) -> np.ndarray:
    """counts[t, p] = #{i : labels_N[i] = t and preds_N[i] = p}, int64 [C, C].

    Rows are true classes, columns predicted ones. Dense C^2 memory: meant for the
    levels that get plotted (`MAX_CONFUSION_CLASSES`).
    """
    labels_N, preds_N = _ids(labels_N, num_classes, "labels"), _ids(preds_N, num_classes, "preds")
    if preds_N.shape != labels_N.shape:
        raise ValueError(f"labels {labels_N.shape} and preds {preds_N.shape} must match")
    flat = np.bincount(labels_N * num_classes + preds_N, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def per_class_table(
    hierarchy: Hierarchy, level: int, labels_N, preds_N, topk_N=None
) -> list[dict]:
    """One row per level-`level` class, in tree order, as dicts of python values.

    Keys: the class's name and those of its ancestors (keyed by level name),
    "support" = #{i : y_i = g}, "correct" = #{i : y_i = g, p_i = g}, "top1" =
    correct / support (None when support is 0), "topk" = #{i : y_i = g, topk_i} /
    support (only when topk_N is given), "confused_with" = argmax_{p != g} #{i : y_i = g,
    p_i = p} as a name (lowest id on a tie, "" when never wrong), "confused_count" its
    count. Counting is sparse (pairs that occur), so any number of classes is fine.
    """
    _check_level(hierarchy, level)
    num = hierarchy.num_classes[level]
    labels_N, preds_N = _ids(labels_N, num, "labels"), _ids(preds_N, num, "preds")
    if preds_N.shape != labels_N.shape:
        raise ValueError(f"labels {labels_N.shape} and preds {preds_N.shape} must match")
    support = np.bincount(labels_N, minlength=num)
    correct = np.bincount(labels_N[labels_N == preds_N], minlength=num)
    if topk_N is not None:
        topk_N = np.asarray(topk_N, dtype=bool)
        if topk_N.shape != labels_N.shape:
            raise ValueError(f"topk {topk_N.shape} must have the shape of labels {labels_N.shape}")
        topk_hits = np.bincount(labels_N[topk_N], minlength=num)

    wrong = labels_N != preds_N
    pairs, counts = np.unique(labels_N[wrong] * num + preds_N[wrong], return_counts=True)
    true, pred = pairs // num, pairs % num
    # Per true class: the highest count first, then the lowest predicted id.
    by_rank = np.lexsort((pred, -counts, true))
    classes, first = np.unique(true[by_rank], return_index=True)
    confused_with = np.full(num, -1)
    confused_count = np.zeros(num, dtype=np.int64)
    confused_with[classes] = pred[by_rank][first]
    confused_count[classes] = counts[by_rank][first]

    names = hierarchy.class_names[level]
    _, any_fine = np.unique(hierarchy.ancestors[:, level], return_index=True)
    rows = []
    for g in tree_order(hierarchy, level):
        row = {
            hierarchy.level_names[m]: hierarchy.class_names[m][hierarchy.ancestors[any_fine[g], m]]
            for m in range(level, hierarchy.num_levels)
        }
        row["support"] = int(support[g])
        row["correct"] = int(correct[g])
        row["top1"] = float(correct[g] / support[g]) if support[g] else None
        if topk_N is not None:
            row["topk"] = float(topk_hits[g] / support[g]) if support[g] else None
        row["confused_with"] = names[confused_with[g]] if confused_with[g] >= 0 else ""
        row["confused_count"] = int(confused_count[g])
        rows.append(row)
    return rows


def write_per_class_csv(path, rows: list[dict], *, k: int = 5) -> None:
    """Writes `per_class_table` rows; rates with 4 decimals, None as an empty cell.
    The "topk" key becomes the column top<k>."""
    if not rows:
        raise ValueError("no rows to write; per_class_table gives one per class")
    header = [f"top{k}" if key == "topk" else key for key in rows[0]]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                "" if v is None else f"{v:.4f}" if isinstance(v, float) else v
                for v in row.values()
            )


def mistake_severities(hierarchy: Hierarchy, labels_NxH, preds_NxH) -> np.ndarray:
    """LCA height (1..h) of every wrong fine prediction, int32 [#mistakes].

    height = the first level where the predicted and true paths agree, h if they
    never do (`Hierarchy.tree_distance`, `metrics.lca_height`).
    """
    labels_N, preds_N = np.asarray(labels_NxH)[:, 0], np.asarray(preds_NxH)[:, 0]
    wrong = labels_N != preds_N
    return hierarchy.tree_distance(preds_N[wrong], labels_N[wrong])


def _canvas():
    """A fresh Agg Figure; no pyplot, so no global backend switch and no figure registry."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "The evaluation plots need matplotlib: pip install matplotlib (or install "
            "hierjax with the `bench` extra, pip install 'hierjax[bench]'). The CSV and "
            "JSON files were written; pass plots=False to skip the PNGs."
        ) from e

    def new_figure(**kwargs):
        figure = Figure(**kwargs)
        FigureCanvasAgg(figure)
        return figure

    return new_figure


def plot_confusion(
    path, hierarchy: Hierarchy, level: int, labels_N, preds_N, *, title: str = ""
) -> None:
    """Row-normalised confusion matrix of one level in tree order, as a PNG.

    Cell (t, p) = #{y = t, pred = p} / #{y = t} (an empty row stays 0). Lines mark
    where the ancestor at a coarser level changes, thicker for coarser levels; class
    names label the axes when there are at most MAX_LABELLED_CLASSES classes.
    """
    new_figure = _canvas()
    num = hierarchy.num_classes[level]
    order = tree_order(hierarchy, level)
    counts = confusion_matrix(labels_N, preds_N, num)[np.ix_(order, order)]
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    labelled = num <= MAX_LABELLED_CLASSES
    size = min(4.5 + 0.22 * num, 14.0) if labelled else 10.0
    figure = new_figure(figsize=(size + 1.5, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    for m in range(level + 1, hierarchy.num_levels):
        width = 0.4 + 0.5 * (m - level - 1)
        for start in group_starts(hierarchy, level, m):
            ax.axhline(start - 0.5, color="0.45", linewidth=width)
            ax.axvline(start - 0.5, color="0.45", linewidth=width)
    if labelled:
        names = [hierarchy.class_names[level][g] for g in order]
        ax.set_xticks(range(num), names, rotation=90, fontsize=7)
        ax.set_yticks(range(num), names, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    level_name = hierarchy.level_names[level]
    ax.set_xlabel(f"predicted {level_name}")
    ax.set_ylabel(f"true {level_name}")
    heading = f"{level_name}: {num} classes in tree order, rows normalised"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    figure.savefig(path, dpi=120)


def plot_severity(path, hierarchy: Hierarchy, severities, *, num_examples: int,
                  title: str = "") -> None:
    """Bar chart of how many wrong fine predictions have each LCA height 1..h, as a PNG.

    Height l < h means the prediction shares the true class's level-l ancestor but not
    its level-(l-1) one; height h means they share no ancestor below the implicit root.
    """
    new_figure = _canvas()
    h = hierarchy.num_levels
    counts = np.bincount(np.asarray(severities, dtype=np.int64), minlength=h + 1)[1 : h + 1]
    ticks = [f"{l}: same {hierarchy.level_names[l]}" for l in range(1, h)]
    ticks.append(f"{h}: none shared")
    figure = new_figure(figsize=(max(4.5, 1.6 * h + 2), 4), layout="constrained")
    ax = figure.add_subplot()
    bars = ax.bar(range(1, h + 1), counts, color="tab:red", alpha=0.8)
    total = max(int(counts.sum()), 1)
    ax.bar_label(bars, [f"{c} ({100 * c / total:.0f}%)" for c in counts], fontsize=8)
    ax.set_xticks(range(1, h + 1), ticks, fontsize=8)
    ax.set_xlabel("height of the lowest common ancestor of prediction and label")
    ax.set_ylabel("wrong fine predictions")
    ax.margins(y=0.15)
    heading = f"mistake severity: {int(counts.sum())} wrong of {num_examples}"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    figure.savefig(path, dpi=120)


def write_report(
    out_dir,
    hierarchy: Hierarchy,
    labels_NxH,
    preds,
    rates: Mapping,
    *,
    topk=None,
    k: int = 5,
    title: str = "",
    plots: bool = True,
    max_confusion_classes: int = MAX_CONFUSION_CLASSES,
) -> list[Path]:
    """Writes the evaluation files (module docstring) and returns their paths.

    Args:
      out_dir: folder, created if missing.
      hierarchy: the label tree.
      labels_NxH: int [N, h].
      preds: {method: preds_NxH} for several decodes (one subfolder each), or a
        single int [N, h] array (files straight in out_dir).
      rates: written as metrics.json (e.g. `decode.summarize` of the sums).
      topk: like `preds`, bool [N, h] top-k hits per method, or None.
      k: the k of `topk`, for the column name top<k>.
      title: first line of every plot title (e.g. run and split).
      plots: False writes only the CSV and JSON files.
      max_confusion_classes: levels with more classes get no confusion PNG.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h = hierarchy.num_levels
    labels_NxH = _paths(labels_NxH, hierarchy, "labels")
    by_method = dict(preds) if isinstance(preds, Mapping) else {"": preds}
    topk_by_method = (
        {} if topk is None else dict(topk) if isinstance(topk, Mapping) else {"": topk}
    )
    unknown = topk_by_method.keys() - by_method.keys()
    if unknown:
        raise ValueError(f"topk for {sorted(unknown)} but no preds for them")

    written = []
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(dict(rates), sort_keys=True, indent=2, default=_json_scalar) + "\n")
    written.append(path)
    folders = {}
    for method, preds_NxH in by_method.items():
        if method and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", method):
            raise ValueError(f"method name {method!r} is not a plain folder name")
        folder = out_dir / method if method else out_dir
        folder.mkdir(exist_ok=True)
        folders[method] = folder
        preds_NxH = by_method[method] = _paths(preds_NxH, hierarchy, "preds")
        topk_NxH = topk_by_method.get(method)
        if topk_NxH is not None:
            topk_NxH = np.asarray(topk_NxH, dtype=bool)
            if topk_NxH.shape != labels_NxH.shape:
                raise ValueError(
                    f"topk[{method!r}] has shape {topk_NxH.shape}; expected "
                    f"{labels_NxH.shape} like the labels"
                )
        for l in range(h):
            rows = per_class_table(
                hierarchy, l, labels_NxH[:, l], preds_NxH[:, l],
                None if topk_NxH is None else topk_NxH[:, l],
            )
            path = folder / f"per_class_{l}_{_file_part(hierarchy.level_names[l])}.csv"
            write_per_class_csv(path, rows, k=k)
            written.append(path)
    if not plots:
        return written
    for method, preds_NxH in by_method.items():
        folder = folders[method]
        heading = ", ".join(x for x in (title, method and f"{method} decode") if x)
        for l in range(h):
            if hierarchy.num_classes[l] > max_confusion_classes:
                continue  # unreadable, and C^2 memory
            path = folder / f"confusion_{l}_{_file_part(hierarchy.level_names[l])}.png"
            plot_confusion(path, hierarchy, l, labels_NxH[:, l], preds_NxH[:, l], title=heading)
            written.append(path)
        path = folder / "severity.png"
        plot_severity(path, hierarchy, mistake_severities(hierarchy, labels_NxH, preds_NxH),
                      num_examples=len(labels_NxH), title=heading)
        written.append(path)
    return written


def _check_level(hierarchy: Hierarchy, level: int) -> None:
    if not 0 <= level < hierarchy.num_levels:
        raise ValueError(
            f"no level {level}; the levels are 0..{hierarchy.num_levels - 1} "
            f"{hierarchy.level_names}"
        )


def _ids(ids, num_classes: int, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{what} holds id {bad[0]}, outside 0..{num_classes - 1}; drop padded rows "
            "(e.g. those with valid == False) before writing the report"
        )
    return ids


def _paths(x, hierarchy: Hierarchy, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != hierarchy.num_levels or x.dtype.kind not in "iu":
        raise ValueError(
            f"{what} must be an integer [N, {hierarchy.num_levels}] array (one column per "
            f"level of {hierarchy.level_names}), got {x.dtype} {x.shape}"
        )
    for l, num in enumerate(hierarchy.num_classes):
        _ids(x[:, l], num, f"{what}[:, {l}] ({hierarchy.level_names[l]})")
    return x.astype(np.int64)


def _file_part(name: str) -> str:
    """A level name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "level"


def _json_scalar(value):
    """numpy / jax scalars as python numbers, for json.dumps."""
    array = np.asarray(value)
    if array.size != 1:
        raise TypeError(f"metrics.json takes scalar rates, got an array of shape {array.shape}")
    return array.reshape(()).item()
