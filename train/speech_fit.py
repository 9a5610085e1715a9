"""`tiffin train speech` through the Python API: its options become a SpeechRecognitionData, a
SpeechRecognition model and a tiffin.Trainer keeping the run folder --out (train/run_folder.py;
a speech run adds the best model in Hugging Face format in OUT/hf/). Imports Lightning: the
CLI imports this module only inside its command. Call `train_speech(SpeechTrainConfig(...))`,
or run `tiffin train speech --help`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiffin.errors import TiffinError
from tiffin.train.choices import VOCAB_CHOICES
from tiffin.train.run_options import RunOptions, RunResult, prepare_out, resumed_model, run


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
    target_lang: str | None = None  # the language of a backbone with per-language adapters (MMS)
    freeze_feature_encoder: bool | None = None  # None: frozen when starting from pretrained weights
    learning_rate: float = 1e-4


def _source(cfg: SpeechTrainConfig, split: str) -> tuple[str, Path] | None:
    """(kind, path) of the one `--{split}-csv/json/folder` given, None when none is."""
    given = [(kind, getattr(cfg, f"{split}_{kind}")) for kind in ("csv", "json", "folder")]
    given = [(kind, path) for kind, path in given if path is not None]
    if len(given) > 1:
        raise TiffinError(f"give one of --{split}-csv, --{split}-json, --{split}-folder")
    if not given and split == "train":
        raise TiffinError("give training data: --train-csv FILE, --train-json FILE or --train-folder DIR")
    return given[0] if given else None


def speech_data(cfg: SpeechTrainConfig):
    """The data module of the options: one training source (a layout's own splits with it), at
    most one validation source."""
    from tiffin.train.speech_datamodule import SpeechRecognitionData, list_rows

    rows, origin = {}, {}
    for split in ("train", "val"):
        source = _source(cfg, split)
        if source is not None:
            kind, path = source
            origin[split] = f"--{split}-{kind} {path}"
            rows[split] = list_rows(kind, path, f"--{split}-{kind}", cfg.audio_column, cfg.text_column, cfg.audio_root)
    if not 0 < cfg.val_split < 1:
        raise TiffinError(f"--val-split {cfg.val_split}: give a fraction between 0 and 1, or --val-csv")
    return SpeechRecognitionData(
        rows["train"], rows["val"]["train"] if "val" in rows else None, sampling_rate=cfg.sample_rate,
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, val_split=cfg.val_split, strict=cfg.strict,
        seed=cfg.seed, origin=origin)


def train_speech(cfg: SpeechTrainConfig) -> RunResult:
    """Fine-tune a wav2vec2 CTC model and write the run folder (and OUT/hf/).

    Raises:
        TiffinError: bad options or data, reported before training starts.
    """
    import pytorch_lightning as pl

    from tiffin.speech import SpeechRecognition
    from tiffin.train.finetuning import FINETUNE_STRATEGIES

    if cfg.strategy not in FINETUNE_STRATEGIES:
        raise TiffinError(f"--strategy {cfg.strategy}: choose one of {', '.join(FINETUNE_STRATEGIES)}")
    if cfg.vocab not in VOCAB_CHOICES:
        raise TiffinError(f"--vocab {cfg.vocab}: choose one of {', '.join(VOCAB_CHOICES)}")
    out = prepare_out(cfg, "speech-" + Path(cfg.backbone).name)
    data = speech_data(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model: a new head's init is seeded
    if cfg.resume:
        model = resumed_model(SpeechRecognition, out)
    else:
        model = SpeechRecognition(
            backbone=cfg.backbone, vocab="from-data" if cfg.vocab == "from-data" else None, pretrained=cfg.pretrained,
            learning_rate=cfg.learning_rate, freeze_feature_encoder=cfg.freeze_feature_encoder,
            sampling_rate=cfg.sample_rate, target_lang=cfg.target_lang, strategy=cfg.strategy,
            unfreeze_epoch=cfg.unfreeze_epoch)
    training = len(data.rows["train"]) if data.rows["val"] is not None else int(len(data.rows["train"]) * (1 - cfg.val_split))
    return run(cfg, out, model, data, training)
