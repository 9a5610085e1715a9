"""What importing each module costs, and that no module imports itself back.

(a) Every module of the contract (tiffin/*.py) and of tiffin.serve is imported alone, in a fresh
interpreter where what a bento does not install cannot be imported (torch and its family,
typer, tiffin.train, tiffin.export): the serving wheel ships exactly those that still import
(serve/wheel.py's own list, read from `shipped_modules`), and each contract module pulls in the
heavy packages the table below says, no more.
(b) The import graph of tiffin/, train/, export/ and serve/ (read with ast, the folders named as
they install: train/ is tiffin.train) has no cycle at module level, nor through imports made
inside functions (but the one known below, with why).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"tiffin": "tiffin", "train": "tiffin.train", "export": "tiffin.export", "serve": "tiffin.serve"}

# the contract: tiffin/*.py
CORE = sorted("tiffin" if p.stem == "__init__" else f"tiffin.{p.stem}" for p in (ROOT / "tiffin").glob("*.py"))
# the training extra's packages (pyproject.toml: train, export)
TORCH = ("torch", "torchvision", "torchaudio", "pytorch_lightning", "lightning", "torchmetrics", "pytorchvideo",
         "transformers", "onnx")
# what a bento does not install (bentofile.yaml: the serving wheel, numpy, PyAV, soundfile, soxr,
# cryptography, ONNX Runtime, pydantic, and BentoML with its own dependencies)
NOT_IN_A_BENTO = (*TORCH, "typer", "tiffin.train", "tiffin.export")
# heavy packages whose loading this file reports
HEAVY = ("av", "soundfile", "soxr", "onnxruntime", "openvino", "cv2", "bentoml", "flashlight", "rapidfuzz")
NEEDS_MORE = "cannot import in a bento"
# contract module -> the heavy packages importing it alone loads; NEEDS_MORE: it needs torch, typer
# or a stage the wheel leaves out (serve/wheel.py's LEFT_OUT says which and why). A module missing
# here fails with what it pulls in: add it with that set, or make the import lazy.
PULLS_IN: dict[str, set[str] | str] = {
    # tables, tiffin.json, errors and settings: nothing heavy (the services and the CLI read them)
    "tiffin": set(), "tiffin.artifact_formats": set(), "tiffin.api": set(), "tiffin.model_api": set(), "tiffin.tasks": set(), "tiffin.runtimes": set(),
    "tiffin.spec": set(), "tiffin.errors": set(), "tiffin.limits": set(), "tiffin.cpu": set(), "tiffin.console": set(),
    "tiffin.artifact_json": set(), "tiffin.artifact_schema": set(), "tiffin.signing": set(), "tiffin.trust": set(),
    "tiffin.text_file": set(), "tiffin.ngram": set(), "tiffin.ctc": set(), "tiffin.ctc_beam": set(),
    "tiffin.speech_stream": set(), "tiffin.live_client": set(),
    "tiffin.chunking": set(), "tiffin.onnx_session": set(), "tiffin.media_open": set(), "tiffin.audio_io": set(),
    # the host inference path decodes video: PyAV
    "tiffin.video_io": {"av"}, "tiffin.inference": {"av"}, "tiffin.host": {"av"},
    # the CLI and the training API
    "tiffin.cli": NEEDS_MORE, "tiffin.__main__": NEEDS_MORE, "tiffin.trust_cli": NEEDS_MORE,
    "tiffin.video": NEEDS_MORE, "tiffin.speech": NEEDS_MORE, "tiffin.trainer": NEEDS_MORE,
}

# runs in the fresh interpreter: module names in, imported one after the other, and what importing
# each did out (one JSON line; `heavy` counts what the ones before it loaded too)
_PROBE = """
import importlib, json, sys
MODULES, BLOCKED, HEAVY = (json.loads(a) for a in sys.argv[1:4])
asked = []
class NotInABento:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            asked.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInABento())
results = {}
for module in MODULES:
    del asked[:]
    try:
        importlib.import_module(module)
        failed = None
    except ImportError as err:
        failed = f"{type(err).__name__}: {err}"
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    results[module] = {"failed": failed, "asked": list(asked), "heavy": heavy}
print(json.dumps(results))
"""


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:-1], rel.stem]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def probe(groups: list[list[str]], blocked: tuple[str, ...] = NOT_IN_A_BENTO) -> dict[str, dict]:
    """Each group's modules imported in a fresh interpreter where `blocked` cannot be (two at a time)."""
    def one(modules: list[str]) -> dict:
        out = subprocess.run([sys.executable, "-c", _PROBE, *map(json.dumps, (modules, blocked, HEAVY))],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (modules, out.stderr[-2000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    # the slowest group first
    with ThreadPoolExecutor(2) as pool:
        return {m: r for found in pool.map(one, sorted(groups, key=len, reverse=True)) for m, r in found.items()}


@pytest.fixture(scope="module")
def imported() -> dict[str, dict]:
    """Every contract module alone (what each pulls in), and tiffin.serve's modules in one interpreter
    (whether each imports: BentoML, which two of them import, takes seconds)."""
    stage = [module_name(p) for p in sorted((ROOT / "serve").glob("*.py"))]
    return probe([*([m] for m in CORE), stage])


def test_the_serving_wheel_ships_exactly_the_modules_a_bento_can_import(imported):
    from tiffin.serve.wheel import LEFT_OUT, shipped_modules

    shipped = set(shipped_modules())
    importable = {m for m, r in imported.items() if r["failed"] is None}
    assert shipped == importable, {"shipped but cannot import": {m: imported[m] for m in shipped - importable},
                                   "importable but left out": sorted(importable - shipped)}
    left_out = {f"{package}.{name[:-3]}" for package, names in LEFT_OUT.items() for name in names}
    assert left_out == set(imported) - shipped  # each with its reason, in serve/wheel.py
    for module in shipped:  # nothing it imports was refused, not even where an ImportError is caught
        assert not imported[module]["asked"], (module, imported[module]["asked"])


def test_each_contract_module_pulls_in_what_the_table_says(imported):
    found = {m: (set(r["heavy"]) if r["failed"] is None else NEEDS_MORE) for m, r in imported.items() if m in CORE}
    unlisted = {m: found[m] for m in found if m not in PULLS_IN}
    assert not unlisted, f"contract modules missing from PULLS_IN, with what they pull in: {unlisted}"
    wrong = {m: {"table": PULLS_IN[m], "found": found[m], "refused": imported[m]["asked"]}
             for m in found if found[m] != PULLS_IN[m]}
    assert not wrong
    assert not set(PULLS_IN) - set(found), "PULLS_IN names modules that no longer exist"


def test_what_is_left_out_needs_torch_or_is_a_command_line(imported):
    """Where only torch cannot be imported (typer and the stages can), the training API still
    fails and the CLI modules import: the wheel leaves the first out for torch, the others for
    typer and the stages they wire (serve/wheel.py's LEFT_OUT says so, one reason each)."""
    from tiffin.serve.wheel import LEFT_OUT

    left_out = [m for m in CORE if f"{m.rpartition('.')[2]}.py" in LEFT_OUT["tiffin"]]
    without_torch = probe([[m] for m in left_out], TORCH)
    for module, result in without_torch.items():
        needs_torch = "torch" in LEFT_OUT["tiffin"][f"{module.rpartition('.')[2]}.py"]
        assert (result["failed"] is not None) == needs_torch, (module, result)
        assert bool(set(result["asked"]) & set(TORCH)) == needs_torch, (module, result)
    # reading the task table or tiffin.json, and the settings, import nothing heavy (no PyAV)
    for module in ("tiffin.tasks", "tiffin.api", "tiffin.runtimes", "tiffin.serve.settings"):
        assert imported[module]["heavy"] == [], (module, imported[module])


# --- (b) the import graph ------------------------------------------------------------------------

# cycles through imports made inside functions, each with why it is still there; the test fails
# when one is gone too, so that this list stays true
KNOWN_CYCLES = {
    frozenset({"tiffin.serve.commands", "tiffin.serve.container"}):
        "container.base_image asks commands.default_base_image for the bentofile's base image, and "
        "commands.build_image builds with container; moving default_base_image into container.py ends it",
}


def import_graph(inside_functions: bool) -> dict[str, set[str]]:
    """module -> the modules of this repository it imports (at module level, or at any depth)."""
    modules = {module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}
    graph = {}
    for module, path in modules.items():
        found: set[str] = set()

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not inside_functions:
                    continue
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # never runs
                if isinstance(child, ast.Import):
                    found.update(alias.name for alias in child.names)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:  # relative: from the importing module's package
                        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                        base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                    found.add(base)
                    found.update(f"{base}.{alias.name}" for alias in child.names)  # `from pkg import module`
                visit(child)

        visit(ast.parse(path.read_text(), str(path)))
        # importing a.b.c runs a and a.b first
        found |= {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
        graph[module] = {m for m in found if m in modules and m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a cycle's members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def shortest_cycles(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """For each module of a component, the shortest way its imports lead back to it: "a -> b -> a"."""
    inside = set(component)
    found = set()
    for start in component:
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & inside):
                if w == start:  # the same cycle found from each of its modules is written once
                    ring = paths[v]
                    first = ring.index(min(ring))
                    found.add(" -> ".join([*ring[first:], *ring[:first], ring[first]]))
                    queue = []
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return sorted(found, key=len)


def test_no_import_cycle_at_module_level():
    graph = import_graph(inside_functions=False)
    assert "tiffin.api" in graph["tiffin.model_api"] and "tiffin.model_api" in graph["tiffin.video"]  # it is read
    assert not cycles(graph), [shortest_cycles(graph, c) for c in cycles(graph)]


def test_no_import_cycle_through_imports_inside_functions_but_the_known_ones():
    graph = import_graph(inside_functions=True)
    found = {frozenset(c): shortest_cycles(graph, c) for c in cycles(graph)}
    new = [way for c in set(found) - set(KNOWN_CYCLES) for way in found[c]]
    assert not new, "import cycles (imports inside functions count):\n" + "\n".join(new)
    assert not set(KNOWN_CYCLES) - set(found), "a known cycle is gone: take it out of KNOWN_CYCLES"
    # none through the contract: tiffin.json's reader, the task table and the host path; the API and
    # the task classes (tiffin.video builds on tiffin.model_api, which builds on tiffin.api)
    assert not {m for c in found for m in c} & set(CORE)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
