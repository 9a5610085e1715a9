"""Recipes for tiffin's embedded pretrained models: generate a corpus, train, package, describe.

`tiffin pretrain speech --out DIR` builds `tiffin/tiny-en`: English sentences over a broad word
list spoken by many espeak-ng voices and variants (and Festival), augmented, with the Scottish
voice held out; `tiffin pretrain video --out DIR` builds `tiffin/tiny-motion`: x3d_xs on a
generated corpus of motion classes. Each writes DIR/NAME/ in the format its library loads plus
MODEL_CARD.md and card.json (recipe, command, time, held-out metrics, sha256); `--install` copies
it into the package (train/embedded/NAME/), where `--backbone NAME` and `tiffin predict NAME`
find it. Seeded: rerunning gives the card's metrics within noise.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError
from tiffin.train.backbones import EMBEDDED_DIR
from tiffin.train.recipes import SpeechRecipe, VideoRecipe
from tiffin.console import say


def check_out(out: Path) -> None:
    """Refuse an --out that already holds a recipe's run, before minutes of corpus generation."""
    if (Path(out) / "run").exists():
        raise TiffinError(f"--out {out}: already holds a pretraining run; remove it or choose another --out")


def read_words(path: str | Path) -> tuple[str, ...]:
    """Plain lowercase words of 2-8 letters from a word list (one per line), sorted and unique."""
    path = Path(path)
    if not path.is_file():
        raise TiffinError(f"--word-list {path}: no such file; install Debian's wamerican (apt-get install wamerican) "
                          "or give a file with one word per line")
    words = sorted({w for w in path.read_text(encoding="utf-8", errors="ignore").split() if re.fullmatch("[a-z]{2,8}", w)})
    if len(words) < 20:
        raise TiffinError(f"--word-list {path}: only {len(words)} usable words (lowercase a-z, 2-8 letters); give a longer list")
    return tuple(words)


