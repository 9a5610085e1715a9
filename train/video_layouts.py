"""Video corpora that define their own splits, read as their distributions lay them out, torch-free.

- UCF101: `UCF-101/<class>/v_*.avi` with `ucfTrainTestlist/` (classInd.txt, trainlist0N.txt
  `Class/v_x.avi LABEL_ID`, testlist0N.txt `Class/v_x.avi`), found inside the folder or beside it.
- HMDB51: `<class>/<video>.avi` with `<class>_test_split<N>.txt` files (`video.avi FLAG`: 1
  train, 2 test, 0 unused), in the folder, in a `*splits*` folder inside it, or beside it.
- Something-Something v2: `labels.json`, `train.json` and `validation.json` (also named
  `something-something-v2-*.json`; entries `{"id", "template", "label", "placeholders"}`) and
  `<id>.webm` files (in the folder or a folder inside it, such as `20bn-something-something-v2/`).
  The class is the template with its brackets removed, as the benchmark scores it
  ("Putting [something] on [something]" -> "Putting something on something").

A layout is a row of LAYOUTS: a finder (where its split files are, or None) and a reader
(split N -> train and test samples). `--train-folder` tries them in order; a folder that
matches none is read as plain class folders. Listed files that are missing are reported and
counted, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tiffin.errors import TiffinError
from tiffin.train.video_files import Sample


@dataclass
class SplitRead:
    """What a layout's split files gave: samples per split and the listed files that are missing."""

    layout: str
    train: list[Sample]
    test: list[Sample]
    missing: list[str]
    numbered: bool = True  # the layout has numbered splits (--split N); SSv2 has one

    def held_out(self, split: int) -> str:
        """What validates: "UCF101 split 1's test list", "Something-Something v2's validation list"."""
        return f"{self.layout} split {split}'s test list" if self.numbered else f"{self.layout}'s validation list"

    def summary(self, split: int) -> str:
        return (f"{self.layout} layout{f', split {split}' if self.numbered else ''}: {len(self.train)} training and "
                f"{len(self.test)} {'test' if self.numbered else 'validation'} videos")


def _ucf_lists(root: Path) -> Path | None:
    for candidate in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist"):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def _lines(path: Path, option: str) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise TiffinError(f"{option} {path}: is not UTF-8 text") from None


def read_ucf101(root: Path, split: int, option: str) -> SplitRead:
    lists = _ucf_lists(root)
    videos = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    classes = {}
    for line in _lines(lists / "classInd.txt", option):
        index, name = line.split(maxsplit=1)
        classes[index] = name
    out: dict[str, list[Sample]] = {"train": [], "test": []}
    missing = []
    for kind in ("train", "test"):
        listing = lists / f"{kind}list{split:02d}.txt"
        if not listing.is_file():
            raise TiffinError(f"{option} {root}: UCF101 has no {listing.name}; choose --split 1, 2 or 3")
        for number, line in enumerate(_lines(listing, option), 1):
            parts = line.split()
            relative = parts[0]
            label = classes.get(parts[1]) if len(parts) > 1 else relative.split("/")[0]
            if label is None:
                raise TiffinError(f"{option} {listing} line {number}: label id {parts[1]} is not in classInd.txt")
            path = videos / relative
            if path.is_file():
                out[kind].append(Sample(path, label))
            else:
                missing.append(f"{listing.name} line {number}: {relative}")
    return SplitRead("UCF101", out["train"], out["test"], missing)


def _hmdb_splits(root: Path) -> Path | None:
    for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir() and "split" in p.name.lower()),
                      root.parent):
        if next(candidate.glob("*_test_split[0-9].txt"), None) is not None:
            return candidate
    return None


