"""Log-mel front-ends inside the graph: what a CTC family's transformers feature extractor computes
on the host, as a torch module over the waveforms tiffin's host decodes.

A front-end takes mono float32 waveforms [B, S] with their lengths [B] and returns the family's
input features [B, frames, dims] with each utterance's real frame count [B], exactly as the
family's extractor does on each utterance alone (per-utterance statistics over its real frames
only, so padding in a batch never changes an utterance). The features span what `kernels` /
`strides` count for the batch's width: the frame the extractors add past an utterance's real ones
(the centred STFT's last, the padding of an odd pair), which the model would mask, is left out, so
the logits span the frames of an utterance filling the batch exactly, as the raw families' do
(the same values either way); that width is reckoned from the batch's width, never from the
lengths (exports trace it; torch.export takes no width that depends on the data). Every step is
a convolution or an element-wise op, so it exports with torch.onnx's TorchScript exporter (and
torch.export) and runs on ONNX Runtime and OpenVINO: the STFT is a Conv1d whose fixed kernels
are the window times the DFT basis (for Kaldi's fbank also the per-frame DC removal and pre-emphasis, which are linear in the frame), the
mel filter bank a 1x1 Conv1d (a Conv, not a MatMul: int8 dynamic quantisation of the MatMuls leaves
it in float). The kernels are constants built from transformers' own filter banks and windows,
not parameters: they stay float32 whatever dtype the network is moved to, and are not in state dicts.

The frames each utterance owns are a chain of (kernel, stride) steps over its samples
(`kernels`/`strides`), the form tiffin.inference.output_frames and tiffin.json's conv_kernel /
conv_stride already take, so the torch-free host windows and cuts logits as for wav2vec2.

Settings come from the model's saved feature-extractor config (`front_end_settings`), recorded in
the checkpoint's spec (SpeechSpec.front_end). Dither is never applied (inference, and the
extractors tiffin mirrors have none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class KaldiFbank(nn.Module):
    """transformers' SeamlessM4TFeatureExtractor (wav2vec2-bert, SeamlessM4T): Kaldi-style fbank
    (25 ms frames every 10 ms, no centring, 16-bit scale, DC removal and 0.97 pre-emphasis per frame,
    povey window, 512-point power spectrum, Kaldi mel bins from 20 Hz, log with a floor), each
    mel bin normalised to zero mean and unit variance (ddof 1) over the utterance's frames, then
    pairs of consecutive frames stacked into one (80 bins -> 160 dims; `stride` 2, the only one
    tiffin takes). The even and odd frames of the pairs are two convolutions 20 ms apart rather than
    a reshape, so every width is one floor of the batch's width, which torch.export can reason about."""

    kind = "SeamlessM4TFeatureExtractor"
    FRAME, HOP, FFT, PREEMPHASIS, FLOOR = 400, 160, 512, 0.97, 1.192092955078125e-07

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        from transformers import SeamlessM4TFeatureExtractor

        extractor = SeamlessM4TFeatureExtractor(**_known(settings, SETTINGS[self.kind]))
        self.stride = int(extractor.stride)
        if self.stride != 2:
            raise ValueError(f"SeamlessM4TFeatureExtractor stride {self.stride}: tiffin's front-end stacks pairs (2)")
        n, bins = self.FRAME, self.FFT // 2 + 1
        # per frame: x -> window * preemphasis(x - mean(x)), then the DFT: one linear map, one kernel
        centre = np.eye(n) - np.full((n, n), 1.0 / n)
        preemphasis = np.eye(n) - self.PREEMPHASIS * np.eye(n, k=-1)
        preemphasis[0, 0] = 1.0 - self.PREEMPHASIS
        frame_map = np.asarray(extractor.window, dtype=np.float64)[:, None] * (preemphasis @ centre)
        self.dft = _dft_kernels(frame_map, self.FFT, bins) * 32768.0  # Kaldi works on 16-bit sample values
        self.mel = np.ascontiguousarray(np.asarray(extractor.mel_filters, dtype=np.float32).T)[:, :, None]
        self.kernels, self.strides = (self.FRAME, 2), (self.HOP, self.stride)

    def _logmel(self, x: torch.Tensor) -> torch.Tensor:
        """Log mel energies [B, mel, n] of frames every 20 ms from the start of `x` [B, 1, samples]."""
        spectrum = nn.functional.conv1d(x, _const(self.dft, x), stride=2 * self.HOP)  # [B, 2 * bins, n]
        bins = spectrum.shape[1] // 2
        power = spectrum[:, :bins] ** 2 + spectrum[:, bins:] ** 2
        return torch.log(torch.clamp(nn.functional.conv1d(power, _const(self.mel, x)), min=self.FLOOR))

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (waveform.float() * _mask(waveform.shape[1], lengths, waveform.device))[:, None]
        if x.shape[2] < self.FRAME + self.HOP:  # shorter than one pair (the host pads a blip to one)
            x = nn.functional.pad(x, (0, self.FRAME + self.HOP - x.shape[2]))
        frames = (torch.div(lengths - self.FRAME, self.HOP, rounding_mode="floor") + 1).clamp(min=0)
        n = frames.clamp(min=1).float()[:, None, None]
        # statistics over every frame: the even ones (frame 2j) and the odd ones (2j + 1)
        even, odd = self._logmel(x), self._logmel(x[:, :, self.HOP :])
        real_even = _mask(even.shape[2], torch.div(frames + 1, 2, rounding_mode="floor"), x.device)[:, None]
        real_odd = _mask(odd.shape[2], torch.div(frames, 2, rounding_mode="floor"), x.device)[:, None]
        mean = ((even * real_even).sum(2, keepdim=True) + (odd * real_odd).sum(2, keepdim=True)) / n
        var = (((even - mean) ** 2 * real_even).sum(2, keepdim=True)
               + ((odd - mean) ** 2 * real_odd).sum(2, keepdim=True)) / (n - 1).clamp(min=1)
        scale = torch.rsqrt(var + 1e-7)
        # the pairs, as many as the extractor's attention mask counts for the batch's width (its pair
        # past them, half padding, is masked anyway): the even frames of x less its last 10 ms, which
        # number as many as the odd ones
        even = self._logmel(x[:, :, : x.shape[2] - self.HOP])
        real_even = _mask(even.shape[2], torch.div(frames + 1, 2, rounding_mode="floor"), x.device)[:, None]
        features = torch.cat([(even - mean) * scale * real_even, (odd - mean) * scale * real_odd], 1)
        return features.transpose(1, 2).contiguous().to(waveform.dtype), self.output_lengths(lengths)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return _chain(lengths, self.kernels, self.strides)