def speech_voices(festival: bool) -> list[str]:
    """Every pretraining voice x variant (the held-out Scottish voice never among them)."""
    from tiffin.train.synthetic import FESTIVAL, PRETRAIN_VOICES, VOICE_VARIANTS

    voices = [v + variant for variant in VOICE_VARIANTS for v in PRETRAIN_VOICES]
    return voices + ([FESTIVAL] * (len(voices) // 8) if festival else [])


def pretrain_speech(out: Path, recipe: SpeechRecipe, install: bool = False) -> dict[str, Any]:
    """Generate the corpus, train tiny-en from scratch, evaluate, package. Returns the card."""
    import numpy as np

    from tiffin.api import open_predictor
    from tiffin.train.evaluate import evaluate
    from tiffin.train.speech_fit import SpeechTrainConfig, train_speech
    from tiffin.train.synthetic import HELD_OUT_VOICE, VOICE_VARIANTS, make_speech_dataset

    check_out(out)
    started = time.time()
    words = read_words(recipe.word_list)
    voices = speech_voices(recipe.festival)
    rng = np.random.default_rng(recipe.seed)
    corpus = out / "corpus"
    say(f"speaking {recipe.sentences} + {recipe.val_sentences} sentences over {len(words)} words in {len(voices)} voices")
    make_speech_dataset(corpus / "train", recipe.sentences, recipe.seed, voices=list(rng.permutation(voices)),
                        words=words, lengths=(3, 6), augment=True)
    make_speech_dataset(corpus / "val", recipe.val_sentences, recipe.seed + 1, voices=list(rng.permutation(voices)),
                        words=words, lengths=(3, 6), augment=True)
    scottish = [HELD_OUT_VOICE + v for v in VOICE_VARIANTS]
    make_speech_dataset(corpus / "scottish", recipe.scottish_sentences, recipe.seed + 2, voices=scottish, words=words,
                        lengths=(3, 6))
    corpus_s = time.time() - started
    cfg = SpeechTrainConfig(train_csv=corpus / "train" / "train.csv", val_csv=corpus / "val" / "train.csv",
                            backbone="tiffin/tiny-en", pretrained=False, learning_rate=recipe.learning_rate,
                            batch_size=recipe.batch_size, max_epochs=recipe.epochs, seed=recipe.seed, out=out / "run",
                            progress=False)
    result = train_speech(cfg)
    train_s = time.time() - started - corpus_s
    package = out / "tiny-en"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(result.hf_dir, package)
    predictor = open_predictor(package)
    val, scottish = evaluate(predictor, corpus / "val" / "train.csv"), evaluate(predictor, corpus / "scottish" / "train.csv")
    metrics = {"val_cer": val["cer"], "val_wer": val["wer"], "scottish_zero_shot_cer": scottish["cer"],
               "scottish_zero_shot_wer": scottish["wer"]}
    card = {
        "name": "tiffin/tiny-en", "task": "speech-recognition", "recipe": asdict(recipe),
        "command": f"tiffin pretrain speech --out {out}" + recipe_flags(recipe, SpeechRecipe()),
        "corpus": {"train": recipe.sentences, "val": recipe.val_sentences, "scottish": recipe.scottish_sentences,
                   "words": len(words), "voices": len(set(voices)), "held_out_voice": HELD_OUT_VOICE},
        "params": sum(p.numel() for p in _speech_params(package)),
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "best_epoch": result.metrics.get("best_epoch"), "corpus_seconds": round(corpus_s), "train_seconds": round(train_s),
    }
    return finish_package(package, card, install)


def pretrain_video(out: Path, recipe: VideoRecipe, install: bool = False) -> dict[str, Any]:
    """Generate the motion corpus, train tiny-motion (x3d_xs, 8 x 64 px) from scratch, package it."""
    from safetensors.torch import save_file

    from tiffin.train.predict import load_video_model
    from tiffin.train.synthetic import PRETRAIN_CLASSES, make_motion_dataset
    from tiffin.train.video_fit import VideoTrainConfig, train_video

    check_out(out)
    started = time.time()
    corpus = out / "corpus"
    say(f"writing {recipe.per_class} + {recipe.val_per_class} videos for each of {len(PRETRAIN_CLASSES)} classes")
    make_motion_dataset(corpus / "train", recipe.per_class, recipe.seed, classes=list(PRETRAIN_CLASSES))
    make_motion_dataset(corpus / "val", recipe.val_per_class, recipe.seed + 1, classes=list(PRETRAIN_CLASSES))
    corpus_s = time.time() - started
    # no flips: they would turn move_left into move_right and clockwise into anticlockwise
    cfg = VideoTrainConfig(train_folder=corpus / "train", val_folder=corpus / "val", backbone="tiffin/tiny-motion",
                           pretrained=False, flip=False, batch_size=recipe.batch_size, max_epochs=recipe.epochs,
                           learning_rate=recipe.learning_rate, seed=recipe.seed, out=out / "run", progress=False)
    result = train_video(cfg)
    train_s = time.time() - started - corpus_s
    loaded = load_video_model(result.best_checkpoint)
    package = out / "tiny-motion"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    # fp16 storage keeps the file under 8 MB; loading casts back to float32
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in loaded.net.backbone.state_dict().items()}
    save_file(state, str(package / "model.safetensors"))
    (package / "spec.json").write_text(json.dumps({"architecture": "x3d_xs", "spec": loaded.spec.to_dict()}, indent=2))
    card = {
        "name": "tiffin/tiny-motion", "task": "video-classification", "recipe": asdict(recipe),
        "command": f"tiffin pretrain video --out {out}" + recipe_flags(recipe, VideoRecipe()),
        "corpus": {"classes": list(PRETRAIN_CLASSES), "train_videos": recipe.per_class * len(PRETRAIN_CLASSES),
                   "val_videos": recipe.val_per_class * len(PRETRAIN_CLASSES),
                   "containers": "mp4 (H.264), avi (MPEG-4), webm (VP9), mkv (H.264)", "frame_rates": "12-30 fps"},
        "params": sum(v.numel() for v in state.values() if v.is_floating_point()),
        "metrics": {"val_acc": round(float(result.metrics["best_val_acc"]), 4)},
        "best_epoch": result.metrics.get("best_epoch"), "corpus_seconds": round(corpus_s), "train_seconds": round(train_s),
    }
    return finish_package(package, card, install)


def _speech_params(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors")).values()


def recipe_flags(recipe: Any, default: Any) -> str:
    """The CLI flags that differ from the shipped recipe, so the card's command rebuilds this run."""
    flags = []
    for key, value in asdict(recipe).items():
        if value != getattr(default, key):
            flag = "--" + key.replace("_", "-")
            flags.append(f" {flag}" if value is True else f" --no-{flag[2:]}" if value is False else f" {flag} {value}")
    return "".join(flags)


def finish_package(package: Path, card: dict[str, Any], install: bool) -> dict[str, Any]:
    """sha256 of every weight file into card.json and MODEL_CARD.md; copy into the package when asked."""
    from tiffin.artifact_json import sha256

    card["files"] = {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
                     for p in sorted(package.iterdir()) if p.suffix in (".safetensors", ".json") and p.name != "card.json"}
    (package / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (package / "MODEL_CARD.md").write_text(model_card_text(card))
    if install:
        target = EMBEDDED_DIR / card["name"].split("/")[1]
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(package, target)
        say(f"installed into {target}")
    say(f"{card['name']}: {card['metrics']} in {package}")
    return card


def model_card_text(card: dict[str, Any]) -> str:
    lines = [f"# {card['name']}", "", f"Task: {card['task']}. Built by tiffin's own recipe, offline, on generated data.", "",
             "Rebuild:", "", "```bash", card["command"], "```", "", "## Corpus", ""]
    lines += [f"- {k}: {v}" for k, v in card["corpus"].items()]
    lines += ["", "## Training", "", f"- parameters: {card['params']:,}", f"- best epoch: {card.get('best_epoch')}",
              f"- corpus generation: {card['corpus_seconds']} s, training: {card['train_seconds']} s (2-core CPU)",
              "", "## Held-out metrics", ""]
    lines += [f"- {k}: {v}" for k, v in card["metrics"].items()]
    lines += ["", "## Files", ""] + [f"- {name}: sha256 {f['sha256']} ({f['bytes']:,} bytes)" for name, f in card["files"].items()]
    lines += ["", "Recipe numbers: `" + json.dumps(card["recipe"]) + "`", ""]
    return "\n".join(lines)
