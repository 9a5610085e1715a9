"""CTC speech networks: a transformers `AutoModelForCTC` of any family in CTC_FAMILIES behind
its feature extraction, in the graph: the raw-waveform families (wav2vec2 with MMS's language
adapters, wav2vec2-conformer, HuBERT, WavLM, Data2Vec-Audio, SEW, SEW-D, UniSpeech, UniSpeech-SAT,
Omnilingual ASR CTC) behind per-utterance normalisation, the log-mel ones (wav2vec2-bert, Parakeet CTC) behind their feature extractor's
log-mel front-end (tiffin.train.speech_features).

`SpeechNet` takes what the host decodes, mono float32 waveforms [B, S] at the spec's rate
with their lengths [B], computes what the family's feature extractor computes on the host for
each utterance alone, and returns CTC logits [B, frames, vocab]; the frames each utterance owns
are a chain of (kernel, stride) steps over its samples (`kernels`, `strides`), so the torch-free
host windows and cuts every family's logits alike.
Exercised by `tiffin train speech` and `tiffin predict`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tiffin.ctc import BASE_960H_TOKENS, WORD_START, Vocabulary
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.backbones import SPEECH_BACKBONES, embedded_dir
from tiffin.train.model_files import refuse_pickled_weights, refuse_remote_code


def _parakeet_pools(config) -> list[tuple[int, int]]:
    """Parakeet's subsampling convs, as (kernel, stride) steps: each maps L frames to
    (L + 2 * ((k - 1) // 2) - k) // s + 1, the count its attention mask takes."""
    encoder = config.encoder_config
    k, s = int(encoder.subsampling_conv_kernel_size), int(encoder.subsampling_conv_stride)
    return [(k - 2 * ((k - 1) // 2), s)] * int(math.log2(encoder.subsampling_factor))


def _w2v_bert_pools(config) -> list[tuple[int, int]]:
    """wav2vec2-bert's adapter layers (when `add_adapter`): each maps L frames to
    (L + 2 * (k // 2) - k) // s + 1 (check_family takes only adapters whose convs count alike)."""
    if not getattr(config, "add_adapter", False):
        return []
    k, s = int(config.adapter_kernel_size), int(config.adapter_stride)
    return [(k - 2 * (k // 2), s)] * int(config.num_adapter_layers)


@dataclass(frozen=True)
class CTCFamily:
    """What tiffin knows of a CTC family beyond what they share.

    `frame_convs`: the module names (fnmatch patterns under the base model) of plain Conv1d
    layers that run along the frames on inputs not zeroed past each utterance's end (so padding
    would leak into its last frames); SpeechNet zeroes their input there (MaskedConv1d); in a
    module under `...layers.N.` of a pooling stack (`pools`), past the frames left after N pools.
    `features`: the transformers feature extractor the family reads input features from (a key
    of speech_features.FRONT_ENDS, computed in the graph); None: raw waveforms through the conv
    feature encoder (`base_model.feature_extractor`, frames from config.conv_kernel/conv_stride).
    `pools`: the log-mel families' frame-reducing steps after the front-end, (kernel, stride) each.
    `base`: the attribute holding everything but the head (None: transformers' `base_model`);
    `head`: the CTC head's (a Linear, or Parakeet's 1x1 Conv1d); `frozen`: the module under the
    base that `freeze_feature_encoder` freezes (raw families: the conv feature encoder; None:
    nothing, the log-mel families' fine-tuning recipes, transformers' and NeMo's, train it all).
    Raw-waveform families that name things otherwise (OmniASR): `encoder_config`, the config attribute
    holding the conv encoder's settings (conv_kernel, conv_stride; None: the config itself); `mask`,
    the keyword of the base model's sample mask; `channels`, waveforms given as [B, 1, samples];
    `norm_eps`, the epsilon of its feature extractor's per-utterance normalisation.
    """

    notes: str
    frame_convs: tuple[str, ...] = ()
    features: str | None = None
    pools: Callable[[Any], list[tuple[int, int]]] | None = None
    base: str | None = None
    head: str = "lm_head"
    frozen: str | None = "feature_extractor"
    encoder_config: str | None = None
    mask: str = "attention_mask"
    channels: bool = False
    norm_eps: float = 1e-7


# The CTC families tiffin fine-tunes, exports and serves, by config.json's model_type. The
# raw-waveform ones take waveforms through the same conv feature encoder, a transformer given the
# attention mask, and a linear CTC head `lm_head`; the log-mel ones take their extractor's features
# (computed in the graph) and the attention mask over their frames. SpeechNet treats each kind alike.
CTC_FAMILIES: dict[str, CTCFamily] = {
    "wav2vec2": CTCFamily("wav2vec 2.0, XLS-R, MMS (a language's adapter loaded by target_lang)"),
    "wav2vec2-conformer": CTCFamily("wav2vec 2.0 with conformer blocks: a depthwise conv in each",
                                    ("encoder.layers.*.conv_module.depthwise_conv",)),
    "hubert": CTCFamily("HuBERT"),
    "wavlm": CTCFamily("WavLM: gated relative position bias"),
    "data2vec-audio": CTCFamily("Data2Vec-Audio: layer norm in every conv layer (no feat_extract_norm), "
                                "a stack of positional convs", ("encoder.pos_conv_embed.layers.*.conv",)),
    "sew": CTCFamily("SEW: the transformer runs on frames pooled by squeeze_factor, upsampled back"),
    "sew-d": CTCFamily("SEW-D: SEW with disentangled (DeBERTa) attention"),
    "unispeech": CTCFamily("UniSpeech"),
    "unispeech-sat": CTCFamily("UniSpeech-SAT"),
    "wav2vec2-bert": CTCFamily("w2v-BERT 2.0: Kaldi fbank features stacked in pairs (SeamlessM4T's extractor), "
                               "a conformer; an optional adapter pools frames",
                               ("adapter.layers.*.residual_conv", "adapter.layers.*.self_attn_conv"),
                               features="SeamlessM4TFeatureExtractor", pools=_w2v_bert_pools, frozen=None),
    "parakeet_ctc": CTCFamily("Parakeet CTC (NeMo FastConformer): NeMo log-mel features, 8x conv subsampling, "
                              "SentencePiece tokens with the blank last",
                              features="ParakeetFeatureExtractor", pools=_parakeet_pools, base="encoder",
                              head="ctc_head", frozen=None),
    "omniasr_ctc": CTCFamily("Omnilingual ASR CTC: a wav2vec2-style encoder (layer-norm convs on [B, 1, samples], "
                             "a sample padding_mask), SentencePiece tokens with the blank first (blank_token_id)",
                             head="ctc_head", frozen="audio_tower.subsampling", encoder_config="audio_config",
                             mask="padding_mask", channels=True, norm_eps=1e-5),
}
# CTC models transformers has that tiffin does not take yet, and why (a one-line refusal says it)
UNSUPPORTED_CTC: dict[str, str] = {
    "lasr_ctc": "its log-mel feature extractor has no in-graph front-end in tiffin yet",
    "granite_speech5_ctc": "its log-mel feature extractor has no in-graph front-end in tiffin yet",
}


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


class MaskedConv1d(nn.Module):
    """A Conv1d along the frames whose input is zeroed past each utterance's real frames, as the
    conv's own zero padding is when the utterance is alone. Same parameters (`weight`, `bias`)
    under the same names, so checkpoints and Hugging Face weights load as before."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"MaskedConv1d takes zero-padded convolutions with numeric padding, not {conv}")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.frames: torch.Tensor | None = None  # [B] real frames, set by SpeechNet for each call
        self.pools: int | None = None  # log-mel families: the pools before it (SpeechNet); None: the logits' frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames is not None:
            x = x * (torch.arange(x.shape[-1], device=x.device)[None, :] < self.frames[:, None])[:, None].to(x.dtype)
        return nn.functional.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SpeechNet(nn.Module):
    """Feature extraction + a CTC model of `CTC_FAMILIES`; outputs logits [B, frames, vocab].

    Padding never changes an utterance's logits. Raw-waveform families: the waveform is
    normalised over its real samples, the first conv layer's group norm (group-norm models:
    wav2vec2-base, HuBERT, SEW...) over its real frames, and the transformer gets the attention
    mask. SEW and SEW-D pool frames by `squeeze_factor` before the transformer and upsample after
    it, padding the last odd frames with zeros: in a batch those frames would be pooled with the
    padding, so the transformer is given only each utterance's whole pools and the odd frames get
    the zero state they get alone. Log-mel families: the front-end (`front_end`, the family's
    feature extractor in the graph) takes each utterance's statistics over its real frames, and
    the model gets the attention mask over them; frame-pooling convs that see unmasked frames
    (wav2vec2-bert's adapter) get their input zeroed past each utterance's frames.
    """

    def __init__(self, model: nn.Module, spec: SpeechSpec):
        super().__init__()
        self.model = model
        self.normalize = spec.normalize
        config = model.config
        self.family = family = CTC_FAMILIES.get(getattr(config, "model_type", "wav2vec2")) or CTC_FAMILIES["wav2vec2"]
        self.squeeze = int(getattr(config, "squeeze_factor", 1) or 1)  # SEW, SEW-D
        self.front_end: nn.Module | None = None
        if family.features:
            from tiffin.train.speech_features import build_front_end, front_end_settings

            self.front_end = build_front_end(spec.front_end or front_end_settings(None, family.features))
            self.normalize = False  # the front-end normalises its features, as the extractor does
            pools = family.pools(config) if family.pools else []
            self.kernels = tuple(self.front_end.kernels) + tuple(k for k, _ in pools)
            self.strides = tuple(self.front_end.strides) + tuple(s for _, s in pools)
        else:
            encoder = getattr(config, family.encoder_config) if family.encoder_config else config
            self.kernels = tuple(encoder.conv_kernel)
            self.strides = tuple(encoder.conv_stride)
            first = self.feature_encoder.conv_layers[0]
            if getattr(encoder, "feat_extract_norm", None) == "group":
                first.layer_norm = MaskedInstanceNorm(first.layer_norm)
        self.frame_convs: list[MaskedConv1d] = []  # not registered: the modules are the model's own
        for name, module in list(self.backbone.named_modules()):
            if isinstance(module, nn.Conv1d) and any(fnmatchcase(name, p) for p in family.frame_convs):
                parent, _, attr = name.rpartition(".")
                masked = MaskedConv1d(module)
                # log-mel families: a conv of pooling layer N sees the frames left after N pools
                layer = re.search(r"(?:^|\.)layers\.(\d+)\.", name) if family.features else None
                masked.pools = int(layer.group(1)) if layer else None
                setattr(self.backbone.get_submodule(parent), attr, masked)
                self.frame_convs.append(masked)

    @property
    def backbone(self) -> nn.Module:
        """The family's base model (`wav2vec2`, `hubert`, `sew_d`, Parakeet's `encoder`...): everything
        but the CTC head."""
        return getattr(self.model, self.family.base) if self.family.base else self.model.base_model

    @property
    def feature_encoder(self) -> nn.Module:
        """What `freeze_feature_encoder` freezes: the convolutional feature encoder over the raw
        waveform; nothing (an empty module) for the log-mel families, whose front-end has no weights."""
        return self.backbone.get_submodule(self.family.frozen) if self.family.frozen else nn.Sequential()

    @property
    def first_norm(self) -> MaskedInstanceNorm | None:
        if self.front_end is not None:
            return None
        norm = getattr(self.feature_encoder.conv_layers[0], "layer_norm", None)
        return norm if isinstance(norm, MaskedInstanceNorm) else None

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.front_end is not None:
            return self._from_features(waveform, lengths)
        mask = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]
        x = waveform * mask  # keeps the caller's float dtype (bf16 exports run in bf16 throughout)
        if self.normalize:
            # statistics in float32: a bf16 sum over tens of thousands of samples is far off
            xf, n = x.float(), lengths.clamp(min=1).float()[:, None]
            mean = xf.sum(1, keepdim=True) / n
            var = ((xf - mean) ** 2 * mask).sum(1, keepdim=True) / n
            x = ((xf - mean) / torch.sqrt(var + self.family.norm_eps) * mask).to(x.dtype)
        kept = width = None
        if self.squeeze > 1:
            # SEW's encoder zero-pads its upsampled frames up to the input's in a Python branch
            # that an export bakes in: give it a whole number of pools, always (one pool for a
            # one-frame recording too, which SEW fails on), adding frames of zeros. Python ints
            # of the width: an export traces them.
            width = x.shape[1]
            for kernel, stride in zip(self.kernels, self.strides):
                width = (width - kernel) // stride + 1  # the batch's logit frames
            more = (width + self.squeeze - 1) // self.squeeze * self.squeeze - width  # 0 .. squeeze - 1
            hop = math.prod(self.strides)
            x = nn.functional.pad(x, (0, (self.squeeze - 1) * hop))[:, : x.shape[1] + more * hop]
            # the frames of each utterance's whole pools; the model takes a sample mask, so give it
            # the fewest samples that make exactly those frames (it counts frames by the conv formula)
            kept = torch.div(self.output_lengths(lengths), self.squeeze, rounding_mode="floor") * self.squeeze
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < self.samples_for(kept)[:, None]
        norm = self.first_norm
        if norm is not None:
            norm.frames = torch.div(lengths - self.kernels[0], self.strides[0], rounding_mode="floor") + 1
        frames = self.output_lengths(lengths) if self.frame_convs else None
        for conv in self.frame_convs:
            conv.frames = frames
        try:
            hidden = self.backbone(x[:, None] if self.family.channels else x, **{self.family.mask: mask.long()})[0]
        finally:
            for module in ([norm] if norm is not None else []) + self.frame_convs:
                module.frames = None
        if kept is not None:  # the frames past the whole pools: zeros, as the model pads them alone
            index = torch.arange(hidden.shape[1], device=hidden.device)[None, :, None]
            hidden = torch.where(index < kept[:, None, None], hidden, torch.zeros_like(hidden))[:, :width]
        return self._head(hidden)

    def _from_features(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-mel families: the front-end's features and their attention mask through the model."""
        features, frames = self.front_end(waveform, lengths)
        mask = torch.arange(features.shape[1], device=features.device)[None, :] < frames[:, None]
        pooled = [frames]
        for kernel, stride in zip(self.kernels[len(self.front_end.kernels):],
                                  self.strides[len(self.front_end.strides):]):
            pooled.append((torch.div(pooled[-1] - kernel, stride, rounding_mode="floor") + 1).clamp(min=0))
        for conv in self.frame_convs:
            conv.frames = pooled[conv.pools if conv.pools is not None else -1]
        try:
            hidden = self.backbone(features, attention_mask=mask.long())[0]
        finally:
            for conv in self.frame_convs:
                conv.frames = None
        return self._head(hidden)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """What every family's ForCTC.forward does after its base model: dropout (where it has one), the head."""
        dropout = getattr(self.model, "dropout", None)
        return self.head()(dropout(hidden) if isinstance(dropout, nn.Module) else hidden)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Logit frames for input lengths: each conv layer maps L to (L - kernel) // stride + 1."""
        for kernel, stride in zip(self.kernels, self.strides):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def samples_for(self, frames: torch.Tensor) -> torch.Tensor:
        """The fewest input samples that give `frames` logit frames (0 for none)."""
        samples = frames
        for kernel, stride in reversed(list(zip(self.kernels, self.strides))):
            samples = (samples - 1) * stride + kernel
        return torch.where(frames > 0, samples, torch.zeros_like(samples))

    def head(self) -> nn.Module:
        """The CTC head: a Linear (`lm_head`), or Parakeet's 1x1 Conv1d (`ctc_head`)."""
        return getattr(self.model, self.family.head)


def model_class():
    """transformers' (AutoConfig, AutoModelForCTC), with its per-load progress bar off."""
    from transformers import AutoConfig, AutoModelForCTC
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar says nothing for local files
    return AutoConfig, AutoModelForCTC


def check_family(config: dict | object, backbone: str) -> str:
    """The model_type of a CTC model's config (a dict or a transformers config), if tiffin takes it.

    Raises:
        TiffinError: a family tiffin does not fine-tune (non-CTC models, CTC families of
            UNSUPPORTED_CTC), a raw-waveform model with an adapter after the transformer (it changes
            the frame count), or a wav2vec2-bert adapter whose convolutions count frames otherwise
            than its attention mask does.
    """
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    model_type = get("model_type") or "wav2vec2"  # wav2vec2 checkpoints of early tiffins may lack it
    supported = ", ".join(CTC_FAMILIES)
    if model_type not in CTC_FAMILIES:
        why = UNSUPPORTED_CTC.get(model_type, "it is not a CTC model transformers' AutoModelForCTC builds")
        raise TiffinError(f"--backbone {backbone}: model_type {model_type!r} is not supported ({why}); tiffin "
                          f"fine-tunes the CTC families {supported}")
    if get("add_adapter") and not CTC_FAMILIES[model_type].features:
        raise TiffinError(f"--backbone {backbone}: its config adds an adapter after the transformer (add_adapter), "
                          "which changes the frame count tiffin decodes; give a CTC model without one")
    if get("add_adapter"):  # wav2vec2-bert: its mask counts (L + 2 (k // 2) - k) // s + 1, its convs pad s // 2
        kernel, stride = int(get("adapter_kernel_size", 3)), int(get("adapter_stride", 2))
        if kernel % 2 == 0 or kernel // 2 != stride // 2:
            raise TiffinError(f"--backbone {backbone}: its adapter (adapter_kernel_size {kernel}, adapter_stride "
                              f"{stride}) pads its convolutions otherwise than its attention mask counts frames; "
                              "tiffin takes odd kernels with kernel // 2 == stride // 2 (the default 3 and 2)")
    return model_type


def ctc_config(model_config: dict, backbone: str = "model_config"):
    """The transformers config of a saved config dict (a checkpoint's `model_config`), of its family."""
    from transformers import CONFIG_MAPPING

    model_type = check_family(model_config, backbone)
    return CONFIG_MAPPING[model_type].from_dict({k: v for k, v in model_config.items() if k != "model_type"})


def build_ctc_model(config) -> nn.Module:
    """A randomly initialised float32 CTC model of `config`'s family."""
    _, AutoModelForCTC = model_class()
    return AutoModelForCTC.from_config(config, dtype=torch.float32)


def read_vocab(directory: Path, config=None, target_lang: str | None = None) -> Vocabulary | None:
    """The vocabulary saved beside a model, if any: characters of a CTC tokenizer's `vocab.json`
    (token -> id; the blank `<pad>`, else the model's `pad_token_id`: the `[PAD]` of Hugging Face's
    fine-tuning guides; of a multilingual one, {lang: {token: id}} as MMS saves it, `target_lang`'s
    table, as its tokenizer's target_lang picks it, else the first), else the tokens of a fast
    tokenizer's `tokenizer.json` (its model's vocabulary and added tokens, by id): word pieces when
    they mark word starts with "▁" (Parakeet's SentencePiece), the blank the model's `pad_token_id`
    (the id its CTC loss and tokenizer skip), else `<pad>`'s. A config with a `blank_token_id`
    (OmniASR, whose pad is not its blank) names the blank in either file, and word pieces in vocab.json.

    Raises:
        TiffinError: a tokenizer.json whose ids leave gaps, or a vocabulary with no blank to name.
    """
    pad = getattr(config, "pad_token_id", None) if config is not None else None
    blank = getattr(config, "blank_token_id", None) if config is not None else None  # OmniASR's blank, not its pad
    path = directory / "vocab.json"
    if path.is_file():
        table = json.loads(path.read_text(encoding="utf-8"))
        if table and all(isinstance(v, dict) for v in table.values()):  # multilingual layout {lang: {token: id}}
            table = table[target_lang] if target_lang in table else next(iter(table.values()))
        tokens = tuple(token for token, _ in sorted(table.items(), key=lambda kv: kv[1]))
        if isinstance(blank, int) and 0 <= blank < len(tokens):  # OmniASR, pieces (save_hf writes them here too)
            start = WORD_START if any(t.startswith(WORD_START) for t in tokens) else None
            return Vocabulary(tokens) if start is None and tokens[blank] == "<pad>" else Vocabulary(tokens, blank, start)
        if "<pad>" in tokens:
            return Vocabulary(tokens)
        if not (isinstance(pad, int) and 0 <= pad < len(tokens)):  # [PAD] of the fine-tuning guides: the config's pad
            raise TiffinError(f"{path}: no CTC blank: no <pad> token, and the model's config names no pad_token_id "
                              "within the vocabulary")
        return Vocabulary(tokens, pad)
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        vocab = (saved.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token -> id
            ids = {int(i): token for token, i in vocab.items()}
        else:  # Unigram: [[piece, score], ...] in id order
            ids = {i: entry[0] if isinstance(entry, list) else entry for i, entry in enumerate(vocab)}
        ids.update({int(t["id"]): t["content"] for t in saved.get("added_tokens") or []})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TiffinError(f"{path}: not a tokenizer.json tiffin reads ({exc})") from None
    if not ids or sorted(ids) != list(range(len(ids))):
        raise TiffinError(f"{path}: its token ids are not 0..{len(ids) - 1} without gaps; tiffin needs one token per "
                          "CTC output")
    tokens = tuple(ids[i] for i in range(len(ids)))
    if not (isinstance(blank, int) and 0 <= blank < len(tokens)):
        blank = pad if isinstance(pad, int) and 0 <= pad < len(tokens) else (
            tokens.index("<pad>") if "<pad>" in tokens else None)
    if blank is None:
        raise TiffinError(f"{path}: no CTC blank: the model's config has no pad_token_id and the tokens no <pad>")
    return Vocabulary(tokens, blank, WORD_START if any(t.startswith(WORD_START) for t in tokens) else None)


def load_backbone(backbone: str, pretrained: bool = True, target_lang: str | None = None
                  ) -> tuple[nn.Module, Vocabulary | None, str]:
    """A CTC model of `CTC_FAMILIES` from a local save_pretrained folder, a Hugging Face id
    (downloaded into its cache: train.weights.hub_model), an embedded model, or a built-in config,
    in training mode (from_pretrained leaves a model in eval mode: no dropout while fine-tuning).

    `target_lang`: a model with per-language adapters (MMS: config's `adapter_attn_dim`) needs one
    (or a config that records it: a fine-tuned one, its adapter in its weights); the language's
    `adapter.<lang>.safetensors` loads after the model (transformers' load_adapter, local files
    only; only that file is fetched from the Hub), the vocabulary is that language's table of the
    multilingual vocab.json, and the model's config records `target_lang`. A model without
    adapters takes it only to pick its table of a multilingual vocab.json.

    Returns:
        (model, the vocabulary its CTC head was trained with or None, where it came from).

    Raises:
        TiffinError: unknown backbone, unsupported family, weights missing offline (with what
            to put where), an adapter model without target_lang, or a language it has no adapter for.
    """
    from tiffin.train.weights import ADAPTER_FILE, hub_model, is_hub_id

    AutoConfig, AutoModelForCTC = model_class()
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
        from transformers import Wav2Vec2Config

        vocab = Vocabulary(BASE_960H_TOKENS) if info.ctc_head else None
        config = Wav2Vec2Config(**info.config, vocab_size=len(BASE_960H_TOKENS))
        return build_ctc_model(config).train(), vocab, "config"
    elif is_hub_id(backbone):
        try:
            source = hub_model(backbone, target_lang)
        except TiffinError as exc:
            raise TiffinError(f"{exc}, or start from the embedded pretrained --backbone tiffin/tiny-en (offline), "
                              "or --no-pretrained") from None
    else:
        raise TiffinError(f"--backbone {backbone}: not a folder, a Hugging Face model id (org/name[@revision]) nor "
                          "a backbone of `tiffin backbones speech`")
    source = Path(source)
    refuse_remote_code(source, backbone)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise TiffinError(f"--backbone {backbone}: cannot read its config ({str(exc).splitlines()[0][:160]})") from None
    check_family(config, backbone)
    language = _language(source, config, backbone, target_lang, pretrained)
    if pretrained:
        refuse_pickled_weights(source, backbone)
        if not any(source.glob("*.safetensors")):  # a Hub model that publishes only pickles: none were fetched
            raise TiffinError(f"--backbone {backbone}: {source} has no safetensors weights, the only ones tiffin "
                              "loads; give a model that publishes them (or a save_pretrained folder), or pass "
                              "--no-pretrained")
    try:
        if pretrained:  # use_safetensors: never fall back to unpickling a .bin beside them
            model = AutoModelForCTC.from_pretrained(source, config=config, local_files_only=True, use_safetensors=True,
                                                    dtype=torch.float32)
        else:
            model = build_ctc_model(config)
        adapter = source / ADAPTER_FILE.format(language) if language else None
        if pretrained and adapter is not None and adapter.is_file() and getattr(config, "adapter_attn_dim", None):
            if not hasattr(model, "load_adapter"):
                raise TiffinError(f"--backbone {backbone}: transformers loads language adapters into wav2vec2 models "
                                  f"only, not {type(model).__name__}")
            model.config.name_or_path = str(source)  # where load_adapter looks: this folder, no network
            model.load_adapter(language, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise TiffinError(f"--backbone {backbone}: cannot load it ({str(exc).splitlines()[0][:160]})") from None
    if language and getattr(config, "adapter_attn_dim", None):
        model.config.target_lang = language  # a checkpoint rebuilds with the adapter in its weights
    return model.train(), read_vocab(source, model.config, language), str(source)


def _vocab_languages(source: Path) -> list[str]:
    """The languages of a model folder's multilingual vocab.json ({lang: {token: id}}, as MMS's), or []."""
    try:
        table = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
        return list(table)
    return []


def _language(source: Path, config, backbone: str, target_lang: str | None, pretrained: bool) -> str | None:
    """The language a model loads with: `target_lang`, else the one its config records (a model
    tiffin fine-tuned from an adapter model: its weights hold the adapter); None for a model with
    neither adapters nor target_lang.

    Raises:
        TiffinError (one line): an adapter model with no language, a language its multilingual
            vocab.json has no table for, one with no adapter file (pretrained, unless the config
            records it), or a target_lang for a model with neither adapters nor a multilingual vocab.json.
    """
    from tiffin.train.weights import ADAPTER_FILE, LANGUAGE

    adapters = getattr(config, "adapter_attn_dim", None)
    language = target_lang or (getattr(config, "target_lang", None) if adapters else None)
    in_vocab = _vocab_languages(source)
    offered = in_vocab or sorted(p.name[len("adapter."):-len(".safetensors")]
                                 for p in source.glob(ADAPTER_FILE.format("*")))
    few = ", ".join(offered[:8]) + (f"... ({len(offered)} in all)" if len(offered) > 8 else "")
    if adapters and not language:
        raise TiffinError(f"--backbone {backbone}: it has per-language adapters (MMS, adapter_attn_dim); choose a "
                          f"language with --target-lang (target_lang=){f', one of {few}' if offered else ''}")
    if not language:
        return None
    if not LANGUAGE.match(language):
        raise TiffinError(f"--target-lang {language!r}: not a language code (MMS's are like eng, fra, deu)")
    if in_vocab and language not in in_vocab:
        raise TiffinError(f"--target-lang {language}: --backbone {backbone} has no vocabulary for it; its vocab.json "
                          f"offers {few}")
    if not adapters and not in_vocab:
        raise TiffinError(f"--target-lang {language}: --backbone {backbone} has no language adapters "
                          "(adapter_attn_dim) nor a multilingual vocab.json; leave --target-lang out")
    if adapters and pretrained and not (source / ADAPTER_FILE.format(language)).is_file() \
            and getattr(config, "target_lang", None) != language:
        raise TiffinError(f"--target-lang {language}: --backbone {backbone} has no {ADAPTER_FILE.format(language)} "
                          f"in {source}{f' (its languages: {few})' if offered else ''}")
    return language


def fit_head(model: nn.Module, vocab: Vocabulary, backbone_vocab: Vocabulary | None) -> bool:
    """Give the model a CTC head for `vocab`; a fresh one unless the backbone's matches it.

    The head is the family's (`CTCFamily.head`): a Linear, or Parakeet's 1x1 Conv1d, of the
    same input width as the one it replaces.

    Returns:
        True when the head was replaced.
    """
    config = model.config
    config.pad_token_id = vocab.blank_id
    if hasattr(config, "blank_token_id"):  # OmniASR: its CTC loss and decoding take the blank from here
        config.blank_token_id = vocab.blank_id
    config.ctc_zero_infinity = True
    family = CTC_FAMILIES.get(getattr(config, "model_type", "wav2vec2")) or CTC_FAMILIES["wav2vec2"]
    head = getattr(model, family.head)
    outputs = head.out_channels if isinstance(head, nn.Conv1d) else head.out_features
    if backbone_vocab is not None and backbone_vocab == vocab and outputs == len(vocab):
        return False
    if isinstance(head, nn.Conv1d):
        new = type(head)(head.in_channels, len(vocab), kernel_size=1)
    else:
        new = nn.Linear(head.in_features, len(vocab))
    setattr(model, family.head, new)
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


def speech_spec(source: str | Path, model: nn.Module, vocab: Vocabulary, sample_rate: int | None = None
                ) -> SpeechSpec:
    """The spec of a model load_backbone read from `source` ("config" for a built-in config) with
    the vocabulary `vocab` (its blank and kind included): raw-waveform families take the rate and
    waveform normalisation of the feature extractor saved beside the model; log-mel families its
    front-end settings (tiffin.train.speech_features), their rate, and no waveform normalisation.
    `sample_rate` (the data's) overrides the rate."""
    family = CTC_FAMILIES.get(getattr(model.config, "model_type", "wav2vec2"))
    folder = None if str(source) == "config" else Path(source)
    front_end = None
    if family is not None and family.features:
        from tiffin.train.speech_features import front_end_settings

        front_end = front_end_settings(folder, family.features)
        rate, normalize = int(front_end["sampling_rate"]), False
    else:
        rate, normalize = feature_settings(folder) if folder is not None else (16000, True)
    return SpeechSpec(sample_rate=int(sample_rate or rate), normalize=normalize, vocab=vocab.tokens,
                      blank_id=vocab.blank, word_start=vocab.word_start, front_end=front_end)


def build_speech_net(model_config: dict, spec: SpeechSpec) -> SpeechNet:
    """Rebuild a network from a saved config (no download): weights come from a checkpoint.
    `model_config` names its family (`model_type`); wav2vec2 when it does not."""
    return SpeechNet(build_ctc_model(ctc_config(model_config)), spec)
