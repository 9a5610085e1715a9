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
from tiffin.console import say
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.bad_files import BadFiles
from tiffin.train.video_datamodule import media_files_in, one_or_many
from tiffin.train.speech_files import json_lines as read_json_lines
from tiffin.train.speech_data import (
    CheckReport, LengthBucketSampler, Row, SpeechDataset, Utterance, check_rows, collate_speech, read_jsonl,
    read_layout, read_table,
)

READERS = {"csv": read_table, "json": read_jsonl}  # a table of recordings and transcripts, by kind


def list_rows(kind: str, path: str | Path, option: str, audio_column: str = "speech_files",
              text_column: str = "targets", audio_root: str | Path | None = None) -> dict[str, list[Row]]:
    """The rows one source gives, by split: a CSV/TSV or JSON-lines table ({"train": rows}), or a
    folder in a layout tiffin reads, with the validation and test splits the layout defines.

    Raises:
        TiffinError: no such file or folder, a missing column, no rows.
    """
    if kind == "folder":
        read = read_layout(path, option, audio_root)
        say(f"{option} {path}: {read.layout} layout, {len(read.splits['train'])} utterances"
            + (f" (splits: {read.counts()})" if len(read.splits) > 1 else ""))
        return read.splits
    rows = READERS[kind](path, audio_column, text_column, option, audio_root)
    if not rows:
        raise TiffinError(f"{option} {path}: has no rows")
    return {"train": rows}


