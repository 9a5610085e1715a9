"""`VideoClassificationData`: the Lightning data module of the Python API (`tiffin.video`).

Built the way Lightning Flash users build theirs (`from_folders`, `from_csv`, `from_files`
with train/val/test/predict inputs). Files are listed and probed when the module is made, so
bad paths and unreadable videos are reported at once and `labels` is known before a model is
built; the datasets are made in `setup()`, when the model is known, because the clip size
(frames, crop) is the backbone's. The readers, samplers and datasets are the ones
`tiffin train video` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from tiffin.console import say
from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.bad_files import BadFiles
from tiffin.train.choices import CLIP_SAMPLERS
from tiffin.train.video_data import EpochShuffle, VideoClipDataset, collate_clips
from tiffin.train.video_files import (
    Sample, Video, check_classes, discover_folder, drop_duplicates, probe_all, read_csv, say_truncated,
    stratified_split, truncated,
)
from tiffin.video_io import is_video_file


def one_or_many(files: str | Path | Sequence[str | Path] | None) -> list[Path] | None:
    """Files to predict: a str or Path is one file (Flash's chapter writes `predict_files="a.wav"`;
    iterating it would give one "file" per character), a sequence each of its items."""
    if files is None:
        return None
    return [Path(files)] if isinstance(files, (str, Path)) else [Path(p) for p in files]

SPLITS = ("train", "val", "test")


@dataclass
class Listing:
    """What one source of labelled videos gives: its samples, the held-out split a published
    layout defines (UCF101's test list validates when no validation set is given), and the
    files it lists that are not on disk."""

    samples: list[Sample]
    held_out: list[Sample] | None = None
    held_out_name: str = ""
    missing: list[str] = field(default_factory=list)


def list_folder(folder: str | Path, option: str, split: int = 1, train: bool = True) -> Listing:
    """A folder of videos: class folders (`DIR/<label>/<video>`), or, for training, a published
    layout with its own split lists (UCF101, HMDB51, Something-Something v2; split `split`)."""
    from tiffin.train.video_layouts import read_split_layout

    layout = read_split_layout(folder, split, option) if train else None
    if layout is None:
        return Listing(discover_folder(folder, option))
    say(f"{option} {folder}: {layout.summary(split)}")
    _say_missing(layout.missing, "video(s) its split files list are not in the folder")
    return Listing(layout.train, layout.test, layout.held_out(split), layout.missing)


def list_csv(path: str | Path, option: str, video_root: str | Path | None = None, input_field: str | None = None,
             target_field: str | None = None) -> Listing:
    """A CSV/TSV of video paths and labels, or a Kinetics annotation CSV matched to the clips
    downloaded under `video_root` (default: beside it)."""
    from tiffin.train.video_layouts import is_kinetics_csv, read_kinetics

    if not is_kinetics_csv(path):
        return Listing(read_csv(path, option, input_field, target_field))
    found = read_kinetics(path, option, video_root)
    say(f"{option} {path}: Kinetics annotations, {len(found.train)} of {len(found.train) + len(found.missing)} "
        "clips found")
    _say_missing(found.missing, "annotated clip(s) were not downloaded")
    if not found.train:
        raise TiffinError(f"{option} {path}: none of its clips is on disk; give the folder of its "
                          "<youtube_id>_<start>_<end> files (--video-root DIR, video_root=)")
    return Listing(found.train, missing=found.missing)


def _say_missing(missing: list[str], what: str) -> None:
    if missing:
        shown = "; ".join(missing[:3])
        say(f"{len(missing)} {what} ({shown}{' ...' if len(missing) > 3 else ''})", prefix="[yellow]note[/] ")


def media_files_in(folder: str | Path, option: str, is_media=is_video_file, kind: str = "video") -> list[Path]:
    """Every media file under `folder` (sorted, at any depth), for prediction."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TiffinError(f"{option} {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_media(p))
    if not files:
        raise TiffinError(f"{option} {folder}: holds no {kind} files")
    return files


class VideoClassificationData(pl.LightningDataModule):
    """Labelled videos for training, validation and testing, and videos to predict.

    Example:
        >>> dm = VideoClassificationData.from_folders(train_folder="kinetics/train", val_folder="kinetics/val",
        ...                                           clip_sampler="uniform", clip_duration=1, batch_size=8)
        >>> dm.labels, dm.num_classes
    """

    skipped_what, skipped_key = "unreadable video(s)", "skipped_files"  # the run folder's note

    def __init__(
        self,
        train: Sequence[Sample] | Listing | None = None,
        val: Sequence[Sample] | Listing | None = None,
        test: Sequence[Sample] | Listing | None = None,
        predict: Sequence[str | Path] | None = None,
        *,
        clip_sampler: str = "random",
        clip_duration: float | None = None,
        clips_per_video: int = 2,
        predict_clips: int = 1,
        decode_audio: bool = False,
        batch_size: int = 4,
        num_workers: int = 0,
        val_split: float | None = None,
        flip: bool = True,
        strict: bool = False,
        seed: int = 42,
        origin: dict[str, str] | None = None,
    ):
        """Samples as the readers of tiffin.train.video_files give them, or a `Listing` (list_folder,
        list_csv); the `from_*` methods are the usual way in. `clip_duration` (seconds) overrides
        the backbone's; `val_split` holds out that fraction of each class when no validation set
        is given (a layout's own split validates first). `origin` names where each split came
        from (for messages)."""
        super().__init__()
        if decode_audio:
            raise TiffinError("decode_audio=True: tiffin's video classifiers take frames only; leave it False")
        if clip_sampler not in CLIP_SAMPLERS:
            raise TiffinError(f"clip_sampler={clip_sampler!r}: choose one of {', '.join(CLIP_SAMPLERS)}")
        if clip_duration is not None and clip_duration <= 0:
            raise TiffinError(f"clip_duration={clip_duration}: give a positive number of seconds")
        if batch_size < 1:
            raise TiffinError(f"batch_size={batch_size}: give 1 or more")
        self.clip_sampler, self.clip_duration, self.clips_per_video = clip_sampler, clip_duration, clips_per_video
        self.predict_clips, self.batch_size, self.num_workers = predict_clips, batch_size, num_workers
        self.flip, self.strict, self.seed = flip, strict, seed
        origin = origin or {}
        listed = {"train": train, "val": val, "test": test}
        self.missing = sum(len(x.missing) for x in listed.values() if isinstance(x, Listing))
        samples = {k: x.samples if isinstance(x, Listing) else x for k, x in listed.items()}
        if samples["val"] is None and isinstance(train, Listing) and train.held_out is not None:
            samples["val"] = train.held_out  # the layout defines what validates
            say(f"validating on the layout's own split: {train.held_out_name}")
        dropped = 0
        for split in SPLITS:
            if samples[split] is not None:
                samples[split], n = drop_duplicates(list(samples[split]), origin.get(split, split))
                dropped += n
        if dropped:
            say(f"ignored {dropped} repeated mention(s) of the same file")
        self.labels: list[str] | None = check_classes(samples["train"], origin.get("train", "train")) if train else None
        for split in ("val", "test"):
            extra = sorted({s.label for s in samples[split] or []} - set(self.labels or []))
            if extra and self.labels is not None:
                raise TiffinError(f"{origin.get(split, split)}: classes {extra} do not occur in the training data; "
                                  "every class needs training videos")
        self.videos: dict[str, list[Video] | None] = {}
        self.skipped = BadFiles()
        self.first_epoch: int | None = None  # a resumed run's (tiffin.Trainer sets it)
        count = sum(len(s) for s in samples.values() if s)
        if count:
            say(f"probing {count} videos ...")
        for split in SPLITS:
            if samples[split] is None:
                self.videos[split] = None
                continue
            videos, bad = probe_all(samples[split], strict, clip_duration, origin.get(split, split))
            for line in bad.lines("video"):  # the first few and counts, however many there are
                say(line, prefix="[yellow]skipped[/] ")
            say_truncated(videos)
            self.skipped += bad
            self.videos[split] = videos
        if self.labels is not None:
            lost = sorted(set(self.labels) - {v.label for v in self.videos["train"]})
            if lost:
                raise TiffinError(f"class {lost[0]!r} has no readable training videos; fix or remove its files")
            if self.videos["val"] is None and val_split:
                if not 0 < val_split < 1:
                    raise TiffinError(f"val_split={val_split}: give a fraction between 0 and 1")
                self.videos["train"], self.videos["val"] = stratified_split(self.videos["train"], val_split, seed)
            if self.videos["val"] is not None and not self.videos["val"] and val is None:
                raise TiffinError("no validation videos: give a validation set, or at least 2 videos in a class to "
                                  "split off")
        self.predict_files = one_or_many(predict)
        self.datasets: dict[str, VideoClipDataset] = {}

    # --- the ways in (Lightning Flash's names) -----------------------------------------------

    @classmethod
    def from_folders(cls, train_folder: str | Path | None = None, val_folder: str | Path | None = None,
                     test_folder: str | Path | None = None, predict_folder: str | Path | None = None,
                     **options: Any) -> "VideoClassificationData":
        """Class folders (`DIR/<label>/<video>`, Kinetics-style) per split; `predict_folder` holds
        videos at any depth. A UCF101 or HMDB51 `train_folder` uses its official split (`split=1`
        by default), its test list validating unless `val_folder` is given.

        Example:
            >>> VideoClassificationData.from_folders(train_folder="data/train", val_split=0.2, batch_size=8)
        """
        folders = {"train": train_folder, "val": val_folder, "test": test_folder}
        split = options.pop("split", 1)
        listed = {k: list_folder(v, f"{k}_folder", split, train=k == "train") if v is not None else None
                  for k, v in folders.items()}
        predict = media_files_in(predict_folder, "predict_folder") if predict_folder is not None else None
        return cls(**listed, predict=predict, origin={k: f"{k}_folder {v}" for k, v in folders.items()}, **options)

    @classmethod
    def from_csv(cls, input_field: str | None = None, target_field: str | None = None, train_file: str | Path | None = None,
                 val_file: str | Path | None = None, test_file: str | Path | None = None,
                 predict_file: str | Path | None = None, **options: Any) -> "VideoClassificationData":
        """CSV or TSV files of video paths (relative to the file) and labels, in the columns named
        (default: the first of path/video/file/filename and of label/class/target).

        Example:
            >>> VideoClassificationData.from_csv("video", "label", train_file="train.csv", val_file="val.csv")
        """
        video_root = options.pop("video_root", None)
        files = {"train": train_file, "val": val_file, "test": test_file}
        listed = {k: list_csv(v, f"{k}_file", video_root, input_field, target_field) if v is not None else None
                  for k, v in files.items()}
        predict = None
        if predict_file is not None:
            from tiffin.train.table_io import open_table

            from tiffin.train.video_files import _PATH_COLUMNS

            path, reader = open_table(predict_file, "predict_file", "a CSV with a column of video paths")
            names = (input_field.lower(),) if input_field else _PATH_COLUMNS
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            column = next((fields[n] for n in names if n in fields), None)
            if column is None:
                raise TiffinError(f"predict_file {path}: has no {names[0]!r} column (found {list(fields)})")
            predict = [Path(p) if Path(p).is_absolute() else path.parent / p
                       for p in ((row.get(column) or "").strip() for row in reader) if p]
        return cls(**listed, predict=predict, origin={k: f"{k}_file {v}" for k, v in files.items()}, **options)

    @classmethod
    def from_files(cls, train_files: Sequence[str | Path] | None = None, train_targets: Sequence[str] | None = None,
                   val_files: Sequence[str | Path] | None = None, val_targets: Sequence[str] | None = None,
                   test_files: Sequence[str | Path] | None = None, test_targets: Sequence[str] | None = None,
                   predict_files: Sequence[str | Path] | None = None, **options: Any) -> "VideoClassificationData":
        """Lists of video files and their labels.

        Example:
            >>> VideoClassificationData.from_files(predict_files=["a.mp4", "b.mp4"])
        """
        given = {"train": (train_files, train_targets), "val": (val_files, val_targets),
                 "test": (test_files, test_targets)}
        samples = {}
        for split, (files, targets) in given.items():
            if files is None:
                samples[split] = None
                continue
            if targets is None or len(targets) != len(files):
                raise TiffinError(f"{split}_targets: give one label per file of {split}_files "
                                  f"({len(files)} files, {0 if targets is None else len(targets)} labels)")
            samples[split] = [Sample(Path(f), str(t)) for f, t in zip(files, targets)]
        return cls(**samples, predict=predict_files, origin={k: f"{k}_files" for k in given}, **options)

    # --- Lightning ---------------------------------------------------------------------------

    @property
    def has_validation(self) -> bool:
        return bool(self.videos.get("val"))

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else len(self.labels)

    def spec_for(self, model: Any) -> VideoSpec:
        """The clip spec training uses: the model's (its backbone's frames and crop), with this
        module's clip duration, which the model then records (its checkpoints describe the
        clips it was trained on)."""
        spec = getattr(model, "spec", None)
        if not isinstance(spec, VideoSpec):
            raise TiffinError("VideoClassificationData: train it with a tiffin VideoClassifier")
        if self.labels is not None and list(spec.labels) != self.labels:
            raise TiffinError(f"the model's labels {list(spec.labels)} differ from the data's {self.labels}; build it "
                              "with VideoClassifier(labels=datamodule.labels)")
        if self.clip_duration is not None and spec.clip_duration != self.clip_duration:
            model.use_spec(replace(spec, clip_duration=float(self.clip_duration)))
        return model.spec

    def setup(self, stage: str) -> None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        if stage == "predict":
            return
        if model is None:
            raise TiffinError("VideoClassificationData: give it to a Trainer together with a VideoClassifier")
        spec = self.spec_for(model)
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        for split in needed:
            videos = self.videos.get(split)
            if videos is None:
                if split == "train":
                    raise TiffinError("this data module has no training videos; give train_folder/train_file/train_files")
                continue
            if not videos:
                raise TiffinError(f"no readable {split} videos; fix the files reported above")
            if split == "train":
                if stage == "fit":
                    self._say_run(spec)
                self.datasets[split] = VideoClipDataset(videos, list(spec.labels), spec, self.clip_sampler,
                                                        self.clips_per_video, train=True, flip=self.flip,
                                                        strict=self.strict, seed=self.seed)
            else:
                self.datasets[split] = VideoClipDataset(videos, list(spec.labels), spec, "constant_clips_per_video",
                                                        1, strict=self.strict)

    def _say_run(self, spec: VideoSpec) -> None:
        cut = truncated(self.videos["train"] + (self.videos["val"] or []))
        bad = len(self.skipped)
        say(f"{len(spec.labels)} classes, {len(self.videos['train'])} training and {len(self.videos['val'] or [])} "
            f"validation videos{f', {bad} skipped' if bad else ''}"
            f"{f', {len(cut)} truncated (their readable part used)' if cut else ''}; clips of {spec.num_frames} "
            f"frames over {spec.clip_duration}s at {spec.crop_size}px")

    def run_report(self) -> dict[str, Any]:
        """What a run folder's metrics.json records of the data (tiffin.Trainer(default_root_dir=))."""
        return {"train_videos": len(self.videos.get("train") or []), "val_videos": len(self.videos.get("val") or []),
                "skipped_files": [{"path": e.path, "reason": e.reason} for e in self.skipped],  # the first KEPT
                "skipped": self.skipped.summary(),
                "truncated_files": truncated((self.videos.get("train") or []) + (self.videos.get("val") or [])),
                "listed_missing": self.missing}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        dataset = self.datasets.get(split)
        if dataset is None:
            return []  # Lightning skips a split with no batches
        args: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_clips,
                                    persistent_workers=self.num_workers > 0)
        if shuffle:
            trainer = self.trainer
            epoch = self.first_epoch if self.first_epoch is not None else trainer.current_epoch if trainer else 0
            sampler = EpochShuffle(len(dataset), self.seed, epoch,
                                   rank=trainer.global_rank if trainer else 0,
                                   world_size=trainer.world_size if trainer else 1)
            return DataLoader(dataset, sampler=sampler, drop_last=len(dataset) > self.batch_size, **args)
        return DataLoader(dataset, shuffle=False, **args)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        raise TiffinError("predict with tiffin.Trainer.predict(model, datamodule=...): it averages each video's "
                          "clips as `tiffin predict` does")
