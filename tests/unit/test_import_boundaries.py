"""The house rule (docs: DESIGN.md "Layout"): market/, broker/, strategies/ and backtest/ are plain
Python — they never import ray, training/ or serving/ (nor actors/ or cluster/, which sit above
them), directly or through each other. Every import statement counts, also the ones inside
functions: a lazy import is still a dependency."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ("market", "broker", "strategies", "backtest")
FORBIDDEN = ("ray", "training", "serving", "actors", "cluster")


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = _module_of(path).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = pkg[:len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_of(p): p for top in {*PLAIN, *FORBIDDEN} if (ROOT / top).is_dir()
             for p in (ROOT / top).rglob("*.py")}
    return {m: {i for i in _imports(p)} for m, p in files.items()}, set(files)


def _chain(start: str, graph, known) -> list[str] | None:
    """The first import chain from `start` that reaches a forbidden module, else None."""
    seen, stack = set(), [(start, [start])]
    while stack:
        mod, path = stack.pop()
        for imp in sorted(graph.get(mod, ())):
            top = imp.split(".")[0]
            if top in FORBIDDEN:
                return path + [imp]
            target = imp if imp in known else imp.rsplit(".", 1)[0] if imp.rsplit(".", 1)[0] in known else None
            if target and target not in seen and target.split(".")[0] in PLAIN:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


GRAPH, KNOWN = _graph()


@pytest.mark.parametrize("module", sorted(m for m in KNOWN if m.split(".")[0] in PLAIN))
def test_plain_rooms_never_reach_ray_training_or_serving(module):
    chain = _chain(module, GRAPH, KNOWN)
    assert chain is None, " → ".join(chain)


def test_the_check_sees_a_violation():
    graph = {"strategies.x": {"strategies.y"}, "strategies.y": {"training.policy"}}
    assert _chain("strategies.x", graph, {"strategies.x", "strategies.y"}) == \
        ["strategies.x", "strategies.y", "training.policy"]
