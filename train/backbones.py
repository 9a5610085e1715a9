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
