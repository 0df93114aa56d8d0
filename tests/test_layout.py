"""The packages import one way: no module imports itself back through others, and the layers below never
import the layers above (README, "Where things live")."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_lxmert_s", "faster_rcnn_vg", "lxmert_s_msp")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that `name` imports anywhere in its file (in functions and under TYPE_CHECKING
    too: a circle there is a circle for the reader)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_no_module_imports_itself_back():
    circles = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles


def test_lower_layers_never_import_higher_ones():
    # the model and the detector load where this package is not installed (Hub folders)
    never = {
        "modeling_lxmert_s": ("lxmert_s_msp",),
        "faster_rcnn_vg": ("lxmert_s_msp", "modeling_lxmert_s"),
        "lxmert_s_msp.data": (
            "lxmert_s_msp.training",
            "lxmert_s_msp.evaluation",
            "lxmert_s_msp.evidence",
            "lxmert_s_msp.hub",
        ),
        "lxmert_s_msp.evaluation": ("lxmert_s_msp.training", "lxmert_s_msp.evidence", "lxmert_s_msp.hub"),
        "lxmert_s_msp.training": ("lxmert_s_msp.evidence",),
        "lxmert_s_msp.hub": ("lxmert_s_msp.evidence",),
    }
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        for layer, above in never.items()
        if name.startswith(layer) and target.startswith(above)
    ]
    assert not wrong
