"""The project's layering, read from the source: which top-level package may import which, and no cycles.

The import graph is built statically with `ast` from every `import` and `from ... import` in the code, those
inside functions and under `TYPE_CHECKING` included, so a lazy import cannot hide a dependency. `import_graph()`
is the reusable part: a map from each module to the project modules it imports, for checks at any level.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

# Where each layer's code is and the folder Python imports it from. compat/ and custom_nodes/ are on sys.path
# themselves when plugins load: their modules are `folder_paths`, `comfy.utils`, `example_pack.adjust`.
LAYER_SOURCES: dict[str, tuple[Path, str]] = {
    "engine": (PROJECT, "engine"),
    "diffusion": (PROJECT, "diffusion"),
    "training": (PROJECT, "training"),
    "nodes": (PROJECT, "nodes"),
    "app": (PROJECT, "app"),
    "server": (PROJECT, "server"),
    "distributed": (PROJECT, "distributed"),
    "compat": (PROJECT / "compat", "."),
    "custom_nodes": (PROJECT / "custom_nodes", "."),
    "main": (PROJECT, "main.py"),
    "serve": (PROJECT, "serve.py"),
}

# What each layer may import besides itself. `main` and `serve` are the composition root: they may import
# anything and nothing imports them.
ALLOWED_LAYERS: dict[str, set[str]] = {
    "engine": set(),
    "diffusion": {"engine"},
    "training": {"engine", "diffusion"},
    "nodes": {"engine", "diffusion", "training"},
    "app": {"engine", "nodes", "diffusion"},
    "server": {"app", "engine"},
    "distributed": {"app", "engine"},
    "compat": {"engine", "diffusion", "nodes"},
    "custom_nodes": {"compat", "engine", "nodes"},
}
COMPOSITION_ROOT = {"main", "serve"}

# `server` itself is the plugin API (`from server import PromptServer`). Plugins, the compat modules written
# for them, and Ray workers standing in for the server may import that module, never the ones inside it.
PLUGIN_API = "server"
PLUGIN_API_USERS = {"distributed", "compat", "custom_nodes"}


def project_modules() -> dict[str, tuple[str, Path]]:
    """Every module of the layers in `LAYER_SOURCES`, by the name it is imported as: (layer, file)."""
    modules: dict[str, tuple[str, Path]] = {}
    for layer, (root, source) in LAYER_SOURCES.items():
        for path in _python_files(root / source):
            name = _module_name(path.relative_to(root))
            if name in modules:
                raise AssertionError(f"{path} and {modules[name][1]} are both importable as {name!r}")
            modules[name] = (layer, path)
    return modules


def import_graph(modules: dict[str, tuple[str, Path]] | None = None) -> dict[str, set[str]]:
    """Each module -> the project modules it imports. An import names the deepest project module it reaches:
    `from app import files` is `app.files`, `from server import PromptServer` is `server`. A top-level package
    of the project that is not in `LAYER_SOURCES` still shows up (as the dotted name imported), so a new
    package cannot slip past the layering unnoticed."""
    modules = project_modules() if modules is None else modules
    graph = {}
    for name, (_, path) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {target for imported in _imports(tree, package) if
                       (target := _project_module(imported, modules)) is not None}
    return graph


def layer_of(module: str, modules: dict[str, tuple[str, Path]]) -> str:
    """The layer of an indexed module; for a package missing from `LAYER_SOURCES`, its top-level name."""
    return modules[module][0] if module in modules else module.partition(".")[0]


def _python_files(source: Path) -> Iterator[Path]:
    if source.is_file():
        yield source
    else:
        yield from sorted(path for path in source.rglob("*.py") if "__pycache__" not in path.parts)


def _module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, package: str) -> Iterator[str]:
    """Every dotted name the code imports; for `from X import y`, `X.y` (which may be a module or not)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                yield base if alias.name == "*" else f"{base}.{alias.name}" if base else alias.name


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from` import reads from, with a relative one resolved against the importing package."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        raise AssertionError(f"a relative import goes above the top of {package!r}")
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _project_module(imported: str, modules: dict[str, tuple[str, Path]]) -> str | None:
    """The deepest indexed module `imported` names; else the deepest module or package it names in a project
    folder missing from the index; None when it is not the project's (the standard library, torch, ...)."""
    parts = imported.split(".")
    prefixes = [parts[:length] for length in range(len(parts), 0, -1)]
    for prefix in prefixes:
        if ".".join(prefix) in modules:
            return ".".join(prefix)
    for prefix in prefixes:
        path = PROJECT.joinpath(*prefix)
        if path.with_suffix(".py").is_file() or (path.is_dir() and next(path.rglob("*.py"), None) is not None):
            return ".".join(prefix)
    return None


def layer_edges(graph: dict[str, set[str]], modules: dict[str, tuple[str, Path]]) -> dict[tuple[str, str], list[str]]:
    """(importing layer, imported layer) -> the module imports that make the edge, as `a.b -> c.d`."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            source_layer, target_layer = layer_of(module, modules), layer_of(target, modules)
            if source_layer != target_layer:
                edges.setdefault((source_layer, target_layer), []).append(f"{module} -> {target}")
    return edges


def find_cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph given by its edges, as [a, b, ..., a], or None when there is none."""
    successors: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        successors.setdefault(source, []).append(target)
    finished: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in finished:
            return None
        for successor in successors.get(node, []):
            cycle = visit(successor, path + [node])
            if cycle is not None:
                return cycle
        finished.add(node)
        return None

    for start in sorted(successors):
        cycle = visit(start, [])
        if cycle is not None:
            return cycle
    return None


def _may_import(source_layer: str, target: str, target_layer: str) -> bool:
    if source_layer in COMPOSITION_ROOT:
        return True
    if target == PLUGIN_API and source_layer in PLUGIN_API_USERS:
        return True
    return target_layer in ALLOWED_LAYERS.get(source_layer, set())


def test_the_graph_sees_relative_lazy_and_type_checking_imports():
    modules = project_modules()
    graph = import_graph(modules)
    assert "example_pack.adjust" in graph["example_pack"]  # `from .adjust import ...`
    assert "comfy.utils" in graph["example_pack.adjust"]  # a compat module, by the name plugins import it as
    assert "server.state" in graph["server.plugin_api"]  # only under TYPE_CHECKING
    assert "server.app" in graph["serve"]  # only inside serve()
    assert "server" in graph["distributed.actor"]  # `from server import PromptServer`: a name, not a module


def test_find_cycle_finds_one_and_only_one_that_exists():
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None


def test_the_top_level_packages_form_no_cycle():
    modules = project_modules()
    edges = layer_edges(import_graph(modules), modules)
    cycle = find_cycle(set(edges))
    assert cycle is None, "the packages import each other in a cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        example for source, target in zip(cycle, cycle[1:]) for example in edges[(source, target)])


def test_each_package_imports_only_the_packages_below_it():
    modules = project_modules()
    graph = import_graph(modules)
    forbidden = [f"{module} -> {target}" for module, imported in sorted(graph.items()) for target in sorted(imported)
                 if layer_of(module, modules) != layer_of(target, modules)
                 and not _may_import(layer_of(module, modules), target, layer_of(target, modules))]
    assert forbidden == [], ("imports against the layering (ALLOWED_LAYERS in this file; a new top-level package "
                             "needs a row there and in LAYER_SOURCES):\n" + "\n".join(forbidden))


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    cycle = find_cycle({(module, target) for module, imported in graph.items() for target in imported
                        if target != module})
    assert cycle is None, "modules import each other in a cycle: " + " -> ".join(cycle)


FAMILY_PARTS = {"__init__", "detection", "loading", "text_encoding", "sampling", "lora", "demo"}
DEMO_TOOLS: tuple[str, ...] = ()  # ldm_export is real-model code too: diffusion.saving writes checkpoints with it


def _is_demo(module: str) -> bool:
    return module.endswith(".demo") or module in DEMO_TOOLS


def test_every_model_family_is_one_package_with_the_same_parts_found_through_the_registry():
    from diffusion import registry

    families = PROJECT / "diffusion" / "families"
    packages = sorted(path.name for path in families.iterdir() if (path / "__init__.py").is_file())
    assert sorted(registry.FAMILY_PACKAGES) == packages
    for package in packages:
        parts = {path.stem for path in (families / package).glob("*.py")}
        assert parts == FAMILY_PARTS, f"diffusion/families/{package} has {sorted(parts)}"
    assert [family.name for family in registry.families()] == list(registry.FAMILY_PACKAGES)


def test_real_model_code_never_imports_demo_generators_or_training():
    graph = import_graph()
    real = [module for module in graph if module.startswith("diffusion") and not _is_demo(module)
            and not (module.startswith("diffusion.families.") and module.count(".") == 2)]  # registry entries
    leaks = [f"{module} -> {target}" for module in real for target in sorted(graph[module])
             if _is_demo(target) or target.startswith("training")]
    assert leaks == []


def test_the_model_manager_only_caches_and_budgets():
    assert import_graph()["diffusion.manager"] == {"diffusion.memory"}
