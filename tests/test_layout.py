"""The package's shape: one import name (`tiffin`), and dependencies that point one way.

The stage folders sit at the repository root (the design card's layout) and install as
tiffin.train, tiffin.export, tiffin.serve; train/ never imports export/, serve/ imports neither,
and the contract (tiffin/*.py) imports no stage but in the modules that wire them: the CLI, the
Python API (inside its functions) and the training API (tiffin.video, .speech, .trainer), which the
serving wheel leaves out (tests/test_imports.py imports every module, as a bento would).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("train", "export", "serve")


def imported_modules(path: Path, inside_functions: bool = True) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too), or at
    module level only."""
    def walk(node: ast.AST):
        yield node
        for child in ast.iter_child_nodes(node):
            if inside_functions or not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child)

    found = set()
    for node in walk(ast.parse(path.read_text(), str(path))):
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
    from tiffin.serve.wheel import LEFT_OUT

    # what the serving wheel ships of the contract imports no stage, but for the Python API, which
    # wires them: each imported inside the function that uses it, never at module level. The
    # modules that import stages at module level (the CLI, the training API) are the ones the wheel
    # leaves out, each with its reason (serve/wheel.py)
    wiring = {"api.py": "tiffin.load, Artifact.check/benchmark/serve/build",
              "model_api.py": "what a trained model adds: predict, evaluate, export, serve"}
    stages = tuple(f"tiffin.{s}" for s in STAGES)
    shipped = {p.name: p for p in (ROOT / "tiffin").glob("*.py") if p.name not in LEFT_OUT["tiffin"]}
    assert shipped and set(wiring) <= set(shipped)
    assert not {(name, m) for name, p in shipped.items() if name not in wiring for m in imported_modules(p)
                if any(m == f or m.startswith(f + ".") for f in stages)}
    for name in wiring:
        lazily = {m for m in imported_modules(shipped[name]) if m.startswith(stages)}
        assert lazily and not lazily & imported_modules(shipped[name], inside_functions=False), name


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


def test_no_file_but_the_runtimes_table_lists_runtime_names():
    """Choices and help are read from tiffin.runtimes.RUNTIMES: a string (help, docstring, message)
    that names two runtimes or more elsewhere is a list that a new row would leave out of date."""
    from tiffin.runtimes import RUNTIMES

    # a whole name: not onnxruntime-gpu, a package
    name = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, RUNTIMES), key=len, reverse=True))
                      + r")(?![\w-])")
    lists = {}
    for path in sources("tiffin", *STAGES):
        if path == ROOT / "tiffin" / "runtimes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = sorted(set(name.findall(node.value)))
                if len(named) > 1:
                    lists[f"{path.relative_to(ROOT)}:{node.lineno}"] = named
    assert not lists
    # and the check sees a list where there is one
    assert len(set(name.findall("(onnxruntime, openvino or tensorrt; not onnxruntime-gpu)"))) == 3


FAKE_ROW = """
import json
from tiffin.runtimes import RUNTIMES, Runtime

RUNTIMES["fake-rt"] = Runtime("fake-rt", "onnx", True, lambda *a, **k: None, "tiffin[fake]", "rich", bento="rich")
RUNTIMES["fake-torch"] = Runtime("fake-torch", "pt2", False, lambda *a, **k: None, "tiffin[train]", "torch")

import typer.main
from tiffin.cli import app
from tiffin.serve.settings import VARIABLES, read_settings

cli = typer.main.get_command(app)
helps = {command: next(p.help for p in cli.commands[command].params if p.name == "runtime")
         for command in ("predict", "evaluate", "check", "serve")}
print(json.dumps({"helps": helps, "setting": VARIABLES["TIFFIN_RUNTIME"][1],
                  "reads": read_settings({"TIFFIN_RUNTIME": "fake-rt"}).runtime}))
"""


def test_a_runtime_is_one_row(tmp_path, monkeypatch):
    """A row added to RUNTIMES is in every --runtime help, TIFFIN_RUNTIME's check and help (torch-free
    rows only) and the bento's requirements, with nothing else edited."""
    out = subprocess.run([sys.executable, "-c", FAKE_ROW], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for command, text in found["helps"].items():
        assert "fake-rt" in text, (command, text)
        assert ("fake-torch" in text) == (command != "serve"), (command, text)  # the services run torch-free rows
    assert "fake-rt" in found["setting"] and "fake-torch" not in found["setting"] and found["reads"] == "fake-rt"

    from importlib.metadata import version

    from tiffin.runtimes import RUNTIMES, Runtime
    from tiffin.serve.commands import BENTOFILE, bento_options

    monkeypatch.setitem(RUNTIMES, "fake-rt", Runtime("fake-rt", "onnx", True, lambda *a, **k: None, "tiffin[fake]",
                                                     "rich", bento="rich"))
    meta = {"task": "video-classification", "backbone": "tiffin/tiny-motion", "precision": "fp32", "runtime": "fake-rt"}
    (tmp_path / "context").mkdir()
    packages = bento_options(BENTOFILE, meta, "m:1", "n", False, tmp_path / "context")["python"]["packages"]
    assert f"rich=={version('rich')}" in packages and not any(p.startswith("onnxruntime") for p in packages)
