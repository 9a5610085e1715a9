"""CLI of the training stage: `tiffin train ...`, `tiffin backbones ...`, `tiffin synth ...`.

Commands parse options into the Python API's config and call it; heavy imports (torch,
Lightning) happen inside the commands so `tiffin --help` stays fast.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from tiffin.errors import TiffinError, reported
from tiffin.train.recipes import SpeechRecipe, VideoRecipe
from tiffin.train.choices import CLIP_SAMPLERS, VOCAB_CHOICES

train_app = typer.Typer(help="Fine-tune models on your data.", no_args_is_help=True)
backbones_app = typer.Typer(help="List the supported backbones.", no_args_is_help=True)
synth_app = typer.Typer(help="Generate synthetic datasets to try tiffin on.", no_args_is_help=True)


# choices generated from the tables they mirror (torch-free modules: `tiffin --help` stays fast)
ClipSampler = Enum("ClipSampler", {name: name for name in CLIP_SAMPLERS}, type=str)
VocabSource = Enum("VocabSource", {name: name for name in VOCAB_CHOICES}, type=str)


class Precision(str, Enum):
    fp32 = "32"
    mixed16 = "16-mixed"
    bf16_mixed = "bf16-mixed"
    bf16_true = "bf16-true"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


def split_strategies(values: list[str]) -> tuple[str, str]:
    """Split `--strategy` values into (fine-tuning strategy, Lightning distributed strategy).

    `--strategy` takes both kinds, as Flash's `finetune(strategy=)` and Lightning's
    `Trainer(strategy=)` do: e.g. `--strategy freeze_unfreeze --strategy ddp` or `freeze,ddp`.
    """
    from pytorch_lightning.strategies import StrategyRegistry

    from tiffin.train.finetuning import FINETUNE_STRATEGIES

    finetune, distributed = [], []
    for value in (v.strip() for item in values for v in item.split(",") if v.strip()):
        if value in FINETUNE_STRATEGIES:
            finetune.append(value)
        elif value == "auto" or value in StrategyRegistry.available_strategies():
            distributed.append(value)
        else:
            raise TiffinError(
                f"--strategy {value}: not a fine-tuning strategy ({', '.join(FINETUNE_STRATEGIES)}) "
                f"nor a Lightning one (ddp, ddp_spawn, fsdp, deepspeed, ...)"
            )
    if len(finetune) > 1 or len(distributed) > 1:
        raise TiffinError("--strategy: give at most one fine-tuning and one distributed strategy")
    return (finetune or ["no_freeze"])[0], (distributed or ["auto"])[0]


# Options every `tiffin train` command takes (the run, not the model), declared once.
BATCH_SIZE = typer.Option(4, min=1)
MAX_EPOCHS = typer.Option(10, min=1)
MAX_STEPS = typer.Option(-1, help="Stop after this many optimizer steps (-1: no limit).")
STRATEGY = typer.Option(["no_freeze"], help="Fine-tuning: no_freeze|freeze|freeze_unfreeze; distributed: "
                        "ddp|fsdp|... (repeat or comma-separate to give both).")
UNFREEZE_EPOCH = typer.Option(1, help="Epoch at which freeze_unfreeze unfreezes the backbone.")
PRECISION = typer.Option(Precision.fp32, help="16-mixed becomes bf16-mixed on CPU.")
ACCELERATOR = typer.Option(Accelerator.auto)
DEVICES = typer.Option("auto", help="auto or a number of devices (processes on CPU).")
NUM_NODES = typer.Option(1, min=1)
NUM_WORKERS = typer.Option(None, help="Data loading processes [default: min(4, CPUs)].")
SEED = typer.Option(42)
RESUME = typer.Option(False, help="Continue the run in --out from checkpoints/last.ckpt.")
STRICT = typer.Option(False, help="Stop at the first unreadable file instead of skipping it.")
PROGRESS = typer.Option(True, help="Show the progress bar.")
# what one media file may cost to decode (tiffin.limits, the TIFFIN_MAX_* variables serving reads)
LIMIT = typer.Option(None, "--limit", help="Raise a decoding limit for this command: NAME=VALUE, repeatable; NAME "
                     "is video-seconds, video-pixels, decode-pixels, audio-seconds or decode-seconds "
                     "(README, Security).")


def run_options(values: dict) -> dict:
    """The RunOptions fields of a command's arguments, with enums and --strategy resolved."""
    from dataclasses import fields

    from tiffin.train.run_options import RunOptions

    names = {f.name for f in fields(RunOptions)}
    kwargs = {k: v.value if isinstance(v, Enum) else v for k, v in values.items() if k in names and v is not None}
    kwargs["strategy"], kwargs["distributed"] = split_strategies(values["strategy"])
    return kwargs


