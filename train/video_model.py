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
from tiffin.train.backbones import VideoBackbone, embedded_dir
from tiffin.train.video_lookup import get_video_backbone


class Preprocess(nn.Module):
    """uint8 [B, T, H, W, 3] -> normalised float [B, 3, T, H, W], or [slow, fast] for SlowFast."""

    def __init__(self, spec: VideoSpec):
        super().__init__()
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(spec.std).view(1, 3, 1, 1, 1) * 255.0), persistent=False)
        self.alpha = spec.slowfast_alpha
        self.time_first = spec.layout == "BTCHW"  # transformers' video models take [B, T, C, H, W]
        if self.alpha:
            # Same frames as pytorchvideo's PackPathway: linspace over the clip, T // alpha of them.
            slow = torch.linspace(0, spec.num_frames - 1, spec.num_frames // self.alpha).long()
            self.register_buffer("slow_index", slow, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = frames.permute(0, 4, 1, 2, 3).to(self.mean.dtype)  # float32, or bf16 in a bf16 export
        x = (x - self.mean) * self.inv_std
        if self.time_first:
            return x.transpose(1, 2)
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

    def head(self) -> nn.Module:
        """The classification layer that fine-tuning replaces."""
        return classifier_layer(self.backbone)


def classifier_layer(model: nn.Module) -> nn.Module:
    """The classification layer fine-tuning replaces: at the dotted path the family builder set."""
    return model.get_submodule(model.head_path)


def build_backbone(info: VideoBackbone, num_frames: int, crop_size: int) -> nn.Module:
    """A randomly initialised zoo architecture (400-class head) that runs at any clip size its
    family allows, with `head_path` naming its classification layer.

    The zoo heads average-pool with kernels fixed for the zoo's input size; they are swapped
    for global average pooling, which equals the zoo pooling at the zoo size and adapts to others.
    """
    return ZOO_BUILDERS[info.family](info, num_frames, crop_size)


def _global_pooling(head: nn.Module) -> None:
    for name, module in list(head.named_modules()):
        if isinstance(module, nn.AvgPool3d):
            _set_submodule(head, name, nn.AdaptiveAvgPool3d(1))


def _pytorchvideo(info: VideoBackbone, num_frames: int, crop_size: int) -> nn.Module:
    """PyTorchVideo's hub builders. X3D's custom Swish (not TorchScript-savable) becomes nn.SiLU,
    the same function; the head's softmax (X3D, R(2+1)D) is dropped: the network outputs logits."""
    from pytorchvideo.layers.swish import Swish
    from pytorchvideo.models import hub

    kwargs = {"spatial_size": crop_size, "temporal_size": num_frames} if info.sized_by_config else {}
    model = getattr(hub, info.hub_fn)(pretrained=False, **kwargs)
    model.head_path = "head.proj" if hasattr(model, "head") else f"blocks.{len(model.blocks) - 1}.proj"
    heads = [model.head] if hasattr(model, "head") else list(model.blocks[-2:])
    for head in heads:
        _global_pooling(head)
        if getattr(head, "activation", None) is not None:
            head.activation = None
    for name, module in list(model.named_modules()):
        if isinstance(module, Swish):
            _set_submodule(model, name, nn.SiLU())
    return model


def _torchvision(info: VideoBackbone, num_frames: int, crop_size: int) -> nn.Module:
    """torchvision.models.video's builders, without weights (tiffin loads them from its cache)."""
    from torchvision.models import video

    model = getattr(video, info.hub_fn)(weights=None)
    model.head_path = info.head
    if isinstance(getattr(model, "avgpool", None), nn.AvgPool3d):  # S3D's
        model.avgpool = nn.AdaptiveAvgPool3d(1)
    return model


# A backbone family is one builder here (and its rows in the table, or, for transformers, its module).
ZOO_BUILDERS = {"pytorchvideo": _pytorchvideo, "torchvision": _torchvision}


def _set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, (nn.ModuleList, nn.Sequential)):
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Swap the 400-class Kinetics layer for a fresh one sized to the dataset (a Linear, or the
    1x1x1 convolution S3D classifies with)."""
    old = classifier_layer(model)
    if isinstance(old, nn.Conv3d):
        new: nn.Module = nn.Conv3d(old.in_channels, num_classes, old.kernel_size, old.stride, bias=old.bias is not None)
    else:
        new = nn.Linear(old.in_features, num_classes)
    _set_submodule(model, model.head_path, new)


def find_pretrained_weights(info: VideoBackbone, weights: str | Path | None = None) -> Path:
    """Locate pretrained weights: `weights` if given, the package's for an embedded model, the
    model folder of a transformers one, else the zoo file in torch hub's cache, downloaded from
    the zoo (or $TIFFIN_WEIGHTS_MIRROR) when it is not there yet (train/weights.py).

    Raises:
        TiffinError: a missing --weights file, or weights that cannot be had (offline, with what to do).
    """
    if weights is not None:
        if info.family == "transformers":
            raise TiffinError(f"--weights: {info.name} is a Hugging Face model; its weights come with it "
                              "(give another model as --backbone ID-or-FOLDER)")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TiffinError(f"--weights {path}: no such file; give the path of a {info.weights_file} checkpoint")
        return path
    if info.embedded:
        embedded_spec(info)  # raises, naming the recipe, when this checkout lacks the files
        return embedded_dir(info.name) / info.weights_file
    if info.family == "transformers":
        return Path(info.weights_file)
    from tiffin.train.weights import zoo_file

    return zoo_file(info.weights_url, info.name, otherwise=", or start from the embedded pretrained --backbone "
                    "tiffin/tiny-motion (offline), or train from scratch with --no-pretrained")


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
    model_config: dict | None = None,
) -> VideoNet:
    """Build the network for `spec`: the family's architecture, optional pretrained weights, a
    head for the spec's labels.

    Args:
        backbone: a name from `VIDEO_BACKBONES`, or a Hugging Face video classifier (id or folder).
        spec: clip size and labels (the head gets `len(spec.labels)` outputs).
        pretrained: load the zoo's Kinetics weights before replacing the head.
        weights: explicit weights file (implies pretrained).
        model_config: a transformers model's config as a checkpoint saved it: rebuilds it with no
            download (the checkpoint's weights follow).

    Raises:
        TiffinError: unknown backbone, unsupported clip size, missing weights.
    """
    if model_config is not None:
        from tiffin.train.video_hf import from_config

        return VideoNet(from_config(model_config), spec)
    info = get_video_backbone(backbone)
    check_clip_size(info, spec.num_frames, spec.crop_size)
    if info.family == "transformers":
        from tiffin.train.video_hf import build

        return VideoNet(build(info, list(spec.labels), pretrained or weights is not None), spec)
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
    if info.fixed_size and (num_frames, crop_size) != (info.frames, info.crop):
        raise TiffinError(f"--num-frames {num_frames} --crop-size {crop_size}: {info.name} runs at its own "
                          f"{info.frames} frames and {info.crop} pixels only; leave both unset")
    if num_frames < info.frame_multiple or num_frames % info.frame_multiple:
        raise TiffinError(f"--num-frames {num_frames}: {info.name} needs a multiple of {info.frame_multiple}")
    multiple = 16 if info.family == "torchvision" else 32  # the networks' total spatial downsampling
    if not info.fixed_size and (crop_size < multiple or crop_size % multiple):
        raise TiffinError(f"--crop-size {crop_size}: use a multiple of {multiple} ({info.name} downsamples "
                          f"{multiple}x)")


def make_spec(backbone: str, labels: list[str], num_frames: int | None = None, crop_size: int | None = None,
              clip_duration: float | None = None, info=None) -> VideoSpec:
    """The clip spec of a new model: the backbone's zoo settings (`info`, when the caller has looked
    it up already), overridden where given."""
    info = info or get_video_backbone(backbone)
    crop = crop_size or info.crop
    return VideoSpec(
        num_frames=num_frames or info.frames,
        clip_duration=clip_duration or info.clip_duration,
        side_size=round(crop * info.side / info.crop),
        crop_size=crop,
        mean=info.mean,
        std=info.std,
        slowfast_alpha=info.slowfast_alpha,
        labels=tuple(labels),
        layout="BTCHW" if info.family == "transformers" else "BCTHW",
    )
