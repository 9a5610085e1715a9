"""wav2vec2 CTC networks: a transformers `Wav2Vec2ForCTC` behind in-graph normalisation.

`SpeechNet` takes what the host decodes, mono float32 waveforms [B, S] at the spec's rate
with their lengths [B], normalises each utterance over its real samples (as wav2vec2's
feature extractor does on the host) and returns CTC logits [B, frames, vocab].
Exercised by `tiffin train speech` and `tiffin predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tiffin.ctc import BASE_960H_TOKENS, Vocabulary
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.backbones import SPEECH_BACKBONES, embedded_dir, hf_hub_cache


class MaskedInstanceNorm(nn.Module):
    """The GroupNorm of wav2vec2's first conv layer (one group per channel, statistics over
    time) taken over each utterance's real frames only.

    Plain GroupNorm counts the zero padding of a batch, so a padded utterance came out different
    from the same utterance alone; with this (and the attention mask), batched training,
    batched serving and single-file prediction compute the same function. Same parameters
    (`weight`, `bias`) under the same names, so checkpoints and Hugging Face weights load as before.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.frames: torch.Tensor | None = None  # [B] real frames, set by SpeechNet for each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # This tensor is the model's largest ([B, 512, samples / 5]): it is never copied to
        # float32; sums accumulate in float32 (a bf16 sum over thousands of frames loses the
        # variance), element-wise steps stay in the run's dtype, and the output is one fused
        # multiply-add (the first version, term by term in float32, took a third of a bf16
        # wav2vec2-base forward).
        if self.frames is None:
            mask = torch.ones_like(x[:, :1])
        else:
            mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < self.frames[:, None])[:, None].to(x.dtype)
        n = mask.sum(-1, keepdim=True, dtype=torch.float32).clamp(min=1)
        mean = (x * mask).sum(-1, keepdim=True, dtype=torch.float32) / n
        centred = (x - mean.to(x.dtype)) * mask
        var = (centred * centred).sum(-1, keepdim=True, dtype=torch.float32) / n
        scale = self.weight.float()[None, :, None] * torch.rsqrt(var + self.eps)
        shift = self.bias.float()[None, :, None] - mean * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


class SpeechNet(nn.Module):
    """Normalisation + Wav2Vec2ForCTC; outputs logits [B, frames, vocab].

    Padding never changes an utterance's logits: the waveform is normalised over its real
    samples, the first conv layer's group norm (group-norm models: wav2vec2-base) over its real
    frames, and the transformer gets the attention mask.
    """

    def __init__(self, model: nn.Module, spec: SpeechSpec):
        super().__init__()
        self.model = model
        self.normalize = spec.normalize
        self.kernels = tuple(model.config.conv_kernel)
        self.strides = tuple(model.config.conv_stride)
        first = model.wav2vec2.feature_extractor.conv_layers[0]
        if model.config.feat_extract_norm == "group":
            first.layer_norm = MaskedInstanceNorm(first.layer_norm)

    @property
    def first_norm(self) -> MaskedInstanceNorm | None:
        norm = getattr(self.model.wav2vec2.feature_extractor.conv_layers[0], "layer_norm", None)
        return norm if isinstance(norm, MaskedInstanceNorm) else None

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]
        x = waveform * mask  # keeps the caller's float dtype (bf16 exports run in bf16 throughout)
        if self.normalize:
            # statistics in float32: a bf16 sum over tens of thousands of samples is far off
            xf, n = x.float(), lengths.clamp(min=1).float()[:, None]
            mean = xf.sum(1, keepdim=True) / n
            var = ((xf - mean) ** 2 * mask).sum(1, keepdim=True) / n
            x = ((xf - mean) / torch.sqrt(var + 1e-7) * mask).to(x.dtype)
        norm = self.first_norm
        if norm is not None:
            norm.frames = torch.div(lengths - self.kernels[0], self.strides[0], rounding_mode="floor") + 1
        try:
            return self.model(x, attention_mask=mask.long()).logits
        finally:
            if norm is not None:
                norm.frames = None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Logit frames for input lengths: each conv layer maps L to (L - kernel) // stride + 1."""
        for kernel, stride in zip(self.kernels, self.strides):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def head(self) -> nn.Linear:
        return self.model.lm_head


def model_class():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar says nothing for local files
    return Wav2Vec2Config, Wav2Vec2ForCTC


def read_vocab(directory: Path) -> Vocabulary | None:
    """The character vocabulary saved beside a model (`vocab.json`, token -> id), if any."""
    path = directory / "vocab.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text(encoding="utf-8"))
    if table and all(isinstance(v, dict) for v in table.values()):  # multilingual layout {lang: {token: id}}
        table = next(iter(table.values()))
    return Vocabulary(tuple(token for token, _ in sorted(table.items(), key=lambda kv: kv[1])))


