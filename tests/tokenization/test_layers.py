"""The modules of `tokenization/` import one way (see the package docstring), and take no private names from
each other: an import anywhere in a module, at the top, in a function or under TYPE_CHECKING, counts."""

from __future__ import annotations

import ast
from pathlib import Path

import tokenization

# Bottom first: a module may import only the modules before it.
LAYERS = [
    "errors",
    "fingerprint",
    "chat",
    "textprep",
    "special_ids",
    "tokenizer",
    "fastpath",
    "engine",
    "cache",
    "loading",
]


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module inside the package, name taken from it or "", line) of every import in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tokenization."):
                    found.append((alias.name.split(".")[1], "", node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tokenization":
            for alias in node.names:
                if node.module == "tokenization":  # `from tokenization import cache`: a module
                    found.append((alias.name, "", node.lineno))
                else:
                    found.append((node.module.split(".")[1], alias.name, node.lineno))
    return sorted(found, key=lambda item: item[2])


def test_every_module_is_placed_and_imports_point_down():
    folder = Path(tokenization.__file__).parent
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert sorted(LAYERS) == modules, "a new module needs its place in LAYERS and the package docstring"
    wrong = []
    for module in LAYERS:
        for target, name, line in _imports(folder / f"{module}.py"):
            if LAYERS.index(target) >= LAYERS.index(module):
                wrong.append(f"{module}.py:{line} imports {target} (not below it)")
            if name.startswith("_"):
                wrong.append(f"{module}.py:{line} takes the private {name} from {target}")
    assert wrong == []


def test_the_checker_sees_function_level_and_private_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from tokenization.loading import _restore\n"
        "def f():\n"
        "    from tokenization import cache\n"
        "    import tokenization.fastpath\n"
    )
    assert _imports(source) == [("loading", "_restore", 3), ("cache", "", 5), ("fastpath", "", 6)]