def report_check(report: CheckReport, split: str) -> None:
    """The checks' findings in a few lines: repeated rows, the first bad rows and counts, characters
    the vocabulary lacks, punctuation removed."""
    if report.duplicates:
        say(f"{split}: {report.duplicates} row(s) repeat a file and transcript listed before; used once")
    for line in report.bad.lines("row"):  # the first few and counts: a million bad rows print a dozen lines
        say(line, prefix=f"[yellow]skipped ({split})[/] ")
    if report.unknown:
        shown = ", ".join(f"{ch!r} x{n}" for ch, n in report.unknown.most_common(12))
        say(f"{split} transcripts hold {sum(report.unknown.values())} character(s) the vocabulary lacks, left out: "
            f"{shown}; use --vocab from-data to learn them", prefix="[yellow]note[/] ")
    if report.punctuation:
        say(f"{split}: removed {sum(report.punctuation.values())} punctuation mark(s) the vocabulary lacks "
            f"({''.join(sorted(report.punctuation))})")


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of a padded batch tensor that is padding, over all batches."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded if padded else 0.0



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

    skipped_what, skipped_key = "row(s)", "skipped_rows"  # the run folder's note

    def __init__(
        self,
        train: Sequence[Row] | dict[str, list[Row]] | None = None,
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
        origin: dict[str, str] | None = None,
    ):
        """Rows as the readers of tiffin.train.speech_files give them, or a layout's splits
        (list_rows: its validation and test splits are used where `val`/`test` are not given);
        the `from_*` methods are the usual way in. `sampling_rate`: the rate audio is resampled
        to, which the model then records (default: the model's, 16 kHz for wav2vec2).
        `val_split` holds out that fraction of the training rows when no validation set is
        given. `origin` names where each split came from (for messages)."""
        super().__init__()
        if batch_size < 1:
            raise TiffinError(f"batch_size={batch_size}: give 1 or more")
        if val_split is not None and not 0 < val_split < 1:
            raise TiffinError(f"val_split={val_split}: give a fraction between 0 and 1")
        if isinstance(train, dict):  # a layout's splits
            splits, train = train, train["train"]
            if val is None and splits.get("validation"):
                val = splits["validation"]
                say(f"validating on the layout's own validation split ({len(val)} utterances)")
            if test is None and splits.get("test"):
                test = splits["test"]
        self.origin = origin or {}
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
        self.skipped = BadFiles()
        self.unknown: dict[str, int] = {}
        self.first_epoch: int | None = None  # a resumed run's (tiffin.Trainer sets it)

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
        rows = {k: list_rows("csv", v, f"{k}_file", input_field, target_field, audio_root)["train"] if v is not None
                else None for k, v in files.items()}
        predict = listed_files(predict_file, input_field, audio_root) if predict_file is not None else None
        return cls(**rows, predict=predict, origin={k: f"{k}_file {v}" for k, v in files.items() if v}, **options)

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
        rows = {k: list_rows("json", v, f"{k}_file", input_field, target_field, audio_root)["train"] if v is not None
                else None for k, v in files.items()}
        predict = None if predict_file is None else listed_files(predict_file, input_field, audio_root, json_lines=True)
        return cls(**rows, predict=predict, origin={k: f"{k}_file {v}" for k, v in files.items() if v}, **options)

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
        reads = {k: list_rows("folder", v, f"{k}_folder", audio_root=audio_root) if v is not None else None
                 for k, v in folders.items()}
        rows = {"train": reads["train"], **{k: reads[k]["train"] if reads[k] else None for k in ("val", "test")}}
        predict = media_files_in(predict_folder, "predict_folder", is_audio_file, "audio") if predict_folder is not None else None
        return cls(**rows, predict=predict, origin={k: f"{k}_folder {v}" for k, v in folders.items() if v}, **options)

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

    @property
    def has_validation(self) -> bool:
        return bool(self.rows["val"]) or bool(self.val_split)

    def setup(self, stage: str) -> None:
        from tiffin.ctc import Vocabulary

        if stage == "predict":
            return
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is None:
            raise TiffinError("SpeechRecognitionData: give it to a Trainer together with a SpeechRecognition model")
        spec = self.spec_for(model)
        vocab = Vocabulary.of_spec(spec)
        conv = (list(model.net.kernels), list(model.net.strides))
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}[stage]
        if stage == "fit" and self.rows["train"] is None:
            raise TiffinError("this data module has no training rows; give train_file/train_files/train_folder")
        todo = [s for s in needed if s not in self.utterances and self.rows[s] is not None]
        if todo:
            say(f"checking {sum(len(self.rows[s]) for s in todo)} recordings ...")
        for split in todo:
            utterances, report = check_rows(self.rows[split], vocab, spec.sample_rate, self.strict, conv,
                                            self.origin.get(split))
            report_check(report, split)
            self.skipped += report.bad  # its counts too, not only the rows it kept
            if split == "train":
                self.unknown = dict(report.unknown.most_common())
            if not utterances:
                raise TiffinError(f"no usable {split} recordings; fix the rows reported above")
            self.utterances[split] = utterances
        if stage == "fit" and "val" not in self.utterances and self.val_split:
            shuffled = random.Random(self.seed).sample(self.utterances["train"], len(self.utterances["train"]))
            n_val = max(1, round(len(shuffled) * self.val_split))
            self.utterances["val"], self.utterances["train"] = shuffled[:n_val], shuffled[n_val:]
            if not self.utterances["train"]:
                raise TiffinError("too few usable recordings to train and validate; fix the rows reported above")
        self.spec = spec
        if stage == "fit" and todo:
            self._report = self._describe(len(vocab.tokens))

    def _describe(self, vocab_size: int) -> dict[str, Any]:
        """The training data in one line, and in metrics.json: hours, padding with and without length buckets."""
        utterances, batch = self.utterances["train"], self.batch_size
        lengths = [u.samples for u in utterances]
        bucketed = LengthBucketSampler(lengths, batch, seed=self.seed)._batches()
        unbucketed = [list(range(i, min(i + batch, len(lengths)))) for i in range(0, len(lengths), batch)]
        pad, pad_random = padding_fraction(lengths, bucketed), padding_fraction(lengths, unbucketed)
        hours = sum(lengths) / self.spec.sample_rate / 3600
        n_val = len(self.utterances.get("val") or [])
        say(f"{len(utterances)} training and {n_val} validation utterances ({hours:.2f} h), "
            f"{len(self.skipped)} skipped; vocabulary of {vocab_size}; padding {pad:.1%} with length buckets "
            f"({pad_random:.1%} without)")
        return {"train_utterances": len(utterances), "val_utterances": n_val, "train_hours": round(hours, 3),
                "padding_fraction": round(pad, 4), "padding_fraction_unbucketed": round(pad_random, 4),
                "unknown_characters": self.unknown}

    def run_report(self) -> dict[str, Any]:
        """What a run folder's metrics.json records of the data (tiffin.Trainer(default_root_dir=))."""
        return {**getattr(self, "_report", {}),
                "skipped_rows": [{"row": b.where, "path": b.path, "reason": b.reason} for b in self.skipped],
                "skipped": self.skipped.summary()}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        utterances = self.utterances.get(split)
        if not utterances:
            return []  # Lightning skips a split with no batches
        trainer = self.trainer
        batches = LengthBucketSampler([u.samples for u in utterances], self.batch_size, shuffle, self.seed,
                                      trainer.global_rank if trainer else 0, trainer.world_size if trainer else 1)
        epoch = self.first_epoch if self.first_epoch is not None else trainer.current_epoch if trainer else 0
        batches.set_epoch(epoch)
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
