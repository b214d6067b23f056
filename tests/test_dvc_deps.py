"""dvc.yaml's deps are exact: each stage lists every package module its script imports, directly or
through other package modules, and no module it does not import. A missing dep lets an edit go
unnoticed by `dvc repro` (stale outputs); a superfluous one reruns a stage (hours of training on
real data) for nothing."""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "skinlesion"

# Plumbing that cannot change an output, deliberately left out of every stage's deps (dvc.yaml says
# so too); their own imports are not followed either, as they serve the plumbing:
EXEMPT = {
    "skinlesion/__init__.py",  # the package marker: one environment default, no code a stage runs
    "skinlesion/params.py",  # reads params.yaml; DVC tracks the values themselves (each stage's params)
    "skinlesion/cli.py",  # entry point: argument parsing, and errors turned into messages and exit codes
    "skinlesion/atomic.py",  # writes outputs all or nothing: the bytes written are the caller's
    "skinlesion/errors.py",  # exception classes and their messages
}


def module_file(name: str) -> Path | None:
    """The file of package module `name` (dotted), or None when it is not one of the package's."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = REPO.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the package modules that `path` imports, anywhere in the file (also inside
    functions: a lazy import runs as well)."""
    package = ".".join(path.relative_to(REPO).parts[:-1]) if path.is_relative_to(REPO) else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # `from skinlesion import x` imports the module skinlesion.x when there is one
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if (f := module_file(f"{base}.{alias.name}")) is not None and f.exists())
    return {name for name in found if module_file(name) is not None}


def package_closure(script: Path) -> set[str]:
    """Repository paths of the package files `script` runs, transitively, without the exempt ones."""
    todo, seen = [script], set()
    while todo:
        for name in imported_modules(todo.pop()):
            path = module_file(name)
            rel = path.relative_to(REPO).as_posix()
            if rel in seen or rel in EXEMPT or not path.exists():
                continue
            seen.add(rel)
            todo.append(path)
    return seen


def python_stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage for name, stage in stages.items() if stage["cmd"].startswith("python ")}


def stage_script(stage: dict) -> Path:
    return REPO / stage["cmd"].split()[1]


@pytest.mark.parametrize("name", sorted(python_stages()))
def test_each_stage_depends_on_exactly_the_package_modules_it_runs(name):
    stage = python_stages()[name]
    script = stage_script(stage)
    deps = {d for d in stage["deps"] if d.startswith(f"{PACKAGE}/")}
    needed = package_closure(script)
    assert script.relative_to(REPO).as_posix() in stage["deps"], f"{name}: its own script is not a dep"
    assert not needed - deps, f"{name}: dvc.yaml lacks deps on {sorted(needed - deps)}, which {script.name} runs"
    assert not deps - needed, f"{name}: dvc.yaml lists {sorted(deps - needed)}, which {script.name} never imports"


def test_the_import_walk_follows_every_kind_of_import(tmp_path):
    """The walk itself: `from . import x`, `from .x import y`, `import skinlesion.x`, `from skinlesion
    import x`, lazy imports, through several modules; exempt modules are neither required nor followed."""
    assert imported_modules(REPO / "skinlesion/explain.py") >= {"skinlesion.model", "skinlesion.transforms"}
    closure = package_closure(REPO / "stages/evaluate.py")
    assert "skinlesion/images.py" in closure  # evaluate -> ensemble_prediction -> prediction -> dataset -> images
    assert not closure & EXEMPT
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    import skinlesion.tta\n    from skinlesion import classes\n")
    assert package_closure(script) == {"skinlesion/tta.py", "skinlesion/classes.py"}


def test_every_exempt_module_is_real_or_expected():
    """A renamed module must not stay exempt under its old name (errors.py may not exist yet)."""
    missing = {m for m in EXEMPT if not (REPO / m).exists()} - {"skinlesion/errors.py"}
    assert not missing, f"exempt modules that do not exist: {sorted(missing)}"
