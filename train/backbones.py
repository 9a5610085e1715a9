"""The video backbones tiffin fine-tunes: one explicit table, read by training and the CLI.

Rows come from two zoos, each a `family` (train/video_model.py builds them): PyTorchVideo's
(Kinetics-400 top-1 with 3x10 views, 1x5 for MViT) and torchvision's (its weights' published
metadata: video-level top-1, preprocessing, file hash). `params` is the zoo model's parameter
count with its 400-class head (a test rebuilds each model and checks it). Any Hugging Face
video classifier (an id or a save_pretrained folder) is a third family, described by its own
config instead of a row. Run: `tiffin backbones video`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ZOO_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
TORCHVISION_URL = "https://download.pytorch.org/models"
# torchvision's video weights normalise with these (its VideoClassification transform); Swin3D with ImageNet's
TV_MEAN, TV_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoBackbone:
    """One row of the table.

    `hub_fn` names the builder in the family's zoo (`pytorchvideo.models.hub`,
    `torchvision.models.video`); `frames` x `sampling_rate` is the zoo's input (frames taken
    every `sampling_rate` frames of a 30 fps video), `side`/`crop` its short-side resize and
    crop, `mean`/`std` its normalisation. `slowfast_alpha` is set for two-pathway models (the
    slow pathway sees every alpha-th frame). `sized_by_config` marks models whose layers depend
    on the input size (MViT's positional embeddings), built for the requested size;
    `fixed_size` ones that run at their zoo size only. `head` is the dotted path of the
    classification layer fine-tuning replaces (empty: the family's rule).
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
    family: str = "pytorchvideo"
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    fixed_size: bool = False
    head: str = ""

    @property
    def clip_duration(self) -> float:
        """Seconds a zoo clip spans at 30 fps."""
        return round(self.frames * self.sampling_rate / 30.0, 3)

    @property
    def weights_url(self) -> str:
        return f"{TORCHVISION_URL if self.family == 'torchvision' else ZOO_URL}/{self.weights_file}"


def _tv(name: str, params: int, frames: int, rate: int, side: int, crop: int, gflops: float, top1: float,
        weights_file: str, head: str, mean=TV_MEAN, std=TV_STD, fixed_size: bool = False,
        frame_multiple: int = 1) -> VideoBackbone:
    """A torchvision row: `rate` is 30 fps over the published frame rate (15 fps: 2, 7.5 fps: 4)."""
    return VideoBackbone(name, name, params, frames, rate, side, crop, gflops, top1, weights_file, family="torchvision",
                         mean=mean, std=std, fixed_size=fixed_size, head=head, frame_multiple=frame_multiple)


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
        # torchvision.models.video, figures from its weights' metadata (KINETICS400_V1)
        _tv("r3d_18", 33_371_472, 16, 2, 128, 112, 40.70, 63.20, "r3d_18-b3b3357e.pth", "fc"),
        _tv("mc3_18", 11_695_440, 16, 2, 128, 112, 43.34, 63.96, "mc3_18-a90a0ba3.pth", "fc"),
        _tv("r2plus1d_18", 31_505_325, 16, 2, 128, 112, 40.52, 67.46, "r2plus1d_18-91a641e6.pth", "fc"),
        _tv("s3d", 8_320_048, 128, 2, 256, 224, 17.98, 68.37, "s3d-d76dad2f.pth", "classifier.1",
            frame_multiple=16),  # its pooling needs 14 frames or more (min_temporal_size)
        _tv("mvit_v1_b", 36_610_672, 16, 4, 256, 224, 70.60, 78.48, "mvit_v1_b-dbeb1030.pth", "head.1",
            mean=(0.45,) * 3, std=(0.225,) * 3, fixed_size=True),
        _tv("mvit_v2_s", 34_537_744, 16, 4, 256, 224, 64.22, 80.76, "mvit_v2_s-ae3be167.pth", "head.1",
            mean=(0.45,) * 3, std=(0.225,) * 3, fixed_size=True),
        _tv("swin3d_t", 28_158_070, 32, 2, 256, 224, 43.88, 77.72, "swin3d_t-7615ae03.pth", "head",
            mean=IMAGENET_MEAN, std=IMAGENET_STD),
        _tv("swin3d_s", 49_816_678, 32, 2, 256, 224, 82.84, 79.52, "swin3d_s-da41c237.pth", "head",
            mean=IMAGENET_MEAN, std=IMAGENET_STD),
        _tv("swin3d_b", 88_048_984, 32, 2, 256, 224, 140.67, 79.43, "swin3d_b_1k-24f7c7c6.pth", "head",
            mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
}


@dataclass(frozen=True)
class HFVideoFamily:
    """One row per transformers video model type (train/video_hf.py runs them): how its forward
    names the clip, its published frame step at 30 fps (the papers' sampling; a processor config
    does not record it), its processor class, and the offset its processor subtracts after
    rescaling (ViViT maps 0..255 to -1..1)."""

    input_name: str
    sampling_rate: int
    processor: str
    rescale_offset: float = 0.0
    known: tuple[str, ...] = ()  # published ids `tiffin backbones video` lists (any other id works too)


HF_VIDEO_FAMILIES = {
    "videomae": HFVideoFamily("pixel_values", 4, "VideoMAEVideoProcessor", known=(
        "MCG-NJU/videomae-base", "MCG-NJU/videomae-base-finetuned-kinetics", "MCG-NJU/videomae-large-finetuned-kinetics",
        "MCG-NJU/videomae-base-finetuned-ssv2")),
    "timesformer": HFVideoFamily("pixel_values", 32, "TimesformerVideoProcessor", known=(
        "facebook/timesformer-base-finetuned-k400", "facebook/timesformer-base-finetuned-k600")),
    "vivit": HFVideoFamily("pixel_values", 2, "VivitVideoProcessor", rescale_offset=1.0, known=(
        "google/vivit-b-16x2-kinetics400",)),
    "vjepa2": HFVideoFamily("pixel_values_videos", 4, "VJEPA2VideoProcessor", known=(
        "facebook/vjepa2-vitl-fpc16-256-ssv2", "facebook/vjepa2-vitl-fpc32-256-diving48")),
    # VideoPrism's video encoder with a classification head (AutoModelForVideoClassification of its
    # vision config); the published encoders have no head: give labels. Its processor squashes frames
    # to the model's size where tiffin resizes the short side and crops (the same on square video).
    "videoprism_vision_model": HFVideoFamily("pixel_values_videos", 4, "LlavaOnevisionVideoProcessor"),
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


# Published CTC checkpoints by transformers model type, which `tiffin backbones speech` lists: any
# other AutoModelForCTC id or save_pretrained folder of a family train/speech_model.py runs works too.
CTC_KNOWN_IDS: dict[str, tuple[str, ...]] = {
    "wav2vec2": ("facebook/wav2vec2-base-960h", "facebook/wav2vec2-large-960h-lv60-self",
                 "jonatasgrosman/wav2vec2-large-xlsr-53-english", "facebook/mms-1b-all"),  # MMS: --target-lang
    "wav2vec2-conformer": ("facebook/wav2vec2-conformer-rope-large-960h-ft",),
    "hubert": ("facebook/hubert-large-ls960-ft", "facebook/hubert-xlarge-ls960-ft"),
    "wavlm": ("patrickvonplaten/wavlm-libri-clean-100h-base-plus",),
    "data2vec-audio": ("facebook/data2vec-audio-base-960h", "facebook/data2vec-audio-large-960h"),
    "sew": ("asapp/sew-tiny-100k-ft-ls100h",),
    "sew-d": ("asapp/sew-d-tiny-100k-ft-ls100h",),
    "unispeech-sat": ("microsoft/unispeech-sat-base-100h-libri-ft",),
    "wav2vec2-bert": ("hf-audio/wav2vec2-bert-CV16-en",),
    "parakeet_ctc": ("nvidia/parakeet-ctc-0.6b", "nvidia/parakeet-ctc-1.1b"),
    "omniasr_ctc": ("hf-audio/omniasr-ctc-300m-v2",),
}


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rule: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"
