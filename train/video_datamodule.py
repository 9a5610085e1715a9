"""`VideoClassificationData`: the Lightning data module of the Python API (`tiffin.video`).

Built the way Lightning Flash users build theirs (`from_folders`, `from_csv`, `from_files`
with train/val/test/predict inputs). Files are listed and probed when the module is made, so
bad paths and unreadable videos are reported at once and `labels` is known before a model is
built; the datasets are made in `setup()`, when the model is known, because the clip size
(frames, crop) is the backbone's. The readers, samplers and datasets are the ones
`tiffin train video` uses.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.choices import CLIP_SAMPLERS
from tiffin.train.run_folder import say
from tiffin.train.video_data import EpochShuffle, VideoClipDataset, collate_clips
from tiffin.train.video_fit import say_truncated
from tiffin.train.video_files import (
    Sample, Video, check_classes, discover_folder, drop_duplicates, probe_all, read_csv, stratified_split,
)
from tiffin.video_io import is_video_file


def one_or_many(files: str | Path | Sequence[str | Path] | None) -> list[Path] | None:
    """Files to predict: a str or Path is one file (Flash's chapter writes `predict_files="a.wav"`;
    iterating it would give one "file" per character), a sequence each of its items."""
    if files is None:
        return None
    return [Path(files)] if isinstance(files, (str, Path)) else [Path(p) for p in files]

SPLITS = ("train", "val", "test")


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

    def __init__(
        self,
        train: Sequence[Sample] | None = None,
        val: Sequence[Sample] | None = None,
        test: Sequence[Sample] | None = None,
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
        """Samples as the readers of tiffin.train.video_files give them; the `from_*` methods are
        the usual way in. `clip_duration` (seconds) overrides the backbone's; `val_split` holds out
        that fraction of each class when no validation set is given. `origin` names where each
        split came from (for messages)."""
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
        samples = {"train": train, "val": val, "test": test}
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
        self.skipped: list[Any] = []
        listed = sum(len(s) for s in samples.values() if s)
        if listed:
            say(f"probing {listed} videos ...")
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
        from tiffin.train.video_layouts import read_split_layout

        folders = {"train": train_folder, "val": val_folder, "test": test_folder}
        split = options.pop("split", 1)
        layout = read_split_layout(train_folder, split, "train_folder") if train_folder is not None else None
        samples = {k: discover_folder(v, f"{k}_folder") if v is not None and (k != "train" or layout is None) else None
                   for k, v in folders.items()}
        if layout is not None:  # UCF101 / HMDB51 / SSv2: the official train list; its test/validation list validates
            samples["train"] = layout.train
            say(f"train_folder {train_folder}: {layout.summary(split)}"
                + (f", {len(layout.missing)} listed but missing" if layout.missing else ""))
            if val_folder is None:
                samples["val"] = layout.test
        predict = media_files_in(predict_folder, "predict_folder") if predict_folder is not None else None
        return cls(**samples, predict=predict, origin={k: f"{k}_folder {v}" for k, v in folders.items()}, **options)

    @classmethod
    def from_csv(cls, input_field: str | None = None, target_field: str | None = None, train_file: str | Path | None = None,
                 val_file: str | Path | None = None, test_file: str | Path | None = None,
                 predict_file: str | Path | None = None, **options: Any) -> "VideoClassificationData":
        """CSV or TSV files of video paths (relative to the file) and labels, in the columns named
        (default: the first of path/video/file/filename and of label/class/target).

        Example:
            >>> VideoClassificationData.from_csv("video", "label", train_file="train.csv", val_file="val.csv")
        """
        from tiffin.train.video_layouts import is_kinetics_csv, read_kinetics

        video_root = options.pop("video_root", None)
        files = {"train": train_file, "val": val_file, "test": test_file}
        samples = {}
        for k, v in files.items():
            if v is None:
                samples[k] = None
            elif is_kinetics_csv(v):  # annotations matched to downloaded clips; the missing ones said
                found = read_kinetics(v, f"{k}_file", video_root)
                say(f"{k}_file {v}: Kinetics annotations, {len(found.train)} of "
                    f"{len(found.train) + len(found.missing)} clips found")
                samples[k] = found.train
            else:
                samples[k] = read_csv(v, f"{k}_file", input_field, target_field)
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
        return cls(**samples, predict=predict, origin={k: f"{k}_file {v}" for k, v in files.items()}, **options)

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
                self.datasets[split] = VideoClipDataset(videos, list(spec.labels), spec, self.clip_sampler,
                                                        self.clips_per_video, train=True, flip=self.flip,
                                                        strict=self.strict, seed=self.seed)
            else:
                self.datasets[split] = VideoClipDataset(videos, list(spec.labels), spec, "constant_clips_per_video",
                                                        1, strict=self.strict)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        dataset = self.datasets.get(split)
        if dataset is None:
            return []  # Lightning skips a split with no batches
        args: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_clips,
                                    persistent_workers=self.num_workers > 0)
        if shuffle:
            trainer = self.trainer
            sampler = EpochShuffle(len(dataset), self.seed, trainer.current_epoch if trainer else 0,
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
