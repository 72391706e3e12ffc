"""Training output: a progress line, metric files (JSONL + TensorBoard), a final table."""

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
from tensorboardX import SummaryWriter


def _to_scalar(value: Any, name: str = "value") -> int | float:
    """A python number from a python/numpy/jax scalar (jax values are fetched to host)."""
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"Metric {name!r} must be a scalar, got shape {array.shape}.")
    item = array.reshape(()).item()
    return item if isinstance(item, int) and not isinstance(item, bool) else float(item)


def _format_number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressBar:
    """One status line on stderr: step/total, img/s, scalars, elapsed time, ETA.

    On a terminal the line is redrawn in place every `every_s` seconds (default
    0.5); otherwise (a log file) a plain line is printed every `every_s` seconds
    (default 60). `update` is cheap between prints: scalars, which may be jax
    arrays still being computed, are only fetched (a device sync) when a line is
    printed.

    Args:
      total_steps: the step training ends at.
      initial_step: the step training starts (or resumes) from.
      images_per_step: the global batch size, for images per second.
      every_s: seconds between printed lines.
      stream: where to write (default sys.stderr).
      enabled: False prints nothing (the processes of a multi-process run but process 0).
    """

    def __init__(
        self,
        total_steps: int,
        initial_step: int = 0,
        *,
        images_per_step: int,
        every_s: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ):
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._every_s = every_s if every_s is not None else (0.5 if self._tty else 60.0)
        self._total = total_steps
        self._images_per_step = images_per_step
        self._start_time = time.monotonic()
        # Throughput and ETA count from the first update, after compilation.
        self._first = None  # (time, step) of the first update
        self._last_print = None  # (time, step) of the last printed line
        self._step = initial_step
        self._scalars: Mapping[str, Any] = {}
        self._drawn = ""  # the status line currently on a terminal

    def update(self, step: int, scalars: Mapping[str, Any] | None = None) -> None:
        """Records that `step` steps are done; prints if `every_s` has passed."""
        now = time.monotonic()
        self._step = step
        if scalars is not None:
            self._scalars = scalars
        if self._first is None:
            self._first = self._last_print = (now, step)
        elif now - self._last_print[0] >= self._every_s:
            self._print(self._line(now))
            self._last_print = (now, step)

    def close(self) -> None:
        """Prints the final state and ends the line."""
        self._print(self._line(time.monotonic()))
        if self._tty and self._enabled:
            self._stream.write("\n")
            self._stream.flush()
        self._drawn = ""

    def _seconds_per_step(self, since: tuple[float, int] | None, now: float) -> float:
        if since is None or self._step <= since[1]:
            return math.nan
        return (now - since[0]) / (self._step - since[1])

    def _line(self, now: float) -> str:
        # Recent speed for img/s, the whole run's average for a steadier ETA.
        recent = self._seconds_per_step(self._last_print, now)
        average = self._seconds_per_step(self._first, now)
        if math.isnan(recent):
            recent = average
        ips = self._images_per_step / recent
        fields = [f"step {self._step}/{self._total}"]
        fields.append(f"{ips:,.0f} img/s" if math.isfinite(ips) else "? img/s")
        fields += [f"{k} {_format_number(_to_scalar(v, k))}" for k, v in self._scalars.items()]
        fields.append(f"elapsed {_format_duration(now - self._start_time)}")
        fields.append(f"ETA {_format_duration((self._total - self._step) * average)}")
        return " | ".join(fields)

    def _print(self, line: str) -> None:
        if not self._enabled:
            return
        if self._tty:
            # Pad with blanks so a shorter line fully covers the previous one.
            self._stream.write("\r" + line.ljust(len(self._drawn)))
            self._drawn = line
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and to TensorBoard.

    JSONL: one object per line, {"step": s, "split": split, name: value, ...},
    appended, so a resumed run continues the same file. TensorBoard: one run per split
    under `workdir/tensorboard/<split>`, so train and eval curves of the same metric
    share a chart. `resumed_at` (the step of the checkpoint a run resumes from) drops the
    rows an earlier run wrote after that step, from the JSONL file and from TensorBoard,
    since the resumed run writes them again. One writer per run: `enabled=False` (every
    process of a multi-process run but process 0) writes nothing.
    """

    def __init__(self, workdir, *, resumed_at: int | None = None, enabled: bool = True):
        self._enabled = enabled
        self._tensorboard: dict[str, SummaryWriter] = {}
        if not enabled:
            return
        self._workdir = os.fspath(workdir)
        os.makedirs(self._workdir, exist_ok=True)
        path = os.path.join(self._workdir, "metrics.jsonl")
        if resumed_at is not None and os.path.exists(path):
            _drop_rows_after(path, resumed_at)
        # Line buffering: a crash loses at most the line being written.
        self._jsonl = open(path, "a", buffering=1, encoding="utf-8")
        self._purge_step = None if resumed_at is None else resumed_at + 1

    def write(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> None:
        """Writes one record of scalars (python, numpy or jax scalars) for `split`."""
        values = {name: _to_scalar(value, name) for name, value in scalars.items()}
        reserved = {"step", "split"} & values.keys()
        if reserved:
            raise ValueError(f"Metric names {sorted(reserved)} are reserved in metrics.jsonl.")
        if not self._enabled:
            return
        step = int(step)
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        if split not in self._tensorboard:
            self._tensorboard[split] = SummaryWriter(
                os.path.join(self._workdir, "tensorboard", split), purge_step=self._purge_step
            )
        writer = self._tensorboard[split]
        for name, value in values.items():
            writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flushes and closes all files."""
        for writer in self._tensorboard.values():
            writer.close()
        self._tensorboard = {}
        if self._enabled:
            self._jsonl.close()

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrites a metrics.jsonl without its rows after `step` (and without a partial
    last line left by a job killed mid-write)."""
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def summary_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table, one row per key of `rows`, one column per metric name.

    Columns appear in first-seen order; a metric missing from a row shows as "-".
    Floats get 4 decimals (accuracies, mean severities), ints print as they are.
    """
    columns = list(dict.fromkeys(name for row in rows.values() for name in row))

    def cell(row, name):
        if name not in row:
            return "-"
        value = _to_scalar(row[name], name)
        return str(value) if isinstance(value, int) else f"{value:.4f}"

    table = [[""] + columns] + [
        [label] + [cell(row, name) for name in columns] for label, row in rows.items()
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    table.insert(1, ["-" * w for w in widths])

    def render(line):
        first = line[0].ljust(widths[0])
        rest = [text.rjust(width) for text, width in zip(line[1:], widths[1:])]
        return "  ".join([first] + rest).rstrip()

    return "\n".join(render(line) for line in table)


def evaluation_table(rates: Mapping[str, Any], hierarchy) -> str:
    """The per-level table of an evaluation's rates (`hierjax.decode.summarize` names):
    one row per hierarchy level with its top-1 through the fine head's argmax, each
    head's own top-1 and top-5 and its agreement with the fine head, and the top-1 of
    every tree-consistent decode present (keys "<decode>/top1/<l>"); then the mistake
    severity (mean LCA height of the wrong fine predictions) and the mean hierarchical
    distance (the same sum over every prediction)."""
    decodes = [key.removesuffix("/count") for key in rates if key.endswith("/count")]
    rows = {}
    for l, name in enumerate(hierarchy.level_names):
        row = {"top-1 via fine": rates[f"top1_from_fine/{l}"]}
        for column, key in (("top-1 own head", "top1"), ("top-5 own head", "top5"),
                            ("agrees with fine", "consistency")):
            if f"{key}/{l}" in rates:
                row[column] = rates[f"{key}/{l}"]
        for method in decodes:
            row[f"top-1 {method} decode"] = rates[f"{method}/top1/{l}"]
        rows[f"{name} ({hierarchy.num_classes[l]})"] = row
    lines = [summary_table(rows),
             f"mistake severity (mean LCA height of wrong fine predictions): "
             f"{rates['mistake_severity']:.3f}; mean hierarchical distance: "
             f"{rates['hier_distance']:.3f}"]
    lines += [f"{method} decode: mistake severity {rates[f'{method}/mistake_severity']:.3f}; "
              f"mean hierarchical distance {rates[f'{method}/hier_distance']:.3f}"
              for method in decodes]
    return "\n".join(lines)
