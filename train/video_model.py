"""Video classifier networks: a PyTorchVideo backbone behind in-graph preprocessing.

`VideoNet` takes what the host decodes, uint8 frames [B, T, H, W, 3], and does every tensor
step after decoding itself (float, /255, mean/std, layout, SlowFast pathway packing), so the
same module is trained, exported and served: train/serve skew has nowhere to live.
Exercised by `tiffin train video` and `tiffin predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.backbones import VideoBackbone, embedded_dir, get_video_backbone, hub_checkpoint_dir


class Preprocess(nn.Module):
    """uint8 [B, T, H, W, 3] -> normalised float [B, 3, T, H, W], or [slow, fast] for SlowFast."""

    def __init__(self, spec: VideoSpec):
        super().__init__()
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(spec.std).view(1, 3, 1, 1, 1) * 255.0), persistent=False)
        self.alpha = spec.slowfast_alpha
        if self.alpha:
            # Same frames as pytorchvideo's PackPathway: linspace over the clip, T // alpha of them.
            slow = torch.linspace(0, spec.num_frames - 1, spec.num_frames // self.alpha).long()
            self.register_buffer("slow_index", slow, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = frames.permute(0, 4, 1, 2, 3).to(self.mean.dtype)  # float32, or bf16 in a bf16 export
        x = (x - self.mean) * self.inv_std
        if self.alpha:
            return [x.index_select(2, self.slow_index), x]
        return x


class VideoNet(nn.Module):
    """Preprocessing + backbone; outputs class logits [B, num_classes]."""

    def __init__(self, backbone: nn.Module, spec: VideoSpec):
        super().__init__()
        self.preprocess = Preprocess(spec)
        self.backbone = backbone

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(frames)
        # pytorchvideo's multipathway forward rewrites the list it is given; hand it a fresh one.
        return self.backbone(list(x) if isinstance(x, list) else x)

    def head(self) -> nn.Linear:
        """The classification layer that fine-tuning replaces."""
        return classifier_layer(self.backbone)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final Linear of a PyTorchVideo classifier (ResNet-style or MViT head)."""
    head = model.head if hasattr(model, "head") else model.blocks[-1]
    return head.proj


def build_backbone(info: VideoBackbone, num_frames: int, crop_size: int) -> nn.Module:
    """A randomly initialised zoo architecture (400-class head) that runs at any clip size.

    The zoo heads average-pool with kernels fixed for the zoo's input size; they are swapped
    for global average pooling, which equals the zoo pooling at the zoo size and adapts to
    others. X3D's custom Swish (not TorchScript-savable) becomes nn.SiLU, the same function.
    The head's softmax (X3D, R(2+1)D) is dropped: the network outputs logits.
    """
    from pytorchvideo.layers.swish import Swish
    from pytorchvideo.models import hub

    kwargs = {"spatial_size": crop_size, "temporal_size": num_frames} if info.sized_by_config else {}
    model = getattr(hub, info.hub_fn)(pretrained=False, **kwargs)
    heads = [model.head] if hasattr(model, "head") else list(model.blocks[-2:])
    for head in heads:
        for name, module in list(head.named_modules()):
            if isinstance(module, nn.AvgPool3d):
                _set_submodule(head, name, nn.AdaptiveAvgPool3d(1))
        if getattr(head, "activation", None) is not None:
            head.activation = None
    for name, module in list(model.named_modules()):
        if isinstance(module, Swish):
            _set_submodule(model, name, nn.SiLU())
    return model


def _set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, (nn.ModuleList, nn.Sequential)):
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Swap the 400-class Kinetics layer for a fresh one sized to the dataset."""
    old = classifier_layer(model)
    head = model.head if hasattr(model, "head") else model.blocks[-1]
    head.proj = nn.Linear(old.in_features, num_classes)


def find_pretrained_weights(info: VideoBackbone, weights: str | Path | None = None) -> Path:
    """Locate pretrained weights: `weights` if given, the package's for an embedded model, else the
    torch hub cache by file name.

    Raises:
        TiffinError: the file is not there, with the place to put it.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TiffinError(f"--weights {path}: no such file; give the path of a {info.weights_file} checkpoint")
        return path
    if info.embedded:
        embedded_spec(info)  # raises, naming the recipe, when this checkout lacks the files
        return embedded_dir(info.name) / info.weights_file
    path = hub_checkpoint_dir() / info.weights_file
    if not path.is_file():
        raise TiffinError(
            f"pretrained weights for {info.name} not found at {path}; download {info.weights_url} there "
            "(or pass --weights FILE), or start from the embedded pretrained --backbone tiffin/tiny-motion (offline), "
            "or train from scratch with --no-pretrained"
        )
    return path


