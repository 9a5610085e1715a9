"""`tiffin train speech` as a Python function: rows checked, vocabulary fitted, CTC fine-tuning.

Besides the run folder of train/run_folder.py, a speech run writes the best model in Hugging
Face format to OUT/hf/ (model + processor: `Wav2Vec2ForCTC.from_pretrained(OUT/hf)` works).
Imports Lightning (through run_folder): the CLI imports this module only inside its command.
Call `train_speech(SpeechTrainConfig(...))`, or run `tiffin train speech --help`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.ctc import BASE_960H_TOKENS, Vocabulary
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.run_folder import (
    FINETUNE_STRATEGIES, LoaderPair, MetricsWriter, RunOptions, build_trainer, fit, prepare_out, read_checkpoint,
    resumed_epoch, say,
)
from tiffin.train.speech_data import (
    CheckReport, LengthBucketSampler, Row, SpeechDataset, Utterance, check_rows, collate_speech, read_jsonl,
    read_layout, read_table,
)
from tiffin.train.bad_files import BadFiles
from tiffin.train.choices import VOCAB_CHOICES
from tiffin.train.speech_layouts import FolderRead


@dataclass
class SpeechTrainConfig(RunOptions):
    """Every option of `tiffin train speech`."""

    train_csv: Path | None = None
    train_json: Path | None = None
    train_folder: Path | None = None
    val_csv: Path | None = None
    val_json: Path | None = None
    val_folder: Path | None = None
    val_split: float = 0.1
    audio_column: str = "speech_files"
    text_column: str = "targets"
    audio_root: Path | None = None  # where a table's relative audio paths start (default: the table's folder)
    backbone: str = "facebook/wav2vec2-base-960h"
    pretrained: bool = True
    vocab: str = "from-backbone"
    sample_rate: int = 16000
    freeze_feature_encoder: bool | None = None  # None: frozen when starting from pretrained weights
    learning_rate: float = 1e-4


@dataclass
class SpeechRunResult:
    out: Path
    best_checkpoint: Path
    hf_dir: Path
    metrics: dict[str, Any]


def _rows(cfg: SpeechTrainConfig, split: str) -> list[Row] | None:
    rows = _read(cfg, split)
    return rows.splits["train"] if isinstance(rows, FolderRead) else rows


def _read(cfg: SpeechTrainConfig, split: str) -> FolderRead | list[Row] | None:
    """The rows `--{split}-csv/json/folder` gives; a folder's whole FolderRead (its layout's splits)."""
    sources = {"csv": getattr(cfg, f"{split}_csv"), "json": getattr(cfg, f"{split}_json"),
               "folder": getattr(cfg, f"{split}_folder")}
    given = {k: v for k, v in sources.items() if v is not None}
    if len(given) > 1:
        raise TiffinError(f"give one of --{split}-csv, --{split}-json, --{split}-folder")
    if not given:
        if split == "train":
            raise TiffinError("give training data: --train-csv FILE, --train-json FILE or --train-folder DIR")
        return None
    kind, path = next(iter(given.items()))
    option = f"--{split}-{kind}"
    if kind == "folder":
        read = read_layout(path, option, cfg.audio_root)
        say(f"{option} {path}: {read.layout} layout, {len(read.splits['train'])} utterances"
            + (f" (splits: {read.counts()})" if len(read.splits) > 1 else ""))
        return read
    reader = read_jsonl if kind == "json" else read_table
    rows = reader(path, cfg.audio_column, cfg.text_column, option, cfg.audio_root)
    if not rows:
        raise TiffinError(f"{option} {path}: has no rows")
    return rows


def _source(cfg: SpeechTrainConfig, split: str) -> str | None:
    """'--train-csv FILE': the option that gave a split's rows, for messages (None: a layout's own split)."""
    given = [(kind, getattr(cfg, f"{split}_{kind}")) for kind in ("csv", "json", "folder")]
    return next((f"--{split}-{kind} {path}" for kind, path in given if path is not None), None)


def report_check(report: CheckReport, split: str) -> None:
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


def train_speech(cfg: SpeechTrainConfig) -> SpeechRunResult:
    """Fine-tune a wav2vec2 CTC model and write the run folder (and OUT/hf/).

    Raises:
        TiffinError: bad options or data, reported before training starts.
    """
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from tiffin.train.speech_model import feature_settings, fit_head, load_backbone
    from tiffin.train.speech_task import SpeechRecognitionTask

    if cfg.strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"--strategy {cfg.strategy}: choose one of {', '.join(FINETUNE_STRATEGIES)}")
    if cfg.vocab not in VOCAB_CHOICES:
        raise TiffinError(f"--vocab {cfg.vocab}: choose one of {', '.join(VOCAB_CHOICES)}")
    out = prepare_out(cfg, "speech-" + Path(cfg.backbone).name)
    last = out / "checkpoints" / "last.ckpt"
    train_read, val_rows = _read(cfg, "train"), _rows(cfg, "val")
    train_rows = train_read.splits["train"] if isinstance(train_read, FolderRead) else train_read
    if val_rows is None and isinstance(train_read, FolderRead) and train_read.splits.get("validation"):
        val_rows = train_read.splits["validation"]  # the layout defines its validation split
        say(f"validating on the {train_read.layout} layout's own validation split ({len(val_rows)} utterances)")

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model: a new head's init is seeded
    if cfg.resume:
        checkpoint = read_checkpoint(last)
        saved = checkpoint["tiffin"]
        spec, model, model_config = SpeechSpec.from_dict(saved["spec"]), None, saved["model_config"]
        # the run's own choice: a run from scratch trains its feature encoder after a resume too
        vocab, from_scratch = Vocabulary(spec.vocab), not checkpoint["hyper_parameters"]["freeze_feature_encoder"]
        first_epoch = resumed_epoch(checkpoint)
    else:
        first_epoch = 0
        model, backbone_vocab, source = load_backbone(cfg.backbone, cfg.pretrained)
        from_scratch = source == "config"
        if cfg.vocab == "from-data":
            vocab = Vocabulary.from_texts([r.text for r in train_rows])
        elif backbone_vocab is None:
            vocab = Vocabulary(BASE_960H_TOKENS)
            say(f"{cfg.backbone} has no CTC vocabulary; using wav2vec2-base-960h's English characters with a new "
                "head (--vocab from-data learns your alphabet)")
        else:
            vocab = backbone_vocab
        if fit_head(model, vocab, backbone_vocab):
            say(f"new CTC head for a vocabulary of {len(vocab.tokens)} tokens")
        model_config = json.loads(model.config.to_json_string())
        spec = SpeechSpec(sample_rate=cfg.sample_rate, normalize=feature_settings(source)[1], vocab=vocab.tokens)

    say(f"checking {len(train_rows) + len(val_rows or [])} recordings ...")
    conv = (model_config["conv_kernel"], model_config["conv_stride"])
    train_utts, report = check_rows(train_rows, vocab, spec.sample_rate, cfg.strict, conv, _source(cfg, "train"))
    report_check(report, "train")
    bad = BadFiles()
    bad += report.bad  # its counts too, not only the rows it kept
    if val_rows is not None:
        val_utts, val_report = check_rows(val_rows, vocab, spec.sample_rate, cfg.strict, conv, _source(cfg, "val"))
        report_check(val_report, "val")
        bad += val_report.bad
    else:
        if not 0 < cfg.val_split < 1:
            raise TiffinError(f"--val-split {cfg.val_split}: give a fraction between 0 and 1, or --val-csv")
        shuffled = random.Random(cfg.seed).sample(train_utts, len(train_utts))
        n_val = max(1, round(len(shuffled) * cfg.val_split))
        val_utts, train_utts = shuffled[:n_val], shuffled[n_val:]
    if not train_utts or not val_utts:
        raise TiffinError("too few usable recordings to train and validate; fix the rows reported above")

    lengths = [u.samples for u in train_utts]
    bucketed = LengthBucketSampler(lengths, cfg.batch_size, seed=cfg.seed)._batches()
    unbucketed = [list(range(i, min(i + cfg.batch_size, len(lengths)))) for i in range(0, len(lengths), cfg.batch_size)]
    pad, pad_random = padding_fraction(lengths, bucketed), padding_fraction(lengths, unbucketed)
    hours = sum(lengths) / spec.sample_rate / 3600
    say(f"{len(train_utts)} training and {len(val_utts)} validation utterances ({hours:.2f} h), "
        f"{len(bad)} skipped; vocabulary of {len(vocab.tokens)}; padding {pad:.1%} with length buckets "
        f"({pad_random:.1%} without)")

    task = SpeechRecognitionTask(
        backbone=cfg.backbone, spec=spec.to_dict(), model_config=model_config, strategy=cfg.strategy,
        unfreeze_epoch=cfg.unfreeze_epoch,
        # A random feature encoder must learn; a pretrained one is kept, as the wav2vec2 recipe does.
        freeze_feature_encoder=not from_scratch if cfg.freeze_feature_encoder is None else cfg.freeze_feature_encoder,
        learning_rate=cfg.learning_rate, init_model=model,
    )
    train_set, val_set = SpeechDataset(train_utts, spec.sample_rate), SpeechDataset(val_utts, spec.sample_rate)
    loader_args = dict(num_workers=cfg.num_workers, collate_fn=collate_speech, persistent_workers=cfg.num_workers > 0)

    def loader(dataset: SpeechDataset, utts: list[Utterance], shuffle: bool):
        def make(trainer):
            batches = LengthBucketSampler([u.samples for u in utts], cfg.batch_size, shuffle, cfg.seed,
                                          trainer.global_rank, trainer.world_size)
            batches.set_epoch(first_epoch)
            return DataLoader(dataset, batch_sampler=batches, **loader_args)

        return make

    base = {"task": "speech-recognition", "backbone": cfg.backbone, "vocab": list(vocab.tokens),
            "strategy": cfg.strategy, "precision": cfg.precision, "train_utterances": len(train_utts),
            "val_utterances": len(val_utts), "train_hours": round(hours, 3), "padding_fraction": round(pad, 4),
            "padding_fraction_unbucketed": round(pad_random, 4),
            "unknown_characters": dict(report.unknown.most_common()),
            "skipped_rows": [{"row": b.where, "path": b.path, "reason": b.reason} for b in bad],  # the first KEPT
            "skipped": bad.summary()}
    writer = MetricsWriter(out, cfg.resume, base, ("val_loss", "val_wer", "val_cer"), "val_cer", "min")
    trainer = build_trainer(cfg, out, "val_cer", "min", [writer], len(bucketed), use_distributed_sampler=False)
    metrics = fit(trainer, task, writer, LoaderPair(loader(train_set, train_utts, True), loader(val_set, val_utts, False)),
                  out, cfg.resume)
    hf_dir = out / "hf"
    if trainer.is_global_zero:
        save_hf(out / "checkpoints" / "best.ckpt", hf_dir)
    if bad:
        say(f"{len(bad)} row(s) were skipped; see skipped_rows in {out / 'metrics.json'}", prefix="[yellow]note[/] ")
    first = metrics["epochs"][0] if metrics["epochs"] else {}
    if trainer.is_global_zero and metrics.get("val_cer") is not None and first.get("val_cer") is not None:
        say(f"val_cer {first['val_cer']:.3f} after epoch 0 -> {metrics['val_cer']:.3f} (best {metrics['best_val_cer']:.3f} "
            f"at epoch {metrics['best_epoch']}), val_wer {first['val_wer']:.3f} -> {metrics['val_wer']:.3f}; "
            f"run in {out}, Hugging Face model in {hf_dir}")
    return SpeechRunResult(out, out / "checkpoints" / "best.ckpt", hf_dir, metrics)


def save_hf(checkpoint: Path, out: Path) -> None:
    """Write a checkpoint's model and processor in Hugging Face format (save_pretrained)."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from tiffin.train.predict import load_speech_model

    loaded = load_speech_model(checkpoint)
    model, spec = loaded.net.model, loaded.spec
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(spec.vocab)}, ensure_ascii=False, indent=1))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
                                     do_lower_case=False)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=spec.sample_rate, padding_value=0.0,
                                         do_normalize=spec.normalize,
                                         return_attention_mask=model.config.feat_extract_norm == "layer")
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
