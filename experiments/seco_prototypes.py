"""How far apart are a SeCo run's class prototypes? Pairwise cosines of LIG's prototypes
(docs/methods/seco.md#networks).

LIG pulls each tagged patch's projected class token toward its class prototype and away from the
others (seco.md#lig). If the prototypes are nearly parallel, the classes are hard to tell apart in their space
and LIG must push the backbone to separate them.

    .venv/bin/python experiments/seco_prototypes.py runs/abl/seco_lilonly runs/abl/seco_ligonly

``--class-tokens DATA`` asks the same of any run's backbone (a SeCo run's, the CAM baseline's, a
pre-training's): the prototypes are then the mean raw class token of each class's single-class train
images (the first ``--images`` of the split), what SeCo's prototypes would start from.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.cli_common import script_parser
from wsss.core.checkpoint import load_checkpoint
from wsss.core.config import load_config
from wsss.data.transforms import normalize
from wsss.data.voc import VOCDataset
from wsss.methods.base import backbone_from_config


def _cosines(protos: torch.Tensor) -> dict[str, float]:
    protos = F.normalize(protos.float(), dim=1)
    cos = protos @ protos.T
    off = cos[~torch.eye(len(cos), dtype=torch.bool)]
    return {"mean": float(off.mean()), "min": float(off.min()), "max": float(off.max())}


def prototype_cosines(run: Path) -> dict[str, float]:
    """Mean / min / max cosine between distinct prototypes of ``run``'s last checkpoint."""
    return _cosines(load_checkpoint(run / "checkpoints" / "last.pt")["model"]["prototypes"])


@torch.no_grad()
def class_token_cosines(run: Path, data: Path, images: int) -> dict[str, float]:
    """The same for the class-mean raw class tokens of ``run``'s backbone on single-class train images."""
    model = replace(load_config(run / "config.yaml").model, pretrained=str(run / "checkpoints" / "last.pt"))
    backbone = backbone_from_config(model).eval()  # model.pretrained reads a run's backbone
    ds = VOCDataset(data, "train")
    tokens: dict[int, list[torch.Tensor]] = {}
    for id in ds.ids[:images]:
        fg = (torch.as_tensor(ds.labels(id)) > 0.5).nonzero().flatten()
        if len(fg) == 1:
            x = normalize(ds.load_image(id))[None]
            tokens.setdefault(int(fg[0]), []).append(backbone(x).cls[0])
    return _cosines(torch.stack([torch.stack(t).mean(0) for _, t in sorted(tokens.items())]))


def main(argv: list[str] | None = None) -> None:
    p = script_parser(__doc__, full=True)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--class-tokens", type=Path, metavar="DATA", help="class-mean class tokens on DATA's train split")
    p.add_argument("--images", type=int, default=400, help="train images read with --class-tokens")
    a = p.parse_args(argv)
    print("| run | mean cosine | min | max |\n|---|---|---|---|")
    for run in a.runs:
        c = class_token_cosines(run, a.class_tokens, a.images) if a.class_tokens else prototype_cosines(run)
        print(f"| {run} | {c['mean']:.3f} | {c['min']:.3f} | {c['max']:.3f} |")


if __name__ == "__main__":
    main()