class NemoMel(nn.Module):
    """transformers' ParakeetFeatureExtractor (Parakeet, NeMo's AudioToMelSpectrogramPreprocessor):
    pre-emphasis over the utterance, a centred zero-padded STFT (`n_fft`, `hop_length`, a
    symmetric Hann window of `win_length` in the middle), power, slaney mel bins, log(x + 2^-24),
    each bin normalised to zero mean and unit variance (ddof 1, epsilon added to the deviation)
    over the utterance's real frames (samples // hop), padding frames zero."""

    kind = "ParakeetFeatureExtractor"
    GUARD, EPSILON = 2.0 ** -24, 1e-5

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        from transformers import ParakeetFeatureExtractor

        extractor = ParakeetFeatureExtractor(**_known(settings, SETTINGS[self.kind]))
        self.n_fft, self.hop = int(extractor.n_fft), int(extractor.hop_length)
        self.preemphasis = float(extractor.preemphasis or 0.0)
        win = int(extractor.win_length)
        window = np.zeros(self.n_fft)
        left = (self.n_fft - win) // 2  # torch.stft centres a shorter window in the FFT frame
        window[left : left + win] = torch.hann_window(win, periodic=False, dtype=torch.float64).numpy()
        self.dft = _dft_kernels(np.diag(window), self.n_fft, self.n_fft // 2 + 1)
        self.mel = np.ascontiguousarray(extractor.mel_filters.numpy().astype(np.float32))[:, :, None]
        # real frames: (samples + 2 * (n_fft // 2) - n_fft) // hop, one (kernel, stride) step
        self.kernels, self.strides = (self.hop + self.n_fft - 2 * (self.n_fft // 2),), (self.hop,)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = _mask(waveform.shape[1], lengths, waveform.device)
        x = waveform.float() * inside
        if self.preemphasis:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemphasis * x[:, :-1]], dim=1) * inside
        half = self.n_fft // 2
        x = nn.functional.pad(x, (half, half))[:, None]
        spectrum = nn.functional.conv1d(x, _const(self.dft, x), stride=self.hop)  # [B, 2 * bins, frames]
        bins = spectrum.shape[1] // 2
        power = spectrum[:, :bins] ** 2 + spectrum[:, bins:] ** 2
        logmel = torch.log(nn.functional.conv1d(power, _const(self.mel, x)) + self.GUARD)  # [B, mel, frames]
        logmel = logmel[:, :, : (waveform.shape[1] - self.kernels[0]) // self.strides[0] + 1]  # not the last centred
        frames = self.output_lengths(lengths)
        real = _mask(logmel.shape[2], frames, x.device)[:, None]
        n = frames.clamp(min=1).to(logmel.dtype)[:, None, None]
        mean = (logmel * real).sum(2, keepdim=True) / n
        var = ((logmel * real - mean) ** 2 * real).sum(2, keepdim=True) / (n - 1).clamp(min=1)
        features = (logmel - mean) / (torch.sqrt(var) + self.EPSILON) * real
        return features.transpose(1, 2).to(waveform.dtype), frames

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return _chain(lengths, self.kernels, self.strides)


# transformers' feature extractor class (feature_extractor_type) -> the front-end computing it in the graph
FRONT_ENDS: dict[str, type[nn.Module]] = {KaldiFbank.kind: KaldiFbank, NemoMel.kind: NemoMel}
# the extractor settings each front-end reads (the rest of what it does is fixed in the extractor's code)
SETTINGS: dict[str, tuple[str, ...]] = {
    KaldiFbank.kind: ("feature_size", "sampling_rate", "num_mel_bins", "stride"),
    NemoMel.kind: ("feature_size", "sampling_rate", "hop_length", "n_fft", "win_length", "preemphasis"),
}


def saved_extractor_config(folder: str | Path) -> dict[str, Any]:
    """The feature extractor's saved settings beside a model: its own preprocessor_config.json
    (transformers 4), or nested in processor_config.json as transformers 5's save_pretrained writes it."""
    folder = Path(folder)
    try:
        if (folder / "preprocessor_config.json").is_file():
            saved = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        elif (folder / "processor_config.json").is_file():
            saved = json.loads((folder / "processor_config.json").read_text(encoding="utf-8")).get("feature_extractor")
        else:
            saved = {}
    except (OSError, ValueError):
        saved = {}
    return saved if isinstance(saved, dict) else {}


def front_end_settings(folder: str | Path | None, kind: str) -> dict[str, Any]:
    """The settings of a front-end of `kind` (a key of FRONT_ENDS, the family's extractor) from the
    feature-extractor config saved in `folder` (the extractor's defaults where it says nothing):
    `{"kind": ..., <the extractor's settings>}`, what SpeechSpec.front_end records."""
    from transformers import ParakeetFeatureExtractor, SeamlessM4TFeatureExtractor

    saved = saved_extractor_config(folder) if folder is not None else {}
    kind = saved.get("feature_extractor_type") if saved.get("feature_extractor_type") in FRONT_ENDS else kind
    keys = SETTINGS[kind]
    extractor = {KaldiFbank.kind: SeamlessM4TFeatureExtractor, NemoMel.kind: ParakeetFeatureExtractor}[kind](
        **{k: saved[k] for k in keys if k in saved})
    return {"kind": kind, **{k: getattr(extractor, k) for k in keys}}


def build_front_end(settings: dict[str, Any]) -> nn.Module:
    """The front-end module SpeechSpec.front_end describes."""
    return FRONT_ENDS[settings["kind"]]({k: v for k, v in settings.items() if k != "kind"})


def _known(settings: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: settings[k] for k in keys if k in settings}


def _dft_kernels(frame_map: np.ndarray, n_fft: int, bins: int) -> np.ndarray:
    """Conv1d kernels [2 * bins, 1, frame] of `frame_map` [frame, frame] (applied to each frame
    first) followed by the real and imaginary parts of an `n_fft`-point DFT (zero-padded frame)."""
    frame = frame_map.shape[0]
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(frame)) / n_fft
    basis = np.concatenate([np.cos(angle), -np.sin(angle)])  # [2 * bins, frame]
    return np.ascontiguousarray((basis @ frame_map).astype(np.float32))[:, None, :]


def _const(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(like.device)


def _mask(width: int, lengths: torch.Tensor, device) -> torch.Tensor:
    return (torch.arange(width, device=device)[None, :] < lengths[:, None]).float()


def _chain(lengths: torch.Tensor, kernels: tuple[int, ...], strides: tuple[int, ...]) -> torch.Tensor:
    for kernel, stride in zip(kernels, strides):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp(min=0)
