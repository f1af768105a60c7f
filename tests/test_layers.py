"""The layers go one way: the import graph of the layers (read with ``ast``, imports inside
functions included) has no cycle and no forbidden edge, vision/ loads neither transformers nor TRL,
and the ground layer (``curate.core``) loads no torch.

    curate.core  (ground: errors, atomic IO, cache keys, device)
      <- curate.llm  (data, models, chat rendering, batching, generation, tiny models)
        <- eval <- sft <- rl <- curate (selectors, demo) <- curate.cli / curate.commands
      <- vision  (on curate.core only)
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eval", "sft", "rl", "curate", "vision")
LAYERS = ("curate.core", "curate.llm", "eval", "sft", "rl", "curate", "vision")
# Which layers each may import (the CLI lives in curate/ and nothing imports it).
ALLOWED = {"curate.core": set(), "curate.llm": {"curate.core"}, "eval": {"curate.core", "curate.llm"},
           "sft": {"curate.core", "curate.llm"}, "rl": {"curate.core", "curate.llm", "eval", "sft"},
           "vision": {"curate.core"}, "curate": {"curate.core", "curate.llm", "eval", "sft", "rl", "vision"}}


def layer_of(module: str) -> str | None:
    """``curate.core.io`` -> ``curate.core``; ``curate.learnalign`` -> ``curate``; ``torch`` -> None."""
    for layer in LAYERS:  # the sub-layers first
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def imported_modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports anywhere (relative imports resolve inside its package)."""
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # 'from curate import core'
    return names


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            source = layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for module in imported_modules(path):
                target = layer_of(module)
                if target and target != source and not (target == "curate" and module == "curate"):
                    graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_package_graph_has_no_cycle_and_no_forbidden_edge():
    graph = package_graph()
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    forbidden = {layer: sorted(graph[layer] - ALLOWED[layer]) for layer in LAYERS}
    assert not any(forbidden.values()), f"imports against the layers: {forbidden}"


def test_nothing_imports_the_cli():
    cli = ("curate.cli", "curate.commands")
    offenders = sorted(str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                       if not str(path.relative_to(ROOT)).startswith(("curate/cli.py", "curate/commands/"))
                       and any(m == c or m.startswith(c + ".") for m in imported_modules(path) for c in cli))
    assert not offenders, f"these import the CLI: {offenders}"


def test_the_cycle_finder_finds_a_planted_cycle():
    # The checker itself, on adversarial input: a cycle two steps long, and a self-consistent chain.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_vision_loads_neither_transformers_nor_trl():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "vision").rglob("*.py"))
    loaded = _loaded_after("\n".join(f"import {m.removesuffix('.__init__')}" for m in modules))
    assert "torch" in loaded  # the check can see a heavy import at all
    assert not loaded & {"transformers", "trl", "peft", "datasets"}


GROUND = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                for p in (ROOT / "curate" / "core").glob("*.py"))


@pytest.mark.parametrize("module", GROUND)
def test_the_ground_layer_loads_no_torch(module):
    assert not _loaded_after(f"import {module}") & {"torch", "transformers", "datasets", "numpy"}


def test_the_ground_check_sees_a_heavy_import():
    assert "torch" in _loaded_after("import curate.core.device\ncurate.core.device.resolve_device('cpu')")
