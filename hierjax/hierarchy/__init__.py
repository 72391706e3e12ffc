"""Label hierarchies: the `Hierarchy` type (`tree.py`) and the shipped trees (`shipped.py`,
CSV files in `files/`)."""

from hierjax.hierarchy.shipped import NAMES as SHIPPED
from hierjax.hierarchy.shipped import load
from hierjax.hierarchy.tree import Hierarchy

__all__ = ["SHIPPED", "Hierarchy", "load"]
