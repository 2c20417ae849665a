"""SeCo with oracle tags: is the tag quality what keeps SeCo below the CAM baseline here?

Trains SeCo exactly as ``wsss train`` does, except that the decomposition mask (docs/methods/seco.md#decompose),
from which the local patches are placed and tagged, is built from the **ground-truth** mask of the
training crop instead of the CAM: class id on object pixels, 0 on background, -1 on a band of
``--band`` pixels either side of every label boundary (where the CAM's uncertain pixels sit), 255 on
the crop's padding. Everything else (PTC's target, the online pseudo labels, the teacher, the
losses and their staging) is unchanged. A diagnostic only: the method it registers,
``seco_oracle``, exists in this process alone and needs masks for the train split.

    .venv/bin/python experiments/seco_oracle.py configs/seco/synthetic_cpu.yaml data.root=data/synth_bench \\
        run.dir=runs/oracle/seco run.threads=1

If SeCo with perfect tags beats the baseline, the gap is its CAM's tag quality; if not, it is the
tag-guided objective itself on this model and data.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F

from wsss.cli import main as wsss_main
from wsss.cli_common import script_parser
from wsss.methods import TrainContext, register_method
from wsss.methods.seco import SeCo


def oracle_roi(target: torch.Tensor, band: int, ignore_index: int = 255) -> torch.Tensor:
    """Decomposition mask from a (B,H,W) label map: ids, 0, -1 within ``band`` px of a boundary, 255."""
    ignore = target == ignore_index
    ids = target.masked_fill(ignore, 0).float()[:, None]
    k = 2 * band + 1
    hi = F.max_pool2d(ids, k, stride=1, padding=band)
    lo = -F.max_pool2d(-ids, k, stride=1, padding=band)
    roi = target.clone()
    roi[(hi != lo)[:, 0] & ~ignore] = -1
    return roi


@register_method
class SeCoOracle(SeCo):
    name = "seco_oracle"
    band = 2

    def on_train_start(self, ctx: TrainContext) -> None:
        super().on_train_start(ctx)
        ctx.train_data.set_target_dir(ctx.train_set.root / "SegmentationClass")

    def decomposition_mask(self, batch: dict[str, Any], cam: torch.Tensor) -> torch.Tensor:
        return oracle_roi(batch["target"].to(cam.device), self.band)


def main(argv: list[str] | None = None) -> int:
    p = script_parser(__doc__, full=True)
    p.add_argument("config", help="the SeCo preset, e.g. configs/seco/synthetic_cpu.yaml")
    p.add_argument("--band", type=int, default=2, help="half-width of the uncertain band at label boundaries")
    p.add_overrides()
    a = p.parse_args(argv)
    SeCoOracle.band = a.band
    return wsss_main(["train", a.config, "method=seco_oracle", *a.overrides])


if __name__ == "__main__":
    sys.exit(main())
