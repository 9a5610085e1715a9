"""Video classification from Python, as Lightning Flash users write it.

Example:
    >>> from tiffin import Trainer
    >>> from tiffin.video import VideoClassificationData, VideoClassifier
    >>> dm = VideoClassificationData.from_folders(train_folder="kinetics/train", val_folder="kinetics/val",
    ...                                           clip_sampler="uniform", clip_duration=1, batch_size=8)
    >>> model = VideoClassifier(backbone="slowfast_r50", labels=dm.labels, pretrained=True)
    >>> trainer = Trainer(max_epochs=3)
    >>> trainer.finetune(model, datamodule=dm, strategy="freeze")
    >>> trainer.save_checkpoint("video_classification.ckpt")

Importing this module imports torch and Lightning; `import tiffin` alone does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torchmetrics.classification import MulticlassAccuracy

from tiffin.errors import TiffinError
from tiffin.model_api import ModelAPI
from tiffin.spec import VideoSpec
from tiffin.train.video_datamodule import VideoClassificationData
from tiffin.train.video_task import TASK, VideoClassificationTask

__all__ = ["VideoClassificationData", "VideoClassifier"]


class VideoClassifier(ModelAPI, VideoClassificationTask):
    """A PyTorchVideo classifier (a LightningModule) with a new head for your labels.

    Example:
        >>> model = VideoClassifier(backbone="tiffin/tiny-motion", labels=["left", "right"])
        >>> VideoClassifier.available_backbones()
    """

    def __init__(
        self,
        backbone: str = "slowfast_r50",
        labels: Sequence[str] | None = None,
        num_classes: int | None = None,
        pretrained: bool = True,
        learning_rate: float = 1e-3,
        *,
        weights: str | Path | None = None,
        num_frames: int | None = None,
        crop_size: int | None = None,
        clip_duration: float | None = None,
        strategy: str = "no_freeze",
        unfreeze_epoch: int = 1,
        backbone_lr_scale: float = 0.1,
        weight_decay: float = 1e-4,
        spec: dict[str, Any] | None = None,
        model_config: dict[str, Any] | None = None,
        task: str = TASK,
    ):
        """`backbone`: a name of `available_backbones()`, or a Hugging Face video classifier (a Hub id
        such as `MCG-NJU/videomae-base`, or a save_pretrained folder). Pretrained weights not cached
        yet are downloaded (torch hub's and the Hub's caches; `tiffin download` fetches ahead).
        `labels` (or `num_classes`, the labels then taken from the data module at training time);
        `pretrained`: start from the zoo's (the embedded, the Hub model's) weights, `weights`: from
        this file. `num_frames`, `crop_size`, `clip_duration`: clip size, default the backbone's.
        `spec` (+ `model_config` for a transformers model) is how a checkpoint rebuilds the model
        (what `tiffin train` checkpoints hold); with it the other model options are unused."""
        from tiffin.train.video_lookup import get_video_backbone
        from tiffin.train.video_model import check_clip_size, find_pretrained_weights, make_spec

        init_weights = None
        self_labels_from_data = False
        if spec is None:
            info = get_video_backbone(backbone)
            if labels is None and num_classes is None:
                raise TiffinError("VideoClassifier: give labels=datamodule.labels (or num_classes=N)")
            if labels is not None and num_classes is not None and len(labels) != num_classes:
                raise TiffinError(f"VideoClassifier: {len(labels)} labels but num_classes={num_classes}")
            if labels is None:
                labels, self_labels_from_data = [str(i) for i in range(num_classes)], True
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise TiffinError(f"VideoClassifier: labels={list(labels)}: give two or more distinct labels")
            check_clip_size(info, num_frames or info.frames, crop_size or info.crop)
            spec = make_spec(backbone, [str(label) for label in labels], num_frames, crop_size, clip_duration).to_dict()
            if pretrained or weights is not None:
                init_weights = str(find_pretrained_weights(info, weights))
        super().__init__(backbone=backbone, spec=spec, strategy=strategy, unfreeze_epoch=unfreeze_epoch,
                         learning_rate=learning_rate, backbone_lr_scale=backbone_lr_scale, weight_decay=weight_decay,
                         task=task, init_weights=init_weights, model_config=model_config)
        self.labels_from_data = self_labels_from_data
        self.test_acc = MulticlassAccuracy(len(self.spec.labels), top_k=1, average="micro")

    @staticmethod
    def available_backbones() -> list[str]:
        """The backbones `backbone=` takes (embedded ones first); `tiffin backbones video` shows their sizes."""
        from tiffin.train.backbones import VIDEO_BACKBONES

        return sorted(VIDEO_BACKBONES, key=lambda name: (not VIDEO_BACKBONES[name].embedded, name))

    @staticmethod
    def get_backbone_details(backbone: str) -> dict:
        """One backbone's name, family, params, frames x rate, crop, GFLOPs, Kinetics-400 top-1, where
        its weights come from (and whether they are here) and its preprocessing (Flash's call; the
        rows of `tiffin backbones video --json`)."""
        from tiffin.train.video_lookup import video_backbone_details

        return video_backbone_details(backbone)

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    def use_spec(self, spec: VideoSpec) -> None:
        """Take a clip spec from the data (its clip duration, or its labels when built from
        num_classes); checkpoints record it."""
        if len(spec.labels) != len(self.spec.labels):
            raise TiffinError(f"the model has {len(self.spec.labels)} classes, the data {len(spec.labels)}")
        self.spec = spec
        self.hparams["spec"] = spec.to_dict()
        self.labels_from_data = False

    def loaded(self):
        """This model as tiffin.train.predict's LoadedVideoModel (in eval mode, on the CPU for export)."""
        from tiffin.train.predict import LoadedVideoModel

        self.eval()
        net = self.net if next(self.net.parameters()).device.type == "cpu" else _cpu_copy(self.net)
        return LoadedVideoModel(net, self.spec, self.hparams.backbone)

    @classmethod
    def from_loaded(cls, loaded, source: str | Path | None = None) -> "VideoClassifier":
        """A VideoClassifier over a loaded network (tiffin.load: a checkpoint or an embedded model)."""
        backbone = loaded.net.backbone
        config = backbone.model.config.to_dict() if hasattr(backbone, "model") else None  # a transformers model's
        model = cls(backbone=loaded.backbone, spec=loaded.spec.to_dict(), model_config=config)
        model.net = loaded.net
        model.source = source
        return model.eval()

    # --- testing: trainer.test(model, datamodule=...) ---------------------------------------
    def test_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        logits = self(batch["video"])
        self.log("test_loss", torch.nn.functional.cross_entropy(logits, batch["label"]), on_epoch=True,
                 batch_size=len(logits), sync_dist=True)
        self.test_acc.update(logits, batch["label"])

    def on_test_epoch_end(self) -> None:
        self.log("test_acc", self.test_acc.compute())
        self.test_acc.reset()


def _cpu_copy(net):
    import copy

    return copy.deepcopy(net).cpu().eval()

