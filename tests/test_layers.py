"""The floors of the package (docs/design.md): imports only go down, and the three jobs (training, evaluation,
inference) never import each other. Every ``import`` and ``from ... import`` of every module, at the top of a file
or inside a function, is drawn; an arrow that runs up, or sideways between the jobs, fails with its file and
line."""

from __future__ import annotations

import ast
from pathlib import Path

import stvsr

PACKAGE = Path(stvsr.__file__).parent

# floor of each top-level module or folder of the package
FLOORS = {
    **dict.fromkeys(("errors", "registry", "schema", "atomic", "outputs", "signals", "device", "resize"), 1),
    **dict.fromkeys(("imagenet", "metrics", "ops", "runner", "workers"), 1),
    **dict.fromkeys(("archs", "model"), 2),
    "data": 3,
    **dict.fromkeys(("train", "eval", "infer"), 4),
    "doctor": 5,
}
JOBS = ("train", "eval", "infer")


def _part(module: str) -> str:
    """The top-level part of ``stvsr.<part>...`` (a module or a folder)."""
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported stvsr module) of every import in ``path``, relative imports resolved."""
    module = "stvsr." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("stvsr.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name == "stvsr":  # from stvsr import x: the submodules named
                found += [(node.lineno, f"stvsr.{alias.name}") for alias in node.names]
            elif name.startswith("stvsr."):
                found.append((node.lineno, name))
    return found


def test_every_part_of_the_package_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__", "csrc"}
    assert sorted(parts - set(FLOORS)) == []


def test_imports_only_go_down_and_jobs_do_not_import_each_other():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _part("stvsr." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if here not in FLOORS:
            continue
        for line, name in _imports(path):
            there = _part(name)
            if not there or there == here or there not in FLOORS:
                continue
            if FLOORS[there] > FLOORS[here] or (here in JOBS and there in JOBS):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({here}, floor {FLOORS[here]}) imports {name} "
                             f"(floor {FLOORS[there]})")  # fmt: skip
    assert wrong == []