def read_hmdb51(root: Path, split: int, option: str) -> SplitRead:
    folder = _hmdb_splits(root)
    files = sorted(folder.glob(f"*_test_split{split}.txt"))
    if not files:
        raise TiffinError(f"{option} {root}: HMDB51 has no *_test_split{split}.txt; choose --split 1, 2 or 3")
    out: dict[str, list[Sample]] = {"train": [], "test": []}
    missing = []
    for listing in files:
        label = listing.name[: -len(f"_test_split{split}.txt")]
        for number, line in enumerate(_lines(listing, option), 1):
            name, _, flag = line.rpartition(" ")
            kind = {"1": "train", "2": "test"}.get(flag.strip())
            if kind is None:
                continue  # 0: in neither split
            path = root / label / name.strip()
            if path.is_file():
                out[kind].append(Sample(path, label))
            else:
                missing.append(f"{listing.name} line {number}: {label}/{name.strip()}")
    return SplitRead("HMDB51", out["train"], out["test"], missing)


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def is_kinetics_csv(path: str | Path) -> bool:
    """A Kinetics annotation CSV: label,youtube_id,time_start,time_end[,split[,is_cc]]."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            header = [h.strip().lower() for h in f.readline().split(",")]
    except (OSError, UnicodeDecodeError):
        return False
    return all(c in header for c in KINETICS_COLUMNS)


def read_kinetics(path: str | Path, option: str = "--train-csv", video_root: str | Path | None = None) -> SplitRead:
    """A Kinetics annotation CSV matched to downloaded clips named `<youtube_id>_<start:06d>_<end:06d>.<ext>`,
    in class folders (the label, or with spaces as underscores) or flat, under `video_root` (default:
    the folder named like the CSV beside it, `train/` for train.csv, else the CSV's folder). Rows
    whose clip was never downloaded are listed in `missing`, as Kinetics downloads always miss some."""
    import csv

    from tiffin.video_io import is_video_file

    path = Path(path)
    roots = [Path(video_root)] if video_root is not None else [
        r for r in (path.parent / path.stem, path.parent) if r.is_dir()]
    if video_root is not None and not roots[0].is_dir():
        raise TiffinError(f"--video-root {video_root}: no such folder")
    found: dict[str, Path] = {}
    for root in roots:
        for file in sorted(root.rglob("*")):
            if file.is_file() and is_video_file(file):
                found.setdefault(file.stem, file)
        if found:
            break
    samples, missing = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [(h or "").strip().lower() for h in reader.fieldnames or []]
        for row in reader:
            try:
                name = f"{row['youtube_id'].strip()}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            except (ValueError, AttributeError):
                raise TiffinError(f"{option} {path}: line {reader.line_num} has no whole time_start/time_end") from None
            label = (row.get("label") or "").strip()
            if name in found:
                samples.append(Sample(found[name], label))
            else:
                missing.append(f"{path.name} line {reader.line_num}: {name}")
    return SplitRead("Kinetics", samples, [], missing)


def _ssv2_file(root: Path, part: str) -> Path | None:
    for folder in (root, root.parent):
        for name in (f"{part}.json", f"something-something-v2-{part}.json"):
            if (folder / name).is_file():
                return folder / name
    return None


def _ssv2_lists(root: Path) -> Path | None:
    labels, train = _ssv2_file(root, "labels"), _ssv2_file(root, "train")
    return labels if labels is not None and train is not None else None


def _json(path: Path, option: str):
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TiffinError(f"{option} {path}: is not JSON ({getattr(exc, 'msg', exc)})") from None


def ssv2_class(template: str) -> str:
    """SSv2's class of an entry: its template without the placeholder brackets."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: Path, split: int, option: str) -> SplitRead:
    from tiffin.video_io import is_video_file

    classes = set(_json(_ssv2_lists(root), option))
    found = {p.stem: p for p in sorted(root.rglob("*")) if p.is_file() and is_video_file(p)}
    out: dict[str, list[Sample]] = {"train": [], "validation": []}
    missing = []
    for part in out:
        listing = _ssv2_file(root, part)
        if listing is None:
            continue
        for number, entry in enumerate(_json(listing, option), 1):
            try:
                video_id, label = str(entry["id"]), ssv2_class(entry["template"])
            except (KeyError, TypeError, AttributeError):
                raise TiffinError(f"{option} {listing}: entry {number} lacks an id or a template") from None
            if label not in classes:
                raise TiffinError(f"{option} {listing}: entry {number}'s class {label!r} is not in labels.json")
            if video_id in found:
                out[part].append(Sample(found[video_id], label))
            else:
                missing.append(f"{listing.name} entry {number}: {video_id}.webm")
    return SplitRead("Something-Something v2", out["train"], out["validation"], missing, numbered=False)


# (name, finds the layout's split files in a folder, reads split N)
LAYOUTS: list[tuple[str, Callable[[Path], object], Callable[[Path, int, str], SplitRead]]] = [
    ("UCF101", _ucf_lists, read_ucf101),
    ("HMDB51", _hmdb_splits, read_hmdb51),
    ("Something-Something v2", _ssv2_lists, read_ssv2),
]


def read_split_layout(root: str | Path, split: int = 1, option: str = "--train-folder") -> SplitRead | None:
    """The train/test samples of split `split` when `root` is in a layout of LAYOUTS, else None."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    for _, finds, read in LAYOUTS:
        if finds(root) is not None:
            found = read(root, split, option)
            if not found.train:
                raise TiffinError(f"{option} {root}: {found.layout}{f' split {split}' if found.numbered else ''} "
                                  "lists no video found here "
                                  f"({len(found.missing)} listed files missing)")
            return found
    return None
