"""The package's shape: no import cycles (every import statement counts, inside functions too, and the
"module:function" strings the CLI imports by name), and docs/DESIGN.md's package map is the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grader", "reference")
MODULE_STRING = re.compile(r"^((?:grader|reference)(?:\.[A-Za-z_]\w*)+)(?::\w+)?$")


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every grader/reference module this file imports, by any statement or by a module-name string."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def add(mod: str) -> None:
        if mod in known:
            targets.add(mod)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            add(base)
            for alias in node.names:
                add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = MODULE_STRING.match(node.value)
            if m:
                add(m.group(1))
    targets.discard(name)
    return targets


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules, found by an iterative depth-first search, or None."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_walker_sees_imports_inside_functions_and_module_strings(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from grader.grade import grade_command\n"
                   "HANDLER = 'grader.check:check_command'\n", encoding="utf-8")
    known = modules()
    assert imports_of("grader.x", src, known) == {"grader.grade", "grader.check"}


def test_no_module_of_grader_or_reference_imports_its_own_caller():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cli_reaches_every_command_module_by_name():
    graph = import_graph()
    for command in ("grader.grade", "grader.check", "grader.assign", "grader.lms.export", "grader.lms.gradescope"):
        assert command in graph["grader.cli"]


def test_design_package_map_lists_exactly_the_modules_in_the_tree():
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    section = design.split("## Package map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `((?:grader|reference)/[\w/]+\.py)` \|", section, flags=re.M))
    in_tree = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(in_tree - listed) == [], "modules missing from the package map"
    assert sorted(listed - in_tree) == [], "package map names modules that do not exist"