def load_pretrained(model: nn.Module, info: VideoBackbone, weights: str | Path | None = None) -> Path:
    """Load zoo weights (a `.pyth` dict with `model_state`, or a bare state dict) into `model`.

    Positional embeddings of models sized by config (MViT) are interpolated when the clip size
    differs from the zoo's. Loading uses `weights_only=True`: no code in the file runs.

    Returns:
        The file loaded.

    Raises:
        TiffinError: missing, unreadable or mismatched weights.
    """
    path = find_pretrained_weights(info, weights)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or pickled files
        raise TiffinError(f"{path}: not a loadable weights file ({str(exc).splitlines()[0][:120]})") from None
    state = checkpoint.get("model_state", checkpoint.get("state_dict", checkpoint)) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise TiffinError(f"{path}: holds no state dict ('model_state' or 'state_dict'); give a {info.weights_file}")
    own = model.state_dict()
    for key, value in list(state.items()):
        if key in own and "pos_embed" in key and value.shape != own[key].shape:
            state[key] = _resize_pos_embed(value, own[key].shape)
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise TiffinError(
            f"{path}: does not fit {info.name} ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {example!r}); give weights of {info.weights_file}"
        )
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise TiffinError(f"{path}: shape of {bad[0]!r} is {tuple(state[bad[0]].shape)}, {info.name} needs "
                          f"{tuple(own[bad[0]].shape)}; give weights of {info.weights_file}")
    model.load_state_dict(state)
    return path


def _resize_pos_embed(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Interpolate MViT's separable positional embeddings [1, N, C] to another token count."""
    import torch.nn.functional as F

    n_old, n_new = value.shape[1], shape[1]
    side_old, side_new = round(n_old**0.5), round(n_new**0.5)
    if side_old**2 == n_old and side_new**2 == n_new and n_old > 8:  # spatial grid
        grid = value.reshape(1, side_old, side_old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(side_new, side_new), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(shape)
    line = F.interpolate(value.permute(0, 2, 1), size=n_new, mode="linear", align_corners=False)
    return line.permute(0, 2, 1).reshape(shape)


def build_video_net(
    backbone: str,
    spec: VideoSpec,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> VideoNet:
    """Build the network for `spec`: zoo architecture, optional zoo weights, fresh head.

    Args:
        backbone: a name from `VIDEO_BACKBONES`.
        spec: clip size and labels (the head gets `len(spec.labels)` outputs).
        pretrained: load the zoo's Kinetics weights before replacing the head.
        weights: explicit weights file (implies pretrained).

    Raises:
        TiffinError: unknown backbone, unsupported clip size, missing weights.
    """
    info = get_video_backbone(backbone)
    check_clip_size(info, spec.num_frames, spec.crop_size)
    model = build_backbone(info, spec.num_frames, spec.crop_size)
    if info.embedded and (pretrained or weights is not None):
        load_embedded(model, info, weights)
    elif pretrained or weights is not None:
        load_pretrained(model, info, weights)
    replace_classifier(model, len(spec.labels))
    return VideoNet(model, spec)


def embedded_spec(info: VideoBackbone) -> VideoSpec:
    """The clip spec and pretraining labels of an embedded video model (its spec.json).

    Raises:
        TiffinError: the model's files are not in this checkout.
    """
    folder = embedded_dir(info.name)
    if folder is None or not (folder / "spec.json").is_file():
        raise TiffinError(f"--backbone {info.name}: its weights are not in this checkout ({folder}); build them with "
                          "`tiffin pretrain video --out runs/pretrain-video --install`, or pass --no-pretrained")
    return VideoSpec.from_dict(json.loads((folder / "spec.json").read_text())["spec"])


def load_embedded(model: nn.Module, info: VideoBackbone, weights: str | Path | None = None) -> Path:
    """Load an embedded model's weights (safetensors, stored fp16) with its pretraining head.

    Returns:
        The file loaded.
    """
    from safetensors.torch import load_file

    spec = embedded_spec(info)
    path = Path(weights) if weights is not None else embedded_dir(info.name) / info.weights_file
    replace_classifier(model, len(spec.labels))
    try:
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        model.load_state_dict(state)
    except (OSError, RuntimeError) as exc:  # missing or mismatched file
        raise TiffinError(f"{path}: not the weights of {info.name} ({str(exc).splitlines()[0][:160]})") from None
    return path


def load_embedded_net(name: str) -> VideoNet:
    """An embedded video model as it was pretrained: its own spec, labels and head (zero-shot use)."""
    info = get_video_backbone(name)
    spec = embedded_spec(info)
    model = build_backbone(info, spec.num_frames, spec.crop_size)
    load_embedded(model, info)
    return VideoNet(model, spec)


def check_clip_size(info: VideoBackbone, num_frames: int, crop_size: int) -> None:
    """Refuse clip sizes a backbone cannot run, naming the option to change."""
    if num_frames < info.frame_multiple or num_frames % info.frame_multiple:
        raise TiffinError(f"--num-frames {num_frames}: {info.name} needs a multiple of {info.frame_multiple}")
    if crop_size < 32 or crop_size % 32:
        raise TiffinError(f"--crop-size {crop_size}: use a multiple of 32 (the backbones downsample 32x)")


def make_spec(backbone: str, labels: list[str], num_frames: int | None = None, crop_size: int | None = None,
              clip_duration: float | None = None) -> VideoSpec:
    """The clip spec of a new model: the backbone's zoo settings, overridden where given."""
    info = get_video_backbone(backbone)
    crop = crop_size or info.crop
    return VideoSpec(
        num_frames=num_frames or info.frames,
        clip_duration=clip_duration or info.clip_duration,
        side_size=round(crop * info.side / info.crop),
        crop_size=crop,
        slowfast_alpha=info.slowfast_alpha,
        labels=tuple(labels),
    )
