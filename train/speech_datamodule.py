"""`SpeechRecognitionData`: the Lightning data module of the Python API (`tiffin.speech`).

Built as Lightning Flash users build theirs: `from_csv("speech_files", "targets",
train_file=...)`, `from_json`, `from_files`, `from_folders`. Rows are listed when the module is
made (a missing file or column is reported at once); they are decoded and checked against the
model's vocabulary in `setup()`, when the model is known, with the checks, length buckets and
reports of `tiffin train speech`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from tiffin.audio_io import is_audio_file
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.video_datamodule import media_files_in, one_or_many
from tiffin.train.speech_files import json_lines as read_json_lines
from tiffin.train.speech_data import (
    LengthBucketSampler, Row, SpeechDataset, Utterance, check_rows, collate_speech, read_jsonl, read_layout, read_table,
)



def listed_files(path: str | Path, field: str, audio_root: str | Path | None = None, json_lines: bool = False
                 ) -> list[Path]:
    """The audio files a `predict_file` lists in `field` (a CSV/TSV column or a JSON-lines key),
    relative to `audio_root`, else to the file's folder.

    Raises:
        TiffinError: missing file, not UTF-8, a bad JSON line, or no such column/key.
    """
    from tiffin.train.table_io import open_table

    path = Path(path).expanduser()
    if json_lines:
        values = []
        for number, obj in read_json_lines(path, "predict_file"):
            if not isinstance(obj, dict) or field not in obj:
                raise TiffinError(f"predict_file {path}: line {number} lacks {field!r}")
            values.append(str(obj[field]).strip())
    else:
        path, reader = open_table(path, "predict_file", f"a CSV with a {field!r} column")
        if field not in (reader.fieldnames or []):
            raise TiffinError(f"predict_file {path}: has no column {field!r} (found {reader.fieldnames})")
        values = [(row.get(field) or "").strip() for row in reader]
    base = Path(audio_root).expanduser() if audio_root is not None else path.parent
    return [Path(v) if Path(v).is_absolute() else base / v for v in values if v]


class SpeechRecognitionData(pl.LightningDataModule):
    """Transcribed recordings for training, validation and testing, and recordings to transcribe.

    Example:
        >>> dm = SpeechRecognitionData.from_csv("speech_files", "targets", train_file="train.csv",
        ...                                     test_file="test.csv", batch_size=4)
    """

    def __init__(
        self,
        train: Sequence[Row] | None = None,
        val: Sequence[Row] | None = None,
        test: Sequence[Row] | None = None,
        predict: Sequence[str | Path] | None = None,
        *,
        sampling_rate: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        val_split: float | None = None,
        strict: bool = False,
        seed: int = 42,
    ):
        """Rows as the readers of tiffin.train.speech_files give them; the `from_*` methods are the
        usual way in. `sampling_rate`: the rate audio is resampled to, which the model then
        records (default: the model's, 16 kHz for wav2vec2). `val_split` holds out that fraction
        of the training rows when no validation set is given."""
        super().__init__()
        if batch_size < 1:
            raise TiffinError(f"batch_size={batch_size}: give 1 or more")
        if val_split is not None and not 0 < val_split < 1:
            raise TiffinError(f"val_split={val_split}: give a fraction between 0 and 1")
        self.rows: dict[str, list[Row] | None] = {"train": list(train) if train is not None else None,
                                                  "val": list(val) if val is not None else None,
                                                  "test": list(test) if test is not None else None}
        for split, rows in self.rows.items():
            if rows is not None and not rows:
                raise TiffinError(f"the {split} data has no rows")
        self.predict_files = one_or_many(predict)
        self.sampling_rate, self.batch_size, self.num_workers = sampling_rate, batch_size, num_workers
        self.val_split, self.strict, self.seed = val_split, strict, seed
        self.utterances: dict[str, list[Utterance]] = {}
        self.skipped: list[Any] = []

    # --- the ways in (Lightning Flash's names) -----------------------------------------------

    @classmethod
    def from_csv(cls, input_field: str = "speech_files", target_field: str = "targets",
                 train_file: str | Path | None = None, val_file: str | Path | None = None,
                 test_file: str | Path | None = None, predict_file: str | Path | None = None,
                 **options: Any) -> "SpeechRecognitionData":
        """CSV or TSV files with an audio path column (relative to the file) and a transcript column.

        Example:
            >>> SpeechRecognitionData.from_csv("speech_files", "targets", train_file="train.csv")
        """
        audio_root = options.pop("audio_root", None)
        files = {"train": train_file, "val": val_file, "test": test_file}
        rows = {k: read_table(v, input_field, target_field, f"{k}_file", audio_root) if v is not None else None
                for k, v in files.items()}
        predict = listed_files(predict_file, input_field, audio_root) if predict_file is not None else None
        return cls(**rows, predict=predict, **options)

    @classmethod
    def from_json(cls, input_field: str = "speech_files", target_field: str = "targets",
                  train_file: str | Path | None = None, val_file: str | Path | None = None,
                  test_file: str | Path | None = None, predict_file: str | Path | None = None,
                  **options: Any) -> "SpeechRecognitionData":
        """JSON-lines files, one object per line with the audio path and transcript keys.

        Example:
            >>> SpeechRecognitionData.from_json("file", "text", train_file="train.jsonl")
        """
        audio_root = options.pop("audio_root", None)
        files = {"train": train_file, "val": val_file, "test": test_file}
        rows = {k: read_jsonl(v, input_field, target_field, f"{k}_file", audio_root) if v is not None else None
                for k, v in files.items()}
        predict = None if predict_file is None else listed_files(predict_file, input_field, audio_root, json_lines=True)
        return cls(**rows, predict=predict, **options)

    @classmethod
    def from_files(cls, train_files: Sequence[str | Path] | None = None, train_targets: Sequence[str] | None = None,
                   val_files: Sequence[str | Path] | None = None, val_targets: Sequence[str] | None = None,
                   test_files: Sequence[str | Path] | None = None, test_targets: Sequence[str] | None = None,
                   predict_files: Sequence[str | Path] | None = None, **options: Any) -> "SpeechRecognitionData":
        """Lists of audio files and their transcripts.

        Example:
            >>> SpeechRecognitionData.from_files(predict_files=["a.wav", "b.wav"], batch_size=4)
        """
        given = {"train": (train_files, train_targets), "val": (val_files, val_targets),
                 "test": (test_files, test_targets)}
        rows: dict[str, list[Row] | None] = {}
        for split, (files, targets) in given.items():
            if files is None:
                rows[split] = None
                continue
            if targets is None or len(targets) != len(files):
                raise TiffinError(f"{split}_targets: give one transcript per file of {split}_files "
                                  f"({len(files)} files, {0 if targets is None else len(targets)} transcripts)")
            rows[split] = [Row(Path(f), str(t), f"{split}_files[{i}]") for i, (f, t) in enumerate(zip(files, targets))]
        return cls(**rows, predict=predict_files, **options)

    @classmethod
    def from_folders(cls, train_folder: str | Path | None = None, val_folder: str | Path | None = None,
                     test_folder: str | Path | None = None, predict_folder: str | Path | None = None,
                     audio_root: str | Path | None = None, **options: Any) -> "SpeechRecognitionData":
        """Speech folders in any layout tiffin knows (Common Voice, AudioFolder, Kaldi, LibriSpeech, or
        audio files with a `.txt` transcript beside each); a layout's own validation and test
        splits are used where no val_folder/test_folder is given. `predict_folder` holds audio
        files at any depth.

        Example:
            >>> SpeechRecognitionData.from_folders(train_folder="LibriSpeech")  # train-*, dev-*, test-* inside
        """
        folders = {"train": train_folder, "val": val_folder, "test": test_folder}
        reads = {k: read_layout(v, f"{k}_folder", audio_root) if v is not None else None for k, v in folders.items()}
        rows = {k: read.splits["train"] if read is not None else None for k, read in reads.items()}
        if reads["train"] is not None:
            for split, key in (("validation", "val"), ("test", "test")):
                if rows[key] is None and reads["train"].splits.get(split):
                    rows[key] = reads["train"].splits[split]
        predict = media_files_in(predict_folder, "predict_folder", is_audio_file, "audio") if predict_folder is not None else None
        return cls(**rows, predict=predict, **options)

    # --- Lightning ---------------------------------------------------------------------------

    def spec_for(self, model: Any) -> SpeechSpec:
        """The model's spec, after it learnt the data's alphabet (`vocab="from-data"`) and took this
        module's sampling rate, both of which its checkpoints then record."""
        spec = getattr(model, "spec", None)
        if not isinstance(spec, SpeechSpec):
            raise TiffinError("SpeechRecognitionData: train it with a tiffin SpeechRecognition model")
        if getattr(model, "vocab_from_data", False) and self.rows["train"]:
            model.learn_vocabulary([r.text for r in self.rows["train"]])
        if self.sampling_rate is not None and model.spec.sample_rate != self.sampling_rate:
            model.use_spec(replace(model.spec, sample_rate=int(self.sampling_rate)))
        return model.spec

    def setup(self, stage: str) -> None:
        from tiffin.ctc import Vocabulary
        from tiffin.train.speech_fit import report_check

        if stage == "predict":
            return
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is None:
            raise TiffinError("SpeechRecognitionData: give it to a Trainer together with a SpeechRecognition model")
        spec = self.spec_for(model)
        vocab = Vocabulary(spec.vocab)
        conv = (list(model.net.kernels), list(model.net.strides))
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        if stage == "fit" and self.rows["train"] is None:
            raise TiffinError("this data module has no training rows; give train_file/train_files/train_folder")
        for split in needed:
            if split in self.utterances or self.rows[split] is None:
                continue
            utterances, report = check_rows(self.rows[split], vocab, spec.sample_rate, self.strict, conv)
            report_check(report, split)
            self.skipped += report.bad
            if not utterances:
                raise TiffinError(f"no usable {split} recordings; fix the rows reported above")
            self.utterances[split] = utterances
        if stage == "fit" and "val" not in self.utterances and self.val_split:
            shuffled = random.Random(self.seed).sample(self.utterances["train"], len(self.utterances["train"]))
            n_val = max(1, round(len(shuffled) * self.val_split))
            self.utterances["val"], self.utterances["train"] = shuffled[:n_val], shuffled[n_val:]
        self.spec = spec

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        utterances = self.utterances.get(split)
        if not utterances:
            return []  # Lightning skips a split with no batches
        trainer = self.trainer
        batches = LengthBucketSampler([u.samples for u in utterances], self.batch_size, shuffle, self.seed,
                                      trainer.global_rank if trainer else 0, trainer.world_size if trainer else 1)
        batches.set_epoch(trainer.current_epoch if trainer else 0)
        return DataLoader(SpeechDataset(utterances, self.spec.sample_rate), batch_sampler=batches,
                          num_workers=self.num_workers, collate_fn=collate_speech,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        raise TiffinError("transcribe with tiffin.Trainer.predict(model, datamodule=...): long recordings run in "
                          "windows as `tiffin predict` does")
