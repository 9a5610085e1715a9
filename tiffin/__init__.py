"""tiffin: fine-tune ready-made video and speech models, export them, serve them.

One import name for everything: this folder is the shared contract (torch-free: CLI root, task
table, specs, tiffin.json schema, runtimes, the predictors, media decoding, the Python API's
artifact side) plus the training API's entry points (tiffin.video, tiffin.speech,
tiffin.trainer: torch and Lightning, never shipped in a bento; tests/test_imports.py checks
which module pulls in what), and the stages, kept in the repository's top-level folders
train/, export/ and serve/, install as `tiffin.train`, `tiffin.export` and `tiffin.serve`
(pyproject.toml maps them).
"""

__version__ = "0.1.0"

# The Python API, imported on first use so `import tiffin` stays torch-free (the serving install):
# `tiffin.load` and `tiffin.Artifact` need no torch for an ONNX artifact; `tiffin.Trainer` is
# Lightning's; `tiffin.stream_file` sends a recording to a speech server's live endpoint. The task
# classes live in tiffin.video and tiffin.speech.
_LAZY = {"load": "tiffin.api", "Artifact": "tiffin.api", "Trainer": "tiffin.trainer",
         "stream_file": "tiffin.live_client"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tiffin' has no attribute {name!r}")
