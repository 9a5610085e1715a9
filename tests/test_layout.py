"""The package's shape: one import name (`tiffin`), and dependencies that point one way.

The stage folders sit at the repository root (the design card's layout) and install as
tiffin.train, tiffin.export, tiffin.serve; train/ never imports export/, serve/ imports neither,
and the contract (tiffin/*.py) imports no stage but in the CLI and the Python API that wire them.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("train", "export", "serve")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_no_module_imports_a_stage_as_a_top_level_name():
    offenders = {(str(p.relative_to(ROOT)), m) for p in sources("tiffin", *STAGES, "tests", "benchmarks")
                 for m in imported_modules(p) if m.split(".")[0] in STAGES}
    assert not offenders
    # nor in code held in strings (subprocesses, bentoml service names)
    loose = re.compile(r"\bfrom (train|export|serve)(\.\w+)+ import\b|\bimport (train|export|serve)\.\w"
                       r"|[\"'](train|export|serve)\.\w+:\w+[\"']")
    in_strings = [str(p.relative_to(ROOT)) for p in sources("tiffin", *STAGES, "tests", "benchmarks")
                  if loose.search(p.read_text())]
    assert not in_strings


def test_dependencies_point_one_way():
    def importers(folders: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> set:
        return {(str(p.relative_to(ROOT)), m) for p in sources(*folders) if p.name not in allowed
                for m in imported_modules(p) if any(m == f or m.startswith(f + ".") for f in forbidden)}

    assert not importers(("train",), ("tiffin.export", "tiffin.serve"))
    assert not importers(("export",), ("tiffin.serve",))
    assert not importers(("serve",), ("tiffin.train", "tiffin.export"))
    contract = [p for p in (ROOT / "tiffin").glob("*.py")]
    # the CLI and the Python API (tiffin.api, .video, .speech, .trainer) wire the stages together
    wiring = ("cli.py", "__main__.py", "api.py", "video.py", "speech.py", "trainer.py")
    assert contract and not importers(("tiffin",), tuple(f"tiffin.{s}" for s in STAGES), wiring)


def test_a_wheel_of_the_repository_has_tiffin_as_its_only_top_level_package(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools leaves a build/ folder in the tree it builds
    for name in ("pyproject.toml", "README.md", "bentofile.yaml"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for folder in ("tiffin", *STAGES):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("tiffin-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"tiffin"}
    for inside in ("tiffin/train/backbones.py", "tiffin/export/formats.py", "tiffin/serve/video.py",
                   "tiffin/serve/bentofile.yaml", "tiffin/train/embedded/tiny-en/model.safetensors"):
        assert inside in names, inside


def test_every_task_row_names_parts_that_exist():
    """A row's stage parts are "module:attribute" strings: each must import and be callable."""
    from dataclasses import fields

    from tiffin.tasks import TASKS

    for task in TASKS.values():
        for field in fields(task):
            value = getattr(task, field.name)
            if isinstance(value, str) and ":" in value and field.name != "service":
                assert callable(task.part(field.name)), (task.name, field.name)
        module, _, cls = task.service.partition(":")
        assert (ROOT / module.replace("tiffin.serve", "serve").replace(".", "/")).with_suffix(".py").is_file()
        assert task.predictor.task == task.name and task.spec.__name__.lower().startswith(task.short)
