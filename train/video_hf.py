"""Hugging Face video classifiers (`AutoModelForVideoClassification`): VideoMAE, TimeSformer,
ViViT, V-JEPA 2, as a backbone family beside the zoos' tables.

A model is an id on the Hub (`MCG-NJU/videomae-base-finetuned-kinetics`, downloaded by
train/weights.py) or a `save_pretrained` folder. Its own files say everything tiffin's spec
needs: frames and size from config.json, resize, crop and mean/std from its processor config,
its labels from `id2label` (a Kinetics-finetuned model predicts them with no fine-tuning). The
network takes tiffin's uint8 frames like every backbone: VideoNet normalises in the graph and
hands [B, T, C, H, W] (`layout` "BTCHW") to the model, so export and serving do not change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from tiffin.errors import TiffinError
from tiffin.train.backbones import HF_VIDEO_FAMILIES, HFVideoFamily, VideoBackbone


# a processor config's file, newest layout first (transformers 5 writes the video processor's own)
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


class HFVideoBackbone(nn.Module):
    """A transformers video classifier taking normalised [B, T, C, H, W] and returning logits."""

    head_path = "model.classifier"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.input_name = family_of(model.config.to_dict(), str(model.config.model_type)).input_name

    def forward(self, clips):
        logits = self.model(**{self.input_name: clips}).logits
        return logits.flatten(1)  # VideoPrism's attention-pooled head gives [B, 1, classes]


def family_of(config: dict, where: str) -> HFVideoFamily:
    """The family row of a config, or a one-line error naming the supported model types."""
    kind = config.get("model_type")
    if kind not in HF_VIDEO_FAMILIES:
        raise TiffinError(f"--backbone {where}: model_type {kind!r} is not a video classifier tiffin runs; "
                          f"supported: {', '.join(HF_VIDEO_FAMILIES)}")
    return HF_VIDEO_FAMILIES[kind]


def model_folder(backbone: str) -> Path:
    """A local save_pretrained folder as given, or the Hub id's snapshot (downloaded if missing)."""
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise TiffinError(f"--backbone {folder}: no config.json; give a folder written by save_pretrained")
        return folder
    from tiffin.train.weights import hub_model

    return hub_model(backbone)


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def is_video_classifier(folder: Path) -> bool:
    """Whether a model folder holds a video classifier of a family tiffin runs."""
    try:
        return read_config(folder).get("model_type") in HF_VIDEO_FAMILIES
    except (OSError, ValueError):
        return False


def _processor(folder: Path) -> dict:
    for name in PROCESSOR_FILES:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text(encoding="utf-8"))
    if (folder / "processor_config.json").is_file():
        saved = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
        return saved.get("video_processor") or saved.get("image_processor") or {}
    return {}


def _side(value: Any, default: int) -> int:
    """A processor size: an int, or {"shortest_edge"|"height": n}."""
    if isinstance(value, dict):
        return int(value.get("shortest_edge") or value.get("height") or default)
    return int(value) if value else default


def describe(backbone: str) -> VideoBackbone:
    """The backbone row of a Hugging Face video classifier, read from its own files: frames from
    config.json, resize/crop and the effective mean/std (0..1 units, as tiffin's graph applies
    them) from its processor config, the family's published frame step."""
    from tiffin.train.model_files import refuse_foreign_files

    folder = model_folder(backbone)
    refuse_foreign_files(folder, backbone)
    config = read_config(folder)
    family = family_of(config, backbone)
    proc = _processor(folder)
    image = config.get("crop_size") or config.get("image_size") or 224
    crop = _side(proc.get("crop_size"), _side(image, 224))
    side = _side(proc.get("size"), round(crop * 256 / 224))
    frames = int(config.get("num_frames") or config.get("frames_per_clip") or 16)
    defaults = _family_defaults(config["model_type"])
    mean = tuple(proc.get("image_mean") or defaults["image_mean"])
    std = tuple(proc.get("image_std") or defaults["image_std"])
    if not proc.get("do_normalize", defaults["do_normalize"]):  # VideoPrism takes 0..1 pixels as they are
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = 255.0 * float(proc.get("rescale_factor") or defaults["rescale_factor"])
    # the model sees ((x/255)*scale - offset - mean)/std: as a mean/std over x/255
    mean = tuple(round((family.rescale_offset + m) / scale, 6) for m in mean)
    std = tuple(round(s / scale, 6) for s in std)
    return VideoBackbone(backbone, config["model_type"], 0, frames, family.sampling_rate, side, crop, 0.0, 0.0,
                         str(folder), family="transformers", mean=mean, std=std, fixed_size=True,
                         head=HFVideoBackbone.head_path)