@train_app.command("video")
@reported
def train_video_command(
    train_folder: Path = typer.Option(None, help="Class folders DIR/<class>/<video>; UCF101 (ucfTrainTestlist/) and "
                                      "HMDB51 (*_test_split<N>.txt) folders use their own splits (--split)."),
    split: int = typer.Option(1, min=1, max=3, help="UCF101 / HMDB51: which of the three official splits."),
    video_root: Path = typer.Option(None, help="Kinetics annotation CSVs: the folder of downloaded clips "
                                    "(<youtube_id>_<start>_<end>.<ext>, in class folders or flat) [default: "
                                    "the folder named like the CSV beside it, else the CSV's folder]."),
    train_csv: Path = typer.Option(None, help="CSV (or TSV) with path,label columns, paths relative to the CSV; or a "
                                   "Kinetics annotation CSV (label,youtube_id,time_start,time_end,split)."),
    val_folder: Path = typer.Option(None, help="Validation folder; without it a stratified split is held out."),
    val_csv: Path = typer.Option(None, help="Validation CSV with path,label columns."),
    val_split: float = typer.Option(0.2, help="Fraction of each class held out when no validation set is given."),
    backbone: str = typer.Option("slowfast_r50", help="See `tiffin backbones video`."),
    pretrained: bool = typer.Option(True, help="Start from the model zoo's Kinetics-400 weights."),
    weights: Path = typer.Option(None, help="Weights file to start from (a zoo .pyth or a state dict)."),
    clip_duration: float = typer.Option(None, help="Seconds per clip [default: the backbone's zoo clip]."),
    clip_sampler: ClipSampler = typer.Option(ClipSampler["random"], help="How training clips are drawn."),
    clips_per_video: int = typer.Option(2, help="Clips per video for constant_clips_per_video."),
    num_frames: int = typer.Option(None, help="Frames per clip [default: the backbone's]."),
    crop_size: int = typer.Option(None, help="Square crop in pixels [default: the backbone's]."),
    flip: bool = typer.Option(True, help="Random horizontal flips; turn off when left/right matters."),
    learning_rate: float = typer.Option(1e-3),
    out: Path = typer.Option(None, help="Run folder [default: runs/video-BACKBONE-TIME]."),
    batch_size: int = BATCH_SIZE, max_epochs: int = MAX_EPOCHS, max_steps: int = MAX_STEPS,
    strategy: list[str] = STRATEGY, unfreeze_epoch: int = UNFREEZE_EPOCH, precision: Precision = PRECISION,
    accelerator: Accelerator = ACCELERATOR, devices: str = DEVICES, num_nodes: int = NUM_NODES,
    num_workers: int = NUM_WORKERS, seed: int = SEED, resume: bool = RESUME, strict: bool = STRICT,
    progress: bool = PROGRESS, limit: list[str] = LIMIT,
) -> None:
    """Fine-tune a PyTorchVideo classifier on a folder or CSV of videos."""
    from tiffin.limits import raise_limits
    from tiffin.train.video_fit import VideoTrainConfig, train_video

    raise_limits(limit or [])

    cfg = VideoTrainConfig(
        train_folder=train_folder, train_csv=train_csv, val_folder=val_folder, val_csv=val_csv,
        val_split=val_split, backbone=backbone, pretrained=pretrained, weights=weights,
        clip_duration=clip_duration, clip_sampler=clip_sampler.value, clips_per_video=clips_per_video,
        num_frames=num_frames, crop_size=crop_size, flip=flip, split=split, video_root=video_root,
        **run_options(locals()),
    )
    result = train_video(cfg)
    typer.echo(f"best checkpoint: {result.best_checkpoint}")


