"""Pre-train the small ViT so that its class token is class-discriminative, as a supervised ViT's is.

SeCo's LIG pulls patches toward class prototypes made of raw class tokens (docs/methods/seco.md#networks,
#lig). The paper fine-tunes ImageNet-21k supervised ViT-B/16 weights, whose class token already separates
classes; a ViT trained from scratch by the CAM baseline never trains its class token (the classifiers
pool the patch tokens). This trains the CAM baseline with one more term, ``cls_token``: a linear
multi-label classifier on the final class token. Its run's ``last.pt`` is then a starting point for any
method (``model.pretrained=RUN/checkpoints/last.pt`` loads the backbone only). A diagnostic: the method
it registers, ``cam_cls_token``, exists in this process alone.

    .venv/bin/python experiments/cls_token_pretrain.py configs/cam/synthetic_cpu.yaml \\
        data.root=data/synth_bench run.dir=runs/pre/cls_token
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cli import main as wsss_main
from wsss.cli_common import script_parser
from wsss.core.config import Config
from wsss.methods import register_method
from wsss.methods.cam import CAMBaseline


@register_method
class CAMClassToken(CAMBaseline):
    name = "cam_cls_token"

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        self.token_classifier = nn.Linear(self.backbone.out_dim, self.num_classes - 1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().param_groups()
        groups["head"] = [*groups["head"], *self.token_classifier.parameters()]
        return groups

    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["image"])
        terms = self.terms_of_output(out, batch, active)
        terms["cls_token"] = F.multilabel_soft_margin_loss(self.token_classifier(out.cls), batch["labels"])
        return terms


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__doc__, full=True)
    p.add_argument("config", help="the CAM baseline's preset, e.g. configs/cam/synthetic_cpu.yaml")
    p.add_overrides()
    a = p.parse_args(argv)
    weights = "loss.weights={cls: 1.0, aux: 1.0, seg: 0.12, cls_token: 1.0}"
    return wsss_main(["train", a.config, "method=cam_cls_token", weights, *a.overrides])


if __name__ == "__main__":
    sys.exit(main())