def _family_defaults(model_type: str) -> dict:
    """A processor class's own defaults (what it uses where the saved config is silent)."""
    import transformers

    cls = getattr(transformers, HF_VIDEO_FAMILIES[model_type].processor)
    return {"image_mean": list(cls.image_mean), "image_std": list(cls.image_std),
            "rescale_factor": float(getattr(cls, "rescale_factor", 1 / 255)),
            "do_normalize": bool(getattr(cls, "do_normalize", True))}


def build(info: VideoBackbone, labels: list[str] | None, pretrained: bool) -> HFVideoBackbone:
    """The model of a described backbone: its weights (`pretrained`) or its config's random ones,
    with a new head for `labels` unless they are the model's own (None: keep its head)."""
    from transformers import AutoConfig, AutoModelForVideoClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(info.weights_file)
    try:
        if pretrained:  # use_safetensors: never fall back to unpickling a .bin
            model = AutoModelForVideoClassification.from_pretrained(folder, local_files_only=True,
                                                                    use_safetensors=True)
        else:
            model = AutoModelForVideoClassification.from_config(AutoConfig.from_pretrained(folder,
                                                                                           local_files_only=True))
    except (OSError, ValueError) as exc:
        raise TiffinError(f"--backbone {info.name}: cannot load it ({str(exc).splitlines()[0][:160]})") from None
    if labels is not None and list(labels) != own_labels(model.config):
        set_labels(model, list(labels))
    model.train()  # from_pretrained hands models over in eval mode; tiffin's modules start in train mode
    return HFVideoBackbone(model)


def from_config(model_config: dict) -> HFVideoBackbone:
    """Rebuild a model from the config a checkpoint saved (no download; the weights follow)."""
    from transformers import AutoConfig, AutoModelForVideoClassification

    config = dict(model_config)
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    return HFVideoBackbone(AutoModelForVideoClassification.from_config(config))


def own_labels(config) -> list[str] | None:
    """The model's class names, when its head was trained on named classes (not LABEL_0...)."""
    names = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    return None if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def set_labels(model: nn.Module, labels: list[str]) -> None:
    """A fresh classification layer for `labels`, recorded in the config (id2label, label2id)."""
    old = model.classifier
    model.classifier = nn.Linear(old.in_features, len(labels))
    model.config.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}


def save_hf(net: HFVideoBackbone, spec, out: Path) -> None:
    """`save_pretrained` of the fine-tuned model and its processor (sized and normalised as the
    spec), so transformers users load the result with the classes they know."""
    import transformers

    model = net.model
    model.config.id2label = dict(enumerate(spec.labels))
    model.config.label2id = {name: i for i, name in enumerate(spec.labels)}
    model.save_pretrained(out, safe_serialization=True)
    family = HF_VIDEO_FAMILIES[model.config.model_type]
    kwargs: dict[str, Any] = {"size": {"shortest_edge": spec.side_size},
                              "crop_size": {"height": spec.crop_size, "width": spec.crop_size}}
    if not family.rescale_offset:  # ViViT's processor keeps its own rescaling and statistics
        kwargs.update(image_mean=list(spec.mean), image_std=list(spec.std), rescale_factor=1 / 255)
    getattr(transformers, family.processor)(**kwargs).save_pretrained(out)
