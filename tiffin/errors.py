"""Errors meant for users: one line that names the file or option and says what to do.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class TiffinError(Exception):
    """A user mistake or bad input, reported as one line."""


class MediaError(TiffinError):
    """A video or audio file that cannot be used, with the path and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def reported(command: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI command so a `TiffinError` prints as one line and exits with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except TiffinError as err:
            import typer  # only CLI commands get here; serving never imports typer

            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def truncation_note(readable: float, declared: float) -> str:
    """The one wording for media cut short (scraped downloads often are), for audio and video alike."""
    return f"truncated: only {readable:.2f} s of the {declared:.2f} s its header declares can be read"
