"""The video backbones tiffin fine-tunes: one explicit table, read by training and the CLI.

Figures are the PyTorchVideo model zoo's (Kinetics-400, top-1 with 3x10 views, 1x5 for MViT);
`params` is the zoo model's parameter count with its 400-class head (a test rebuilds each model
and checks it). Run: `tiffin backbones video`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ZOO_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


@dataclass(frozen=True)
class VideoBackbone:
    """One row of the table.

    `hub_fn` names the builder in `pytorchvideo.models.hub`; `frames` x `sampling_rate` is the
    zoo's input (frames taken every `sampling_rate` frames of a 30 fps video), `side`/`crop` its
    short-side resize and crop. `slowfast_alpha` is set for two-pathway models (the slow pathway
    sees every alpha-th frame). `sized_by_config` marks models whose layers depend on the input
    size (MViT's positional embeddings), built for the requested size.
    """

    name: str
    hub_fn: str
    params: int
    frames: int
    sampling_rate: int
    side: int
    crop: int
    gflops: float
    top1: float
    weights_file: str
    slowfast_alpha: int | None = None
    sized_by_config: bool = False
    frame_multiple: int = 1
    embedded: bool = False  # weights shipped in the package (train/embedded/), not the zoo's

    @property
    def clip_duration(self) -> float:
        """Seconds a zoo clip spans at 30 fps."""
        return round(self.frames * self.sampling_rate / 30.0, 3)

    @property
    def weights_url(self) -> str:
        return f"{ZOO_URL}/{self.weights_file}"


VIDEO_BACKBONES: dict[str, VideoBackbone] = {
    b.name: b
    for b in [
        # tiffin's own: x3d_xs pretrained on generated motion (tiffin pretrain video); top1 is not Kinetics'
        VideoBackbone("tiffin/tiny-motion", "x3d_xs", 3_794_274, 8, 6, 64, 64, 0.29, 0.0, "model.safetensors",
                      embedded=True),
        VideoBackbone("slowfast_r50", "slowfast_r50", 34_566_488, 32, 2, 256, 224, 65.71, 76.94,
                      "SLOWFAST_8x8_R50.pyth", slowfast_alpha=4, frame_multiple=4),
        VideoBackbone("slowfast_r101", "slowfast_r101", 62_826_968, 32, 2, 256, 224, 127.20, 77.90,
                      "SLOWFAST_8x8_R101.pyth", slowfast_alpha=4, frame_multiple=4),
        VideoBackbone("slow_r50", "slow_r50", 32_454_096, 8, 8, 256, 224, 54.52, 74.58, "SLOW_8x8_R50.pyth"),
        VideoBackbone("c2d_r50", "c2d_r50", 24_327_632, 8, 8, 256, 224, 25.89, 71.46, "C2D_8x8_R50.pyth",
                      frame_multiple=2),
        VideoBackbone("i3d_r50", "i3d_r50", 28_043_472, 8, 8, 256, 224, 37.53, 73.27, "I3D_8x8_R50.pyth",
                      frame_multiple=2),
        VideoBackbone("r2plus1d_r50", "r2plus1d_r50", 28_107_600, 16, 4, 256, 224, 76.45, 76.01,
                      "R2PLUS1D_16x4_R50.pyth", frame_multiple=4),
        VideoBackbone("csn_r101", "csn_r101", 22_213_776, 32, 2, 256, 224, 75.62, 77.00, "CSN_32x2_R101.pyth",
                      frame_multiple=8),
        VideoBackbone("x3d_xs", "x3d_xs", 3_794_274, 4, 12, 182, 160, 0.91, 69.12, "X3D_XS.pyth"),
        VideoBackbone("x3d_s", "x3d_s", 3_794_274, 13, 6, 182, 160, 2.96, 73.33, "X3D_S.pyth"),
        VideoBackbone("x3d_m", "x3d_m", 3_794_274, 16, 5, 256, 224, 6.72, 75.94, "X3D_M.pyth"),
        VideoBackbone("x3d_l", "x3d_l", 6_153_384, 16, 5, 356, 312, 26.64, 77.44, "X3D_L.pyth"),
        VideoBackbone("mvit_base_16x4", "mvit_base_16x4", 36_610_672, 16, 4, 256, 224, 70.80, 78.90,
                      "MVIT_B_16x4.pyth", sized_by_config=True, frame_multiple=2),
    ]
}


# The pretrained models shipped inside the package, by name: their task. Files in EMBEDDED_DIR/<short name>/.
EMBEDDED_MODELS = {"tiffin/tiny-motion": "video-classification", "tiffin/tiny-en": "speech-recognition"}
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


def embedded_dir(name: str) -> Path | None:
    """The folder of an embedded model (None for any other name)."""
    return EMBEDDED_DIR / name.split("/")[1] if name in EMBEDDED_MODELS else None


def hub_checkpoint_dir() -> Path:
    """Where `torch.hub` (and so PyTorchVideo's hub) keeps downloaded weights.

    Same rule as `torch.hub.get_dir()`: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub,
    else ~/.cache/torch/hub; computed here so listing backbones does not import torch.
    """
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        torch_home = os.path.join(cache, "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def get_video_backbone(name: str) -> VideoBackbone:
    """Look a backbone up by name.

    Raises:
        TiffinError: unknown name, with the list of known ones.
    """
    from tiffin.errors import TiffinError

    try:
        return VIDEO_BACKBONES[name]
    except KeyError:
        raise TiffinError(
            f"--backbone {name!r} is not a video backbone; choose one of: {', '.join(VIDEO_BACKBONES)}"
        ) from None


def video_backbone_details(name: str) -> dict:
    """Everything about one video backbone, as `tiffin backbones video --json` lists it and
    `VideoClassifier.get_backbone_details(name)` returns it: size, zoo input, cost, Kinetics-400
    top-1, where its weights come from and whether they are here, and its preprocessing.

    Raises:
        TiffinError: unknown name, with the list of known ones.
    """
    from tiffin.spec import KINETICS_MEAN, KINETICS_STD

    b = get_video_backbone(name)
    weights = embedded_dir(b.name) / b.weights_file if b.embedded else hub_checkpoint_dir() / b.weights_file
    return {
        "name": b.name, "family": b.hub_fn.split("_")[0], "embedded": b.embedded, "params": b.params,
        "frames": b.frames, "sampling_rate": b.sampling_rate, "clip_duration": b.clip_duration, "side": b.side,
        "crop": b.crop, "gflops_per_view": b.gflops, "kinetics400_top1": None if b.embedded else b.top1,
        "weights_path": str(weights), "weights_present": weights.is_file(),
        "weights_url": None if b.embedded else b.weights_url,
        "preprocessing": {"num_frames": b.frames, "clip_duration": b.clip_duration, "side_size": b.side,
                          "crop_size": b.crop, "mean": list(KINETICS_MEAN), "std": list(KINETICS_STD),
                          "slowfast_alpha": b.slowfast_alpha},
    }


@dataclass(frozen=True)
class SpeechBackbone:
    """A wav2vec2 CTC backbone: a Hugging Face model id, or a config tiffin builds itself.

    `config` holds the `Wav2Vec2Config` arguments that rebuild the architecture without any
    download (`--no-pretrained`, tests); `ctc_head` says whether the published weights include a
    CTC head with a character vocabulary (wav2vec2-base-960h's layout).
    """

    name: str
    params: int
    ctc_head: bool
    config: dict
    sample_rate: int = 16000
    # "hf": Hugging Face cache; "none": a config only, trained from scratch; "embedded": shipped in
    # the package (train/embedded/), built by `tiffin pretrain`
    weights: str = "hf"

    @property
    def cache_dir(self) -> Path | None:
        if self.weights != "hf":
            return None
        return hf_hub_cache() / ("models--" + self.name.replace("/", "--"))


# No dropout, masking or layer drop: a small model trained from scratch on CPU otherwise stays stuck
# on blank-only output for many epochs.
_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             conv_dim=(64,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
             hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
             final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, ctc_loss_reduction="mean")
# tiffin/tiny-en: a little wider and deeper than the from-scratch config, to hold a broad vocabulary.
_TINY_EN = {**_TINY, "hidden_size": 96, "num_hidden_layers": 3, "intermediate_size": 192,
            "num_conv_pos_embedding_groups": 8}
_LARGE_LV60 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                   feat_extract_norm="layer", feat_extract_activation="gelu", conv_bias=True,
                   do_stable_layer_norm=True)

SPEECH_BACKBONES: dict[str, SpeechBackbone] = {
    b.name: b
    for b in [
        SpeechBackbone("facebook/wav2vec2-base-960h", 94_396_320, True, {}),
        SpeechBackbone("facebook/wav2vec2-base", 94_396_320, False, {}),
        SpeechBackbone("facebook/wav2vec2-large-960h-lv60-self", 315_471_520, True, _LARGE_LV60),
        SpeechBackbone("tiffin/tiny-en", 337_312, True, _TINY_EN, weights="embedded"),
        SpeechBackbone("tiffin/wav2vec2-tiny", 172_608, True, _TINY, weights="none"),
    ]
}


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rule: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"
