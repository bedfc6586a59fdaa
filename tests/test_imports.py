"""The code's layers, read from the source: no import cycles among the project's
modules (a cycle makes import order matter and hides which module owns what), and the
HTTP side and the client never reach the model side. Imports inside functions count:
a lazy import that closes a circle is still a circle."""
import ast
import graphlib
from pathlib import Path

import pytest

from scripts.processes import REPO

PACKAGES = ("api", "common", "delivery", "worker", "m2fp_client", "m2fp_contract", "scripts")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def imported_modules(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            parts = candidate.split(".")
            owner = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in MODULES),
                         None)
            if owner is not None and owner != name:
                found.add(owner)
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_graph_is_read_from_the_source():
    # A reader that found nothing would pass every check below.
    assert len(MODULES) > 60
    assert {"worker.engine", "common.labels"} <= GRAPH["worker.torch_engine"]
    assert "common.job_store" in GRAPH["common.services"] and "m2fp_contract.schema" in reachable("api.app")


def test_no_module_imports_itself_through_others():
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


@pytest.mark.parametrize("side, forbidden", [
    ("api", ("worker",)),  # the HTTP side never loads the model side (torch, OpenVINO)
    ("common", ("api", "worker", "delivery", "scripts")),  # shared code depends on no process
    ("m2fp_contract", ("api", "common", "worker", "delivery", "m2fp_client", "scripts")),  # published with the client
    ("m2fp_client", ("api", "common", "worker", "delivery", "scripts")),
    ("delivery", ("api", "worker")),
])
def test_each_layer_reaches_only_what_it_may(side, forbidden):
    for name in sorted(MODULES):
        if name == side or name.startswith(side + "."):
            reached = sorted(m for m in reachable(name) if m.split(".")[0] in forbidden)
            assert not reached, f"{name} reaches {reached}"


def test_every_name_a_module_exports_exists():
    import importlib

    for name, path in sorted(MODULES.items()):
        if "__all__" in path.read_text() and name.split(".")[0] in ("common", "m2fp_contract", "m2fp_client"):
            module = importlib.import_module(name)
            missing = [export for export in getattr(module, "__all__", ()) if not hasattr(module, export)]
            assert not missing, f"{name}.__all__ names {missing}, which it does not define"
