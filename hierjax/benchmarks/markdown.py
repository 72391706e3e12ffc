"""Markdown tables, as the benchmark scripts write them into BENCHMARKS.md.

Free of JAX, so that scripts which fork data-loading workers can use it too.
"""

from __future__ import annotations


def row(cells) -> str:
    """One table row of `cells` (strings): `| a | b |`."""
    return "| " + " | ".join(cells) + " |"


def header(names, align: str = "") -> list[str]:
    """A table's header row and its rule. `align` holds one letter per column, "l" or
    "r" (right-aligned, for numbers); columns past its end align left."""
    if set(align) - {"l", "r"} or len(align) > len(names):
        raise ValueError(f"align={align!r}: at most one 'l' or 'r' per column of {list(names)}")
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(names), "l")]
    return [row(names), "|" + "|".join(rules) + "|"]


def table(names, rows, align: str = "") -> str:
    """A table of `rows` (lists of cells) under the header `names`, aligned as in
    header()."""
    return "\n".join([*header(names, align), *map(row, rows)])