@train_app.command("speech")
@reported
def train_speech_command(
    train_csv: Path = typer.Option(None, help="CSV or TSV of recordings and transcripts; paths relative to it."),
    train_json: Path = typer.Option(None, help="JSON lines with the same two keys."),
    train_folder: Path = typer.Option(None, help="A Common Voice locale folder (clips/ + train.tsv; dev.tsv validates), "
                                      "a LibriSpeech split (*.trans.txt), or audio files with a .txt transcript "
                                      "beside each."),
    val_csv: Path = typer.Option(None), val_json: Path = typer.Option(None), val_folder: Path = typer.Option(None),
    val_split: float = typer.Option(0.1, help="Fraction held out when no validation set is given."),
    audio_column: str = typer.Option("speech_files", help="Column (key) holding the audio path."),
    text_column: str = typer.Option("targets", help="Column (key) holding the transcript."),
    audio_root: Path = typer.Option(None, help="Folder the table's relative audio paths start from [default: the "
                                    "table's folder; clips/ for a Common Voice TSV]."),
    backbone: str = typer.Option("facebook/wav2vec2-base-960h",
                                 help="A Hugging Face id (read from its cache), a save_pretrained folder, or "
                                      "tiffin/wav2vec2-tiny; see `tiffin backbones speech`."),
    pretrained: bool = typer.Option(True, help="Start from the backbone's weights."),
    vocab: VocabSource = typer.Option(VocabSource["from-backbone"],
                                      help="The backbone's characters, or a new vocabulary (and head) from the data."),
    sample_rate: int = typer.Option(16000, help="Rate the model takes; audio is resampled to it."),
    target_lang: str = typer.Option(None, help="Language of a backbone with per-language adapters (MMS, e.g. fra "
                                    "for facebook/mms-1b-all): its adapter and vocabulary."),
    freeze_feature_encoder: Optional[bool] = typer.Option(
        None, help="Keep the convolutional feature encoder frozen [default: yes from pretrained weights, no from scratch]."),
    learning_rate: float = typer.Option(1e-4),
    out: Path = typer.Option(None, help="Run folder [default: runs/speech-BACKBONE-TIME]."),
    batch_size: int = BATCH_SIZE, max_epochs: int = MAX_EPOCHS, max_steps: int = MAX_STEPS,
    strategy: list[str] = STRATEGY, unfreeze_epoch: int = UNFREEZE_EPOCH, precision: Precision = PRECISION,
    accelerator: Accelerator = ACCELERATOR, devices: str = DEVICES, num_nodes: int = NUM_NODES,
    num_workers: int = NUM_WORKERS, seed: int = SEED, resume: bool = RESUME, strict: bool = STRICT,
    progress: bool = PROGRESS, limit: list[str] = LIMIT,
) -> None:
    """Fine-tune a wav2vec2 CTC speech recogniser on transcribed recordings."""
    from tiffin.limits import raise_limits
    from tiffin.train.speech_fit import SpeechTrainConfig, train_speech

    raise_limits(limit or [])

    cfg = SpeechTrainConfig(
        train_csv=train_csv, train_json=train_json, train_folder=train_folder, val_csv=val_csv, val_json=val_json,
        val_folder=val_folder, val_split=val_split, audio_column=audio_column, text_column=text_column,
        audio_root=audio_root,
        backbone=backbone, pretrained=pretrained, vocab=vocab.value, sample_rate=sample_rate, target_lang=target_lang,
        freeze_feature_encoder=freeze_feature_encoder, **run_options(locals()),
    )
    result = train_speech(cfg)
    typer.echo(f"best checkpoint: {result.best_checkpoint}\nHugging Face model: {result.hf_dir}")


