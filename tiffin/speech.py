"""Speech recognition from Python, as Lightning Flash users write it.

Example:
    >>> from tiffin import Trainer
    >>> from tiffin.speech import SpeechRecognition, SpeechRecognitionData
    >>> dm = SpeechRecognitionData.from_csv("speech_files", "targets", train_file="train.csv", batch_size=4)
    >>> model = SpeechRecognition(backbone="facebook/wav2vec2-base-960h")
    >>> trainer = Trainer(max_epochs=1)
    >>> trainer.finetune(model, datamodule=dm, strategy="no_freeze")
    >>> model.serve()

Importing this module imports torch, Lightning and transformers; `import tiffin` alone does not.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from tiffin.ctc import BASE_960H_TOKENS, Vocabulary
from tiffin.errors import TiffinError
from tiffin.model_api import ModelAPI
from tiffin.spec import SpeechSpec
from tiffin.console import say
from tiffin.train.speech_datamodule import SpeechRecognitionData
from tiffin.train.speech_task import TASK, ErrorRate, SpeechRecognitionTask

__all__ = ["SpeechRecognitionData", "SpeechRecognition"]


class SpeechRecognition(ModelAPI, SpeechRecognitionTask):
    """A CTC speech recogniser (a LightningModule) over a transformers CTC model of any family of
    tiffin.train.speech_model.CTC_FAMILIES: raw-waveform (wav2vec2 and MMS's language adapters,
    wav2vec2-conformer, HuBERT, WavLM, Data2Vec-Audio, SEW, SEW-D, UniSpeech, UniSpeech-SAT, Omnilingual
    ASR CTC) or log-mel (wav2vec2-bert, Parakeet CTC), SentencePiece tokens included, feature
    extraction in the graph.

    Example:
        >>> model = SpeechRecognition(backbone="tiffin/tiny-en")
        >>> model.predict(["hello.wav"])[0]["text"]
    """

    def __init__(
        self,
        backbone: str = "facebook/wav2vec2-base-960h",
        vocab: str | Sequence[str] | None = None,
        pretrained: bool = True,
        learning_rate: float = 1e-4,
        *,
        freeze_feature_encoder: bool | None = None,
        sampling_rate: int | None = None,
        target_lang: str | None = None,
        strategy: str = "no_freeze",
        unfreeze_epoch: int = 1,
        backbone_lr_scale: float = 0.1,
        weight_decay: float = 0.0,
        samples_to_show: int = 3,
        spec: dict[str, Any] | None = None,
        model_config: dict[str, Any] | None = None,
        task: str = TASK,
        init_model: Any = None,
    ):
        """`backbone`: a Hugging Face id (`org/name[@revision]`, downloaded into the Hugging Face
        cache, read from it offline), a save_pretrained folder of any family above, or an embedded
        model (`tiffin/tiny-en`); see `available_backbones()`. `vocab`: None for the
        backbone's characters, `"from-data"` to learn the training transcripts' alphabet (a new
        CTC head), or the characters themselves (a string or list). `freeze_feature_encoder`:
        default yes from pretrained weights, no from scratch. `target_lang`: the language of a
        backbone with per-language adapters (MMS, e.g. "fra" for facebook/mms-1b-all): its adapter
        weights and its vocabulary; the model's config records it. `spec` + `model_config` is how a
        checkpoint rebuilds the model; with them the other model options are unused."""
        from tiffin.train.speech_model import fit_head, load_backbone, speech_spec

        vocab_from_data = False
        if spec is None:
            model, backbone_vocab, source = load_backbone(backbone, pretrained, target_lang)
            if vocab == "from-data":
                chosen, vocab_from_data = backbone_vocab or Vocabulary(BASE_960H_TOKENS), True
            elif vocab is not None:
                chosen = Vocabulary.from_texts(["".join(vocab)])
            elif backbone_vocab is None:
                chosen = Vocabulary(BASE_960H_TOKENS)
                say(f"{backbone} has no CTC vocabulary; using wav2vec2-base-960h's English characters with a new "
                    "head (vocab='from-data' learns your alphabet)")
            else:
                chosen = backbone_vocab
            if fit_head(model, chosen, backbone_vocab):
                say(f"new CTC head for a vocabulary of {len(chosen.tokens)} tokens")
            spec = speech_spec(source, model, chosen, sampling_rate).to_dict()
            model_config = json.loads(model.config.to_json_string())
            init_model = model
            if freeze_feature_encoder is None:  # a random feature encoder must learn (the wav2vec2 recipe)
                freeze_feature_encoder = source != "config"
        elif model_config is None:
            raise TiffinError("SpeechRecognition: spec= needs model_config= (both come from a checkpoint)")
        super().__init__(backbone=backbone, spec=spec, model_config=model_config, strategy=strategy,
                         unfreeze_epoch=unfreeze_epoch,
                         freeze_feature_encoder=True if freeze_feature_encoder is None else freeze_feature_encoder,
                         learning_rate=learning_rate, backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay,
                         samples_to_show=samples_to_show, task=task, init_model=init_model)
        self.vocab_from_data = vocab_from_data
        self.test_wer, self.test_cer = ErrorRate("words"), ErrorRate("chars")

    @staticmethod
    def available_backbones() -> list[str]:
        """Backbone names `backbone=` takes besides a Hugging Face id or folder (embedded first)."""
        from tiffin.train.backbones import SPEECH_BACKBONES

        return sorted(SPEECH_BACKBONES, key=lambda name: (SPEECH_BACKBONES[name].weights != "embedded", name))

    def learn_vocabulary(self, texts: list[str]) -> None:
        """`vocab="from-data"`: the transcripts' alphabet and a new CTC head for it (before training)."""
        from tiffin.train.speech_model import fit_head

        vocab = Vocabulary.from_texts(texts)
        if fit_head(self.net.model, vocab, self.vocab):
            say(f"new CTC head for a vocabulary of {len(vocab.tokens)} tokens learnt from the training transcripts")
        self.vocab = vocab
        self.use_spec(replace(self.spec, vocab=vocab.tokens, blank_id=vocab.blank, word_start=vocab.word_start))
        self.hparams["model_config"] = json.loads(self.net.model.config.to_json_string())
        self.vocab_from_data = False

    def use_spec(self, spec: SpeechSpec) -> None:
        """Take the data's sampling rate (or learnt vocabulary); checkpoints record it."""
        self.spec = spec
        self.hparams["spec"] = spec.to_dict()

    def loaded(self):
        """This model as tiffin.train.predict's LoadedSpeechModel (in eval mode, on the CPU for export)."""
        import copy

        from tiffin.train.predict import LoadedSpeechModel

        self.eval()
        net = self.net if next(self.net.parameters()).device.type == "cpu" else copy.deepcopy(self.net).cpu().eval()
        return LoadedSpeechModel(net, self.spec, self.hparams.backbone)

    @classmethod
    def from_loaded(cls, loaded, source: str | Path | None = None) -> "SpeechRecognition":
        """A SpeechRecognition over a loaded network (tiffin.load: checkpoint, embedded name, HF folder)."""
        model = cls(backbone=loaded.backbone, spec=loaded.spec.to_dict(),
                    model_config=json.loads(loaded.net.model.config.to_json_string()))
        model.net = loaded.net  # already wrapped (normalisation, masked group norm): not wrapped twice
        model.source = source
        return model.eval()

    # --- testing: trainer.test(model, datamodule=...) ---------------------------------------
    def test_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, frames = self._loss(batch)
        self.log("test_loss", loss, on_epoch=True, batch_size=len(batch["texts"]), sync_dist=True)
        ids = logits.argmax(-1).cpu().numpy()
        hyps = [self.vocab.decode(row[: int(n)]) for row, n in zip(ids, frames.tolist())]
        self.test_wer.update(hyps, batch["texts"])
        self.test_cer.update(hyps, batch["texts"])

    def on_test_epoch_end(self) -> None:
        self.log("test_wer", self.test_wer.compute())
        self.log("test_cer", self.test_cer.compute())
        self.test_wer.reset()
        self.test_cer.reset()
