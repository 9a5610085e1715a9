"""The video classification recipe: one LightningModule, readable top to bottom.

Fine-tuning strategies:
  no_freeze        every layer trains from the first step.
  freeze           only the new classification layer trains; the backbone's weights and its
                   BatchNorm statistics stay as loaded (BatchNorm kept in eval mode).
  freeze_unfreeze  `freeze` until epoch `unfreeze_epoch`, then everything trains, the
                   backbone at `backbone_lr_scale` x the learning rate.
Trained by tiffin.Trainer (`tiffin train video` and tiffin.video.VideoClassifier, its subclass);
in a run folder it adds confusion_matrix.png of the best epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from tiffin.console import say
from tiffin.spec import VideoSpec
from tiffin.train.checkpoints import same_classes
from tiffin.train.finetuning import backbone_frozen, finetune_optimizer, params_outside
from tiffin.train.video_model import VideoNet, build_video_net

TASK = "video-classification"


class VideoClassificationTask(pl.LightningModule):
    """Fine-tunes a `VideoNet`. Hyperparameters are plain values, saved in every checkpoint."""

    # what a run folder monitors (best.ckpt) and records per epoch in metrics.json
    run_monitor = ("val_acc", "max", ("val_loss", "val_acc", "val_acc_top5"))

    def __init__(
        self,
        backbone: str,
        spec: dict[str, Any],
        strategy: str = "no_freeze",
        unfreeze_epoch: int = 1,
        learning_rate: float = 1e-3,
        backbone_lr_scale: float = 0.1,
        weight_decay: float = 1e-4,
        task: str = TASK,
        init_weights: str | None = None,
        model_config: dict[str, Any] | None = None,
    ):
        """`init_weights`: zoo weights loaded into the backbone before its head is replaced (a
        transformers model's folder). Only a new run passes it; rebuilding from a checkpoint gets
        the trained weights instead, and a transformers model its saved `model_config`."""
        super().__init__()
        # named, not collected from the call stack: a subclass's own arguments (tiffin.video's
        # labels, pretrained) are not what rebuilds the network from a checkpoint
        self.save_hyperparameters({"backbone": backbone, "spec": spec, "strategy": strategy,
                                   "unfreeze_epoch": unfreeze_epoch, "learning_rate": learning_rate,
                                   "backbone_lr_scale": backbone_lr_scale, "weight_decay": weight_decay, "task": task,
                                   "model_config": model_config})
        self.spec = VideoSpec.from_dict(spec)
        self.init_weights = init_weights
        self.net: VideoNet = build_video_net(backbone, self.spec, weights=init_weights, model_config=model_config)
        if model_config is None and hasattr(self.net.backbone, "model"):
            # a transformers model: its config (architecture, labels) is what rebuilds it offline
            self.hparams["model_config"] = self.net.backbone.model.config.to_dict()
        n = len(self.spec.labels)
        self.val_acc = MulticlassAccuracy(n, top_k=1, average="micro")
        self.val_acc_top5 = MulticlassAccuracy(n, top_k=min(5, n), average="micro")
        self.val_confusion = MulticlassConfusionMatrix(n)
        self.last_confusion: list[list[int]] | None = None
        self.validated_epoch = -1  # the epoch whose validation the metrics belong to

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)

    # --- fine-tuning strategy -------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        frozen = backbone_frozen(self.hparams.strategy, self.current_epoch, self.hparams.unfreeze_epoch)
        for p in params_outside(self.net, self.net.head()):
            p.requires_grad_(not frozen)
        # Frozen means frozen statistics too: BatchNorm in eval mode keeps the loaded running stats.
        self.net.backbone.train(not frozen)
        self.net.head().train(True)

    def configure_optimizers(self):
        hp = self.hparams
        head = self.net.head()
        return finetune_optimizer(self, list(head.parameters()), params_outside(self.net, head), hp.strategy,
                                  hp.learning_rate, hp.backbone_lr_scale, hp.weight_decay)

    # --- steps ----------------------------------------------------------------------------
    def training_step(self, batch: dict | None, batch_idx: int):
        if batch is None:  # every clip of this batch failed to decode (already reported)
            return None
        logits = self(batch["video"])
        loss = F.cross_entropy(logits, batch["label"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        logits = self(batch["video"])
        labels = batch["label"]
        self.log("val_loss", F.cross_entropy(logits, labels), on_epoch=True, prog_bar=True,
                 batch_size=len(logits), sync_dist=True)
        self.val_acc.update(logits, labels)
        self.val_acc_top5.update(logits, labels)
        self.val_confusion.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", self.val_acc.compute(), prog_bar=True)
        self.log("val_acc_top5", self.val_acc_top5.compute())
        self.last_confusion = self.val_confusion.compute().tolist()
        if not self.trainer.sanity_checking:
            self.validated_epoch = self.current_epoch
        for metric in (self.val_acc, self.val_acc_top5, self.val_confusion):
            metric.reset()

    def best_extras(self) -> dict[str, Any]:
        """Kept in metrics.json for the best epoch only."""
        return {"confusion": self.last_confusion}

    # --- the run folder (tiffin.Trainer(default_root_dir=...)) ----------------------------
    def run_report(self) -> dict[str, Any]:
        """What metrics.json records of the model."""
        return {"task": TASK, "backbone": self.hparams.backbone, "labels": list(self.spec.labels),
                "strategy": self.hparams.strategy, "confusion_matrix_png": "confusion_matrix.png"}

    def finish_run(self, out: Path, metrics: dict[str, Any]) -> None:
        """The best epoch's confusion matrix as a PNG, a transformers model's best weights in
        Hugging Face format (OUT/hf), and the run's figures in one line."""
        if self.hparams.get("model_config") is not None and (out / "checkpoints" / "best.ckpt").is_file():
            from tiffin.train.predict import load_video_model
            from tiffin.train.video_hf import save_hf

            best_model = load_video_model(out / "checkpoints" / "best.ckpt")
            save_hf(best_model.net.backbone, best_model.spec, out / "hf")
        best = metrics.get("best")
        if best and best.get("confusion"):
            save_confusion_png(best["confusion"], list(self.spec.labels), out / "confusion_matrix.png",
                               f"validation, epoch {best['epoch']} (val_acc {best['val_acc']:.3f})")
        if metrics.get("val_acc") is not None:
            say(f"val_acc {metrics['val_acc']:.3f} (best {metrics['best_val_acc']:.3f} at epoch "
                f"{metrics['best_epoch']}), val_acc_top5 {metrics['val_acc_top5']:.3f}; run in {out}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        same_classes(checkpoint, "labels", self.spec.labels, "classes")

    # --- self-describing checkpoints ------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from tiffin import __version__

        checkpoint["tiffin"] = {
            "task": TASK,
            "backbone": self.hparams.backbone,
            "spec": self.spec.to_dict(),
            "model_config": self.hparams.get("model_config"),
            "initialised_from": self.init_weights and Path(self.init_weights).name,
            "tiffin_version": __version__,
            "torch_version": str(torch.__version__),
        }


def save_confusion_png(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Draw a confusion matrix (rows: true class, columns: predicted) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(2 + 0.6 * n, 1.5 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
