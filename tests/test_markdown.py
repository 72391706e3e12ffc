"""The markdown tables the benchmark scripts write (hand-written expected text)."""

import pytest

from hierjax.benchmarks import markdown


def test_table_left_aligned_by_default():
    assert markdown.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_align_right_and_short_align_string():
    assert markdown.header(["name", "ms", "note"], align="lr") == [
        "| name | ms | note |", "|---|---:|---|"]
    assert markdown.table(["x", "y"], [], align="rr") == "| x | y |\n|---:|---:|"


@pytest.mark.parametrize("align", ["lx", "lrr"])
def test_bad_align_names_the_columns(align):
    with pytest.raises(ValueError, match="one 'l' or 'r' per column of \\['a', 'b'\\]"):
        markdown.header(["a", "b"], align=align)
