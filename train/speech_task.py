"""The speech recognition recipe: one LightningModule fine-tuning a CTC model (wav2vec2, HuBERT,
WavLM... train.speech_model.CTC_FAMILIES) with CTC.

Fine-tuning strategies as for video (train/finetuning.py): `freeze` trains only the CTC head;
`freeze_unfreeze` releases the transformer at `unfreeze_epoch`. The convolutional feature
encoder stays frozen throughout unless `freeze_feature_encoder` is off (the usual wav2vec2
recipe). Validation decodes greedily and reports WER and CER. Trained by tiffin.Trainer
(`tiffin train speech` and tiffin.speech.SpeechRecognition, its subclass); in a run folder it
adds OUT/hf/, the best model in Hugging Face format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from tiffin.console import say
from tiffin.ctc import Vocabulary, error_counts
from tiffin.spec import SpeechSpec
from tiffin.train.checkpoints import same_classes
from tiffin.train.finetuning import backbone_frozen, finetune_optimizer, params_outside
from tiffin.train.speech_model import SpeechNet, build_speech_net

TASK = "speech-recognition"



class ErrorRate(Metric):
    """WER or CER as `tiffin evaluate` computes it (tiffin.ctc.error_counts), summed across
    batches and, under DDP, across processes."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit  # "words" or "chars"
        self.add_state("edits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        words, n_words, chars, n_chars = error_counts(references, hypotheses)
        edits, total = (words, n_words) if self.unit == "words" else (chars, n_chars)
        self.edits += edits
        self.total += total

    def compute(self) -> torch.Tensor:
        return self.edits.float() / self.total.clamp(min=1)

class SpeechRecognitionTask(pl.LightningModule):
    """Fine-tunes a `SpeechNet`. Hyperparameters are plain values, saved in every checkpoint."""

    # what a run folder monitors (best.ckpt) and records per epoch in metrics.json
    run_monitor = ("val_cer", "min", ("val_loss", "val_wer", "val_cer"))

    def __init__(
        self,
        backbone: str,
        spec: dict[str, Any],
        model_config: dict[str, Any],
        strategy: str = "no_freeze",
        unfreeze_epoch: int = 1,
        freeze_feature_encoder: bool = True,
        learning_rate: float = 1e-4,
        backbone_lr_scale: float = 0.1,
        weight_decay: float = 0.0,
        samples_to_show: int = 3,
        task: str = TASK,
        init_model: torch.nn.Module | None = None,
    ):
        """`init_model`: the pretrained CTC model (Wav2Vec2ForCTC, HubertForCTC...) to start from (a new run only); rebuilding
        from a checkpoint uses `model_config` and the checkpoint's weights instead."""
        super().__init__()
        # named, not collected from the call stack (see VideoClassificationTask)
        self.save_hyperparameters({
            "backbone": backbone, "spec": spec, "model_config": model_config, "strategy": strategy,
            "unfreeze_epoch": unfreeze_epoch, "freeze_feature_encoder": freeze_feature_encoder,
            "learning_rate": learning_rate, "backbone_lr_scale": backbone_lr_scale, "weight_decay": weight_decay,
            "samples_to_show": samples_to_show, "task": task})
        self.spec = SpeechSpec.from_dict(spec)
        self.vocab = Vocabulary.of_spec(self.spec)
        self.net: SpeechNet = SpeechNet(init_model, self.spec) if init_model is not None else build_speech_net(model_config, self.spec)
        self.val_wer, self.val_cer = ErrorRate("words"), ErrorRate("chars")
        self.samples: list[dict[str, str]] = []
        self.all_empty = True
        self.validated_epoch = -1

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(waveform, lengths)

    # --- fine-tuning strategy -------------------------------------------------------------
    def _feature_encoder(self) -> torch.nn.Module:
        return self.net.feature_encoder

    def on_train_epoch_start(self) -> None:
        frozen = backbone_frozen(self.hparams.strategy, self.current_epoch, self.hparams.unfreeze_epoch)
        for p in params_outside(self.net, self.net.head()):
            p.requires_grad_(not frozen)
        self.net.backbone.train(not frozen)
        if self.hparams.freeze_feature_encoder:
            for p in self._feature_encoder().parameters():
                p.requires_grad_(False)
        self.net.head().train(True)

    def configure_optimizers(self):
        hp = self.hparams
        head = self.net.head()
        return finetune_optimizer(self, list(head.parameters()), params_outside(self.net, head), hp.strategy,
                                  hp.learning_rate, hp.backbone_lr_scale, hp.weight_decay)

    # --- steps ----------------------------------------------------------------------------
    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["wave"], batch["lengths"])
        frames = self.net.output_lengths(batch["lengths"])
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        targets = batch["labels"][batch["labels"] >= 0]
        loss = F.ctc_loss(log_probs, targets, frames, batch["label_lengths"], blank=self.vocab.blank_id,
                          reduction="mean", zero_infinity=True)
        return loss, logits, frames

    def training_step(self, batch: dict, batch_idx: int):
        loss, _, _ = self._loss(batch)
        size = len(batch["texts"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("pad_fraction", batch["pad_fraction"], on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, frames = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["texts"]), sync_dist=True)
        ids = logits.argmax(-1).cpu().numpy()
        hyps = [self.vocab.decode(row[: int(n)]) for row, n in zip(ids, frames.tolist())]
        self.val_wer.update(hyps, batch["texts"])
        self.val_cer.update(hyps, batch["texts"])
        self.all_empty &= not any(hyps)
        if len(self.samples) < self.hparams.samples_to_show:
            self.samples += [{"reference": r, "hypothesis": h} for r, h in zip(batch["texts"], hyps)]
            self.samples = self.samples[: self.hparams.samples_to_show]

    def on_validation_epoch_start(self) -> None:
        self.samples, self.all_empty = [], True

    def on_validation_epoch_end(self) -> None:
        self.log("val_wer", self.val_wer.compute(), prog_bar=True)
        self.log("val_cer", self.val_cer.compute(), prog_bar=True)
        self.val_wer.reset()
        self.val_cer.reset()
        if self.trainer.sanity_checking:
            return
        self.validated_epoch = self.current_epoch
        for s in self.samples:
            say(f"  ref: {s['reference']}\n  hyp: {s['hypothesis']}")
        if self.all_empty:
            frozen_head = self.hparams.strategy == "freeze" and self.current_epoch > 2
            say("every validation transcript is empty: the model emits only blanks. Early in training from "
                "scratch this is normal; if it persists, raise or lower --learning-rate"
                + (", unfreeze the backbone (--strategy no_freeze)" if frozen_head else "")
                + ", and check the vocabulary matches the transcripts (--vocab from-data for a new alphabet)",
                prefix="[yellow]warning[/] ")

    def best_extras(self) -> dict[str, Any]:
        """Kept in metrics.json for the best epoch only."""
        return {"samples": list(self.samples)}

    # --- the run folder (tiffin.Trainer(default_root_dir=...)) ----------------------------
    def run_report(self) -> dict[str, Any]:
        """What metrics.json records of the model."""
        return {"task": TASK, "backbone": self.hparams.backbone, "vocab": list(self.spec.vocab),
                "strategy": self.hparams.strategy}

    def finish_run(self, out: Path, metrics: dict[str, Any]) -> None:
        """The best model in Hugging Face format (OUT/hf), and the run's figures in one line."""
        hf_dir = out / "hf"
        if (out / "checkpoints" / "best.ckpt").is_file():
            save_hf(out / "checkpoints" / "best.ckpt", hf_dir)
        first = metrics["epochs"][0] if metrics.get("epochs") else {}
        if metrics.get("val_cer") is not None and first.get("val_cer") is not None:
            say(f"val_cer {first['val_cer']:.3f} after epoch 0 -> {metrics['val_cer']:.3f} (best "
                f"{metrics['best_val_cer']:.3f} at epoch {metrics['best_epoch']}), val_wer {first['val_wer']:.3f} -> "
                f"{metrics['val_wer']:.3f}; run in {out}, Hugging Face model in {hf_dir}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        same_classes(checkpoint, "vocab", self.spec.vocab, "vocabulary tokens")

    # --- self-describing checkpoints ------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from tiffin import __version__

        checkpoint["tiffin"] = {
            "task": TASK,
            "backbone": self.hparams.backbone,
            "spec": self.spec.to_dict(),
            "model_config": self.net.model.config.to_dict(),
            "tiffin_version": __version__,
            "torch_version": str(torch.__version__),
        }


def save_hf(checkpoint: Path, out: Path) -> None:
    """Write a checkpoint's model (of its own family: Wav2Vec2ForCTC, HubertForCTC, ParakeetForCTC...)
    and its tokenizer and feature extractor in Hugging Face format (save_pretrained): the
    raw-waveform families' Hub models use wav2vec2's processor; the log-mel ones get their own
    feature extractor (the front-end's settings) beside a CTC character tokenizer (vocab.json) or,
    for word pieces, a BPE tokenizer.json over the pieces in id order, blank and specials kept."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from tiffin.train.predict import load_speech_model

    loaded = load_speech_model(checkpoint)
    model, spec = loaded.net.model, loaded.spec
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    front_end = getattr(loaded.net, "front_end", None)
    if front_end is not None:
        _save_log_mel_processor(spec, out)
        return
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({t: i for i, t in enumerate(spec.vocab)}, ensure_ascii=False, indent=1))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
                                     do_lower_case=False)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=spec.sample_rate, padding_value=0.0,
                                         do_normalize=spec.normalize,
                                         return_attention_mask=getattr(model.config, "feat_extract_norm",
                                                                       "layer") == "layer")
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)


def _save_log_mel_processor(spec: SpeechSpec, out: Path) -> None:
    """A log-mel family's feature extractor and tokenizer, each saved on its own (a processor class
    would insist on one tokenizer class, and a fine-tuned Parakeet may spell in characters)."""
    from transformers import (ParakeetFeatureExtractor, ParakeetTokenizer, SeamlessM4TFeatureExtractor,
                              Wav2Vec2CTCTokenizer)

    settings = dict(spec.front_end)
    extractor = {"SeamlessM4TFeatureExtractor": SeamlessM4TFeatureExtractor,
                 "ParakeetFeatureExtractor": ParakeetFeatureExtractor}[settings.pop("kind")](**settings)
    extractor.save_pretrained(out)
    vocab = Vocabulary.of_spec(spec)
    if not vocab.pieces:
        vocab_file = out / "vocab.json"
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(spec.vocab)}, ensure_ascii=False, indent=1))
        Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token=spec.vocab[vocab.blank_id],
                             word_delimiter_token="|", do_lower_case=False).save_pretrained(out)
        return
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.tokenization_utils_base import generate_merges

    pieces = {t: i for i, t in enumerate(vocab.tokens)}
    special = [vocab.tokens[i] for i in sorted(vocab.silent)]
    # SentencePiece's BPE merges by piece id, as transformers' converter writes them (tiffin.ctc.Vocabulary.spell)
    merges = generate_merges(pieces, {t: -i for t, i in pieces.items() if t not in special}, skip_tokens=special)
    unk = "<unk>" if "<unk>" in pieces else None
    tokenizer = Tokenizer(models.BPE(pieces, merges, unk_token=unk, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=vocab.word_start, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=vocab.word_start, prepend_scheme="always")
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    ParakeetTokenizer(tokenizer_object=tokenizer, pad_token=vocab.tokens[vocab.blank_id], unk_token=unk,
                      clean_up_tokenization_spaces=False).save_pretrained(out)
