"""tiffin: fine-tune ready-made video and speech models, export them, serve them.

This package is the shared contract between the stages (train/, export/, serve/):
the CLI root, the preprocessing spec, and torch-free media decoding.
"""

__version__ = "0.1.0"
