"""tiffin: fine-tune ready-made video and speech models, export them, serve them.

One import name for everything: this folder is the shared contract (torch-free: CLI root, task
table, specs, tiffin.json schema, runtimes, the host inference path, media decoding), and the
stages, kept in the repository's top-level folders train/, export/ and serve/, install as
`tiffin.train`, `tiffin.export` and `tiffin.serve` (pyproject.toml maps them).
"""

__version__ = "0.1.0"
