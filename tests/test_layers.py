"""The house's layers: every tagalign module imports only its own package or lower ones, and no import circles.

The import graph is read from the source (every ``import``, also inside functions), so a lazy import that climbs
is caught too. A planted upward import and a planted circle must each be reported.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module may import from its own top-level package or module, or from a lower layer; peers within
#: a layer do not import each other. (README "Layout" and docs/architecture rules say the same.)
LAYERS: list[set[str]] = [
    {"atomic", "compat", "errors", "feature_cache", "visualize"},
    {"models"},
    {"tags"},
    {"data"},
    {"segmentation", "tagging", "training"},
    {"api", "inference"},
    {"quickstart", "webapp"},
]


def _module_name(package_root: Path, path: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_root: Path) -> dict[str, set[str]]:
    """``{module: {tagalign modules it imports}}`` for every ``.py`` file under ``package_root``."""
    modules = {_module_name(package_root, p): p for p in package_root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                candidates = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
            else:
                continue
            for candidate in candidates:
                if not candidate.startswith("tagalign"):
                    continue
                while candidate not in modules and "." in candidate:
                    candidate = candidate.rsplit(".", 1)[0]
                if candidate in modules and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    # ``from .x import y`` adds both ``pkg.x.y`` (if a module) and ``pkg.x``; keep the most specific only
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return graph


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package (its lazy names are the public façade)


def _layer(top: str) -> int:
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"tagalign.{top} is in no layer: add it to LAYERS (and README's Layout)")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        top = _top(module)
        if top is None:
            continue
        for target in sorted(targets):
            other = _top(target)
            if other is None or other == top:
                continue
            if _layer(other) >= _layer(top):
                problems.append(f"{module} imports {target}: tagalign.{other} is not below tagalign.{top}")
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle (as the path of one depth-first search that closes it)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_imports_only_its_own_package_or_lower_layers():
    graph = import_graph(ROOT / "tagalign")
    assert len(graph) > 60 and "tagalign.models.encoders.registry" in graph
    assert layer_violations(graph) == []


def test_no_import_circles():
    assert circles(import_graph(ROOT / "tagalign")) == []


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "tagalign"
    shutil.copytree(ROOT / "tagalign", copy, ignore=shutil.ignore_patterns("__pycache__", "*.txt", "*.json"))
    return copy


def test_a_planted_upward_import_is_reported(package_copy):
    target = package_copy / "models" / "projector.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from ..segmentation.evaluate import evaluate\n")
    problems = layer_violations(import_graph(package_copy))
    assert problems == ["tagalign.models.projector imports tagalign.segmentation.evaluate: tagalign.segmentation is "
                        "not below tagalign.models"]


def test_a_planted_sideways_import_and_a_circle_are_reported(package_copy):
    benchmark = package_copy / "tagging" / "benchmark.py"
    benchmark.write_text(benchmark.read_text() + "\nfrom ..segmentation.benchmarks import BENCHMARKS\n")
    labels = package_copy / "tags" / "labels.py"
    labels.write_text(labels.read_text() + "\n\ndef _planted():\n    from .merge import merge_parsed\n")
    graph = import_graph(package_copy)
    assert layer_violations(graph) == ["tagalign.tagging.benchmark imports tagalign.segmentation.benchmarks: "
                                       "tagalign.segmentation is not below tagalign.tagging"]
    assert circles(graph) == [["tagalign.tags.labels", "tagalign.tags.merge", "tagalign.tags.labels"]]


def test_no_module_in_the_package_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "tagalign").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
