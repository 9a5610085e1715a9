"""tiffin's console: one-line messages on stderr, printed by the global-zero process only.

Torch-free (rich only), so every stage and the serving wheel can say things the same way.
"""

from __future__ import annotations

import os

from rich.console import Console

# soft_wrap: paths stay whole on one line; highlight off: no colours guessed from file names.
console = Console(stderr=True, soft_wrap=True, highlight=False)


def is_rank_zero() -> bool:
    """True on the global-zero process (and before any launcher has started others)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def say(message: str, prefix: str = "") -> None:
    """Print a line on the global-zero process only; `message` is plain text, `prefix` markup."""
    from rich.markup import escape

    if is_rank_zero():
        console.print(prefix + escape(message))