@backbones_app.command("video")
@reported
def backbones_video(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Video backbones with size, zoo input, cost, Kinetics-400 top-1 and where weights are looked up."""
    from rich.console import Console
    from rich.table import Table

    from tiffin.train.backbones import HF_VIDEO_FAMILIES, VIDEO_BACKBONES, hub_checkpoint_dir
    from tiffin.train.video_lookup import video_backbone_details

    # embedded (pretrained, shipped, offline) first; the rows VideoClassifier.get_backbone_details gives
    rows = [video_backbone_details(b.name) for b in sorted(VIDEO_BACKBONES.values(), key=lambda b: not b.embedded)]
    hub_rows = [hub_video_row(model_id, kind) for kind, family in HF_VIDEO_FAMILIES.items() for model_id in family.known]
    if as_json:
        typer.echo(json.dumps(rows + hub_rows, indent=2))
        return
    table = Table(title=f"video backbones (weights cached in {hub_checkpoint_dir()}; also any Hugging Face video "
                        f"classifier, an id or a save_pretrained folder: {', '.join(HF_VIDEO_FAMILIES)})")
    table.add_column("name", no_wrap=True)
    table.add_column("zoo")
    for col in ("params", "frames x rate", "crop", "GFLOPs/view", "K400 top-1", "weights"):
        table.add_column(col, justify="right")
    for r in rows:
        weights = ("embedded" if r["weights_present"] else "not built") if r["embedded"] else (
            "cached" if r["weights_present"] else "to fetch")
        top1 = "—" if r["kinetics400_top1"] is None else f"{r['kinetics400_top1']:.2f}"
        table.add_row(r["name"], r["zoo"], f"{r['params'] / 1e6:.1f}M", f"{r['frames']}x{r['sampling_rate']}",
                      str(r["crop"]), f"{r['gflops_per_view']:.2f}", top1, weights)
    for r in hub_rows:  # sizes and inputs come from the model's own config, once it is here
        table.add_row(r["name"], "transformers", "", "", "", "", "", "cached" if r["weights_present"] else "to fetch")
    Console().print(table)


def hub_video_row(model_id: str, kind: str) -> dict:
    """A known Hugging Face video classifier as `tiffin backbones video --json` lists it: its
    figures are its config's, read once it is cached, so the row says where and whether."""
    from tiffin.train.backbones import hf_hub_cache
    from tiffin.train.weights import hub_cached

    return {"name": model_id, "zoo": "transformers", "family": kind, "embedded": False,
            "weights_path": str(hf_hub_cache() / ("models--" + model_id.replace("/", "--"))),
            "weights_present": hub_cached(model_id) is not None}


@reported
def download_command(
    backbones: list[str] = typer.Argument(..., help="Backbone names (`tiffin backbones video|speech`) or Hugging "
                                          "Face model ids (org/name, org/name@revision)."),
    target_lang: str = typer.Option(None, help="Also this language's adapter, for models with per-language "
                                    "adapters (MMS, e.g. fra for facebook/mms-1b-all)."),
) -> None:
    """Fetch pretrained weights into the caches (torch hub's, the Hugging Face Hub's), to use here or to copy
    to a machine without network. Honours TORCH_HOME, HF_HOME, HF_ENDPOINT, HF_TOKEN and TIFFIN_WEIGHTS_MIRROR."""
    from tiffin.train.weights import download

    for name in backbones:
        typer.echo(f"{name}: {download(name, target_lang)}")


@synth_app.command("video")
@reported
def synth_video(
    out: Path = typer.Argument(..., help="Folder to write DIR/<class>/<video> into."),
    per_class: int = typer.Option(16, min=1, help="Videos per class."),
    seed: int = typer.Option(0),
    classes: str = typer.Option(None, help="Comma-separated classes: move_left|right|up|down (the default four), "
                                "move_up_left|up_right|down_left|down_right, rotate_clockwise|anticlockwise, grow, "
                                "shrink, blink, bounce."),
) -> None:
    """Write a synthetic motion dataset (shapes that move, turn, grow, blink or bounce; mp4/avi/webm/mkv)."""
    from tiffin.train.synthetic import make_motion_dataset

    try:
        clips = make_motion_dataset(out, per_class, seed, classes.split(",") if classes else None)
    except ValueError as err:
        raise TiffinError(f"--classes: {err}") from None
    typer.echo(f"wrote {len(clips)} videos in {len({c.label for c in clips})} classes to {out}")


@backbones_app.command("speech")
@reported
def backbones_speech(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Speech backbones with size, sample rate, CTC head and where weights are looked up."""
    from rich.console import Console
    from rich.table import Table

    from tiffin.train.backbones import CTC_KNOWN_IDS, SPEECH_BACKBONES, embedded_dir, hf_hub_cache
    from tiffin.train.weights import hub_cached

    rows = []
    for b in sorted(SPEECH_BACKBONES.values(), key=lambda b: b.weights != "embedded"):  # embedded first
        if b.weights == "embedded":
            folder = embedded_dir(b.name)
            rows.append({"name": b.name, "embedded": True, "params": b.params, "sample_rate": b.sample_rate,
                         "ctc_head": b.ctc_head, "weights_path": str(folder),
                         "weights_present": (folder / "model.safetensors").is_file(),
                         "note": "pretrained, shipped in the package: works offline"})
            continue
        cache = b.cache_dir
        rows.append({"name": b.name, "embedded": False, "params": b.params, "sample_rate": b.sample_rate,
                     "ctc_head": b.ctc_head, "weights_path": str(cache) if cache else None,
                     "weights_present": bool(cache and hub_cached(b.name)),
                     "note": "config only: trains from scratch" if cache is None else "Hugging Face cache"})
    listed = {r["name"] for r in rows}
    for kind, ids in CTC_KNOWN_IDS.items():  # published checkpoints of every family, fetched on first use
        for model_id in ids:
            if model_id not in listed:
                rows.append({"name": model_id, "embedded": False, "family": kind, "params": None, "sample_rate": None,
                             "ctc_head": True, "weights_path": str(hf_hub_cache() / ("models--" + model_id.replace("/", "--"))),
                             "weights_present": hub_cached(model_id) is not None, "note": f"Hugging Face {kind}"})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="speech backbones (also any AutoModelForCTC Hub id or save_pretrained folder of these "
                        f"families: {', '.join(CTC_KNOWN_IDS)})")
    table.add_column("name", no_wrap=True)
    for col in ("params", "rate", "CTC head", "weights"):
        table.add_column(col, justify="right")
    for r in rows:
        weights = ("embedded" if r["weights_present"] else "not built") if r["embedded"] else (
            "built in" if r["weights_path"] is None else "cached" if r["weights_present"] else "to fetch")
        table.add_row(r["name"], f"{r['params'] / 1e6:.1f}M" if r["params"] else "", str(r["sample_rate"] or ""),
                      "yes" if r["ctc_head"] else "no", weights)
    Console().print(table)


@synth_app.command("speech")
@reported
def synth_speech(
    out: Path = typer.Argument(..., help="Folder to write wav files and train.csv into."),
    count: int = typer.Option(200, min=1, help="Utterances."),
    seed: int = typer.Option(0),
    voices: str = typer.Option("en-us,en-gb,en-gb-x-rp,en-us+f2,en-gb+m3",
                               help="Comma-separated espeak-ng voices (variants with +; 'festival' for Festival)."),
    word_list: Path = typer.Option(None, help="Words to draw sentences from, one per line (e.g. /usr/share/dict/words) "
                                   "[default: a 31-word vocabulary]."),
    text: Path = typer.Option(None, help="Speak COUNT lines of this text file instead (one sentence a line, drawn at "
                              "random; lines with digits are skipped)."),
) -> None:
    """Speak random sentences with espeak-ng into OUT (wav + train.csv)."""
    from tiffin.errors import TiffinError
    from tiffin.train.synthetic import SPEECH_WORDS, make_speech_dataset, text_sentences

    if text is not None and word_list is not None:
        raise TiffinError("--text and --word-list: give one (sentences from a text, or drawn from a word list)")
    words = tuple(SPEECH_WORDS)
    if word_list is not None:
        from tiffin.train.pretrain import read_words

        words = read_words(word_list)
    sentences = text_sentences(text) if text is not None else None
    rows = make_speech_dataset(out, count, seed, voices.split(","), words=words, sentences=sentences)
    typer.echo(f"wrote {len(rows)} utterances and {Path(out) / 'train.csv'}")


pretrain_app = typer.Typer(help="Rebuild tiffin's embedded pretrained models with their recipes.", no_args_is_help=True)


@pretrain_app.command("speech")
@reported
def pretrain_speech_command(
    out: Path = typer.Option(..., help="Folder for the corpus, the run and the packaged model (OUT/tiny-en)."),
    sentences: int = typer.Option(SpeechRecipe.sentences, min=8, help="Training sentences."),
    val_sentences: int = typer.Option(SpeechRecipe.val_sentences, min=2, help="Held-out sentences in the pretraining voices."),
    scottish_sentences: int = typer.Option(SpeechRecipe.scottish_sentences, min=2,
                                           help="Held-out sentences in the held-out Scottish voice."),
    epochs: int = typer.Option(SpeechRecipe.epochs, min=1),
    batch_size: int = typer.Option(SpeechRecipe.batch_size, min=1),
    learning_rate: float = typer.Option(SpeechRecipe.learning_rate),
    seed: int = typer.Option(SpeechRecipe.seed),
    word_list: Path = typer.Option(Path(SpeechRecipe.word_list), help="Words, one per line (Debian's wamerican)."),
    festival: bool = typer.Option(SpeechRecipe.festival, help="Also speak with Festival (text2wave)."),
    install: bool = typer.Option(False, help="Copy the result into the package (train/embedded/tiny-en)."),
) -> None:
    """Build tiffin/tiny-en: generated English speech, many voices, Scottish held out; wav2vec2 CTC from scratch."""
    from tiffin.train.pretrain import pretrain_speech

    recipe = SpeechRecipe(sentences, val_sentences, scottish_sentences, epochs, batch_size, learning_rate, seed,
                          str(word_list), festival)
    card = pretrain_speech(out, recipe, install)
    typer.echo(json.dumps(card["metrics"]))


@pretrain_app.command("video")
@reported
def pretrain_video_command(
    out: Path = typer.Option(..., help="Folder for the corpus, the run and the packaged model (OUT/tiny-motion)."),
    per_class: int = typer.Option(VideoRecipe.per_class, min=2, help="Training videos per class."),
    val_per_class: int = typer.Option(VideoRecipe.val_per_class, min=1, help="Held-out videos per class."),
    epochs: int = typer.Option(VideoRecipe.epochs, min=1),
    batch_size: int = typer.Option(VideoRecipe.batch_size, min=1),
    learning_rate: float = typer.Option(VideoRecipe.learning_rate),
    seed: int = typer.Option(VideoRecipe.seed),
    install: bool = typer.Option(False, help="Copy the result into the package (train/embedded/tiny-motion)."),
) -> None:
    """Build tiffin/tiny-motion: x3d_xs at 8 frames x 64 px on 10 generated motion classes."""
    from tiffin.train.pretrain import pretrain_video

    card = pretrain_video(out, VideoRecipe(per_class, val_per_class, epochs, batch_size, learning_rate, seed), install)
    typer.echo(json.dumps(card["metrics"]))
