"""What a dataset check could not use, kept small: the first files in full, the rest as counts.

A CSV of a million wrong paths must fail in seconds with a few lines, not print a million
lines and hold a million error strings. `BadFiles` keeps the first `KEPT` entries (what
metrics.json lists) and counts every entry by kind; `lines()` shows the first `SHOWN` and one
summary line. `all_bad_so_far` is the early stop: once `EARLY_STOP` files were checked and none
was usable, the paths are wrong, and checking the rest would only take longer.
Torch-free (tiffin evaluate reads data this way). Exercised by `tiffin train video --train-csv F`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

SHOWN = 10  # entries printed in full
KEPT = 1000  # entries kept (metrics.json's skipped list); the rest are only counted
EARLY_STOP = 1000  # files checked with none usable before the check gives up
CHUNK = 256  # files checked per batch of threads: bounds the futures alive at once

# (what a reason contains, the kind it is counted as); the first match wins
_KINDS = (("no such file", "missing"), ("not a regular file", "not a regular file"), ("is empty", "empty"),
          ("transcript", "bad transcript"), ("too short", "too short"), ("truncated", "truncated"),
          ("no audio file", "missing"))


def kind_of(reason: str) -> str:
    """The kind a reason is counted as: missing, not a regular file, empty, ..., else unreadable."""
    return next((kind for text, kind in _KINDS if text in reason), "unreadable")


class BadFiles:
    """Bad entries (MediaError or speech BadRow, anything with a `reason`): the first KEPT kept,
    all counted. Iterating and indexing see the kept ones; len() and bool() count them all."""

    def __init__(self, entries: Iterable[Any] = ()):
        self.kept: list[Any] = []
        self.kinds: Counter = Counter()
        self.total = 0
        self.extend(entries)

    def add(self, entry: Any) -> None:
        self.total += 1
        self.kinds[kind_of(entry.reason)] += 1
        if len(self.kept) < KEPT:
            self.kept.append(entry)

    def extend(self, entries: Iterable[Any]) -> None:
        for entry in entries:
            self.add(entry)

    def __iadd__(self, other: Iterable[Any]) -> "BadFiles":
        if isinstance(other, BadFiles):  # its counts, not only the entries it kept
            self.kept += other.kept[: KEPT - len(self.kept)]
            self.kinds.update(other.kinds)
            self.total += other.total
        else:
            self.extend(other)
        return self

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[Any]:
        return iter(self.kept)

    def __getitem__(self, index: int) -> Any:
        return self.kept[index]

    def counts(self) -> str:
        """'199990 missing, 10 unreadable'."""
        return ", ".join(f"{n} {kind}" for kind, n in self.kinds.most_common())

    def lines(self, what: str = "file") -> list[str]:
        """The first SHOWN entries, then one line with how many more there are and of which kinds."""
        shown = [str(entry) for entry in self.kept[:SHOWN]]
        if self.total > SHOWN:
            shown.append(f"... and {self.total - SHOWN} more bad {what}(s); in all {self.counts()}")
        return shown

    def summary(self) -> dict[str, Any]:
        """metrics.json's counts of what was skipped."""
        return {"total": self.total, "kinds": dict(self.kinds.most_common()),
                "listed": min(self.total, KEPT)}


def all_bad_so_far(checked: int, usable: int) -> bool:
    """True once EARLY_STOP entries were checked and none was usable."""
    return checked >= EARLY_STOP and usable == 0


def early_stop_message(source: str, bad: BadFiles, listed: int, what: str = "file") -> str:
    """One line: the first EARLY_STOP entries of `source` are all unusable, of which kinds, one example."""
    first = bad.kept[0] if bad.kept else None
    example = f"; the first: {first}" if first is not None else ""
    return (f"{source}: none of the first {bad.total} of {listed} {what}s can be used ({bad.counts()}){example}; "
            "fix the paths (relative ones start at the list's folder) or the files, then run again")
