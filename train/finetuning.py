"""Fine-tuning strategies, shared by the video and speech tasks.

  no_freeze        every layer trains from the first step.
  freeze           only the new head trains; the backbone stays as loaded.
  freeze_unfreeze  `freeze` until epoch `unfreeze_epoch`, then everything trains, the
                   backbone at `backbone_lr_scale` x the learning rate.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

FINETUNE_STRATEGIES = ("no_freeze", "freeze", "freeze_unfreeze")


def backbone_frozen(strategy: str, epoch: int, unfreeze_epoch: int) -> bool:
    """Whether a fine-tuning strategy keeps the pretrained backbone frozen during `epoch`.

    Derived from the epoch alone, so a resumed run picks the strategy up exactly.
    """
    return strategy == "freeze" or (strategy == "freeze_unfreeze" and epoch < unfreeze_epoch)


def params_outside(module: torch.nn.Module, head: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of `module` that are not the new head's: the pretrained backbone."""
    own = {id(p) for p in head.parameters()}
    return [p for p in module.parameters() if id(p) not in own]


def finetune_optimizer(module: pl.LightningModule, head: list[torch.nn.Parameter], backbone: list[torch.nn.Parameter],
                       strategy: str, learning_rate: float, backbone_lr_scale: float, weight_decay: float):
    """AdamW over the new head and (unless `freeze`) the backbone, linear warm-up then cosine decay.

    Frozen parameters get no gradient and AdamW skips them (no weight decay either), so the
    backbone can sit in the optimizer from the start and `freeze_unfreeze` only flips requires_grad.
    """
    groups = [{"params": head, "lr": learning_rate}]
    if strategy != "freeze":
        scale = backbone_lr_scale if strategy == "freeze_unfreeze" else 1.0
        groups.append({"params": backbone, "lr": learning_rate * scale})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    warmup = min(max(1, total // 20), 100)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