def _hf_snapshot(model_id: str) -> Path | None:
    """The newest cached snapshot folder of a Hugging Face model id, if the cache has one."""
    repo = hf_hub_cache() / ("models--" + model_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
    return snapshots[-1] if snapshots else None


def load_backbone(backbone: str, pretrained: bool = True) -> tuple[nn.Module, Vocabulary | None, str]:
    """A Wav2Vec2ForCTC from a local folder, the Hugging Face cache, or a built-in config.

    Returns:
        (model, the vocabulary its CTC head was trained with or None, where it came from).

    Raises:
        TiffinError: unknown backbone, or weights missing offline (with what to put where).
    """
    Wav2Vec2Config, Wav2Vec2ForCTC = model_class()
    folder = Path(backbone).expanduser()
    info = SPEECH_BACKBONES.get(backbone)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise TiffinError(f"--backbone {folder}: no config.json; give a folder written by save_pretrained")
        source = folder
    elif info is not None and info.weights == "embedded" and pretrained:
        source = embedded_dir(backbone)
        if not (source / "config.json").is_file():
            raise TiffinError(f"--backbone {backbone}: its weights are not in this checkout ({source}); build them with "
                              f"`tiffin pretrain speech --out runs/pretrain --install`, or pass --no-pretrained")
    elif info is not None and (info.weights == "none" or not pretrained):
        vocab = Vocabulary(BASE_960H_TOKENS) if info.ctc_head else None
        return Wav2Vec2ForCTC(Wav2Vec2Config(**info.config, vocab_size=len(BASE_960H_TOKENS))), vocab, "config"
    else:
        source = _hf_snapshot(backbone)
        if source is None:
            where = hf_hub_cache() / ("models--" + backbone.replace("/", "--"))
            raise TiffinError(
                f"--backbone {backbone}: not found offline in the Hugging Face cache ({where}); download it there "
                f"(`hf download {backbone}` where there is network, then copy the cache), or pass a folder written "
                "by save_pretrained, or start from the embedded pretrained --backbone tiffin/tiny-en (offline), or "
                "--no-pretrained"
            )
    refuse_remote_code(Path(source), backbone)
    if pretrained:
        refuse_pickled_weights(Path(source), backbone)
    try:
        if pretrained:  # use_safetensors: never fall back to unpickling a .bin beside them
            model = Wav2Vec2ForCTC.from_pretrained(source, local_files_only=True, use_safetensors=True)
        else:
            model = Wav2Vec2ForCTC(Wav2Vec2Config.from_pretrained(source, local_files_only=True))
    except (OSError, ValueError) as exc:
        raise TiffinError(f"--backbone {backbone}: cannot load it ({str(exc).splitlines()[0][:160]})") from None
    return model, read_vocab(source), str(source)


def refuse_pickled_weights(folder: Path, backbone: str) -> None:
    """Refuse a model folder whose weights are only pickles (pytorch_model.bin and its shards):
    unpickling runs whatever the file names, and torch's weights-only guard turns a hostile one
    into a traceback at best. tiffin reads weights from safetensors only, which hold tensors and
    nothing else.

    Raises:
        TiffinError: no *.safetensors file, but pickled weights.
    """
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    if pickled:
        raise TiffinError(f"--backbone {backbone}: {folder / pickled[0]} holds pickled weights, which tiffin does "
                          "not load (unpickling runs code); convert them to safetensors where you trust the file "
                          "(Wav2Vec2ForCTC.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)) "
                          "and remove the .bin")


def refuse_remote_code(folder: Path, backbone: str) -> None:
    """Refuse a model folder (or Hub snapshot) whose config.json names code of its own (`auto_map`,
    what transformers runs under trust_remote_code). tiffin builds transformers' own
    Wav2Vec2ForCTC and never passes trust_remote_code, so such a model could only load as
    something other than what its maker wrote; and its code is a program no signature vouches for.

    Raises:
        TiffinError: the config names custom code.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports an unreadable config itself, with the file's name
    if isinstance(config, dict) and config.get("auto_map"):
        raise TiffinError(f"--backbone {backbone}: {folder / 'config.json'} names model code of its own (auto_map), "
                          "which only loads with trust_remote_code, and tiffin runs no model folder's code; "
                          "give a wav2vec2 CTC model that transformers' own classes load (save_pretrained of "
                          "Wav2Vec2ForCTC)")


def fit_head(model: nn.Module, vocab: Vocabulary, backbone_vocab: Vocabulary | None) -> bool:
    """Give the model a CTC head for `vocab`; a fresh one unless the backbone's matches it.

    Returns:
        True when the head was replaced.
    """
    config = model.config
    config.pad_token_id = vocab.blank_id
    config.ctc_zero_infinity = True
    if backbone_vocab is not None and backbone_vocab.tokens == vocab.tokens and model.lm_head.out_features == len(vocab):
        return False
    hidden = getattr(config, "output_hidden_size", None) or config.hidden_size
    model.lm_head = nn.Linear(hidden, len(vocab))
    config.vocab_size = len(vocab)
    return True


def feature_settings(source: str | Path) -> tuple[int, bool]:
    """(sampling rate, do_normalize) of the feature extractor saved beside a model: its own
    preprocessor_config.json (transformers 4), or nested in processor_config.json as
    transformers 5's `save_pretrained` writes it; wav2vec2's (16000, True) when there is none."""
    folder = Path(source)
    saved: dict = {}
    if (folder / "preprocessor_config.json").is_file():
        saved = json.loads((folder / "preprocessor_config.json").read_text())
    elif (folder / "processor_config.json").is_file():
        saved = json.loads((folder / "processor_config.json").read_text()).get("feature_extractor") or {}
    return int(saved.get("sampling_rate", 16000)), bool(saved.get("do_normalize", True))


def build_speech_net(model_config: dict, spec: SpeechSpec) -> SpeechNet:
    """Rebuild a network from a saved config (no download): weights come from a checkpoint."""
    Wav2Vec2Config, Wav2Vec2ForCTC = model_class()
    return SpeechNet(Wav2Vec2ForCTC(Wav2Vec2Config.from_dict(model_config)), spec)
