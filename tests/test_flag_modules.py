"""Commands that define absl flags at import are never imported by other modules: two
such modules in one process define `--config` twice (a DuplicateFlagError that once
failed CI only when pytest happened to run both in one worker)."""

import ast
from pathlib import Path

import hierjax

PACKAGE = Path(hierjax.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _defines_flags(tree: ast.Module) -> bool:
    for node in tree.body:
        value = getattr(node, "value", None)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
                and value.func.attr.startswith("DEFINE_"):
            return True
    return False


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_module_imports_a_command_that_defines_flags():
    trees = {_module_name(p): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}
    commands = {name for name, tree in trees.items() if _defines_flags(tree)}
    assert "hierjax.main" in commands and "hierjax.benchmarks.variants" in commands
    offenders = [f"{name} imports {cmd}" for name, tree in trees.items()
                 for cmd in commands & _imported(tree) if cmd != name]
    assert not offenders, "move the shared code to a module without flags: " + "; ".join(offenders)
