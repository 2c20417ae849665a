"""How far apart are a SeCo run's class prototypes? Pairwise cosines of LIG's prototypes (methods.md 3.4).

LIG pulls each tagged patch's projected class token toward its class prototype and away from the
others (3.7). If the prototypes are nearly parallel, the classes are hard to tell apart in their space
and LIG must push the backbone to separate them.

    .venv/bin/python bench/seco_prototypes.py runs/abl/seco_lilonly runs/abl/seco_ligonly
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.engine.checkpoint import load_checkpoint


def prototype_cosines(run: Path) -> dict[str, float]:
    """Mean / min / max cosine between distinct prototypes of ``run``'s last checkpoint."""
    protos = F.normalize(load_checkpoint(run / "checkpoints" / "last.pt")["model"]["prototypes"].float(), dim=1)
    cos = protos @ protos.T
    off = cos[~torch.eye(len(cos), dtype=torch.bool)]
    return {"mean": float(off.mean()), "min": float(off.min()), "max": float(off.max())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    a = p.parse_args(argv)
    print("| run | mean cosine | min | max |\n|---|---|---|---|")
    for run in a.runs:
        c = prototype_cosines(run)
        print(f"| {run} | {c['mean']:.3f} | {c['min']:.3f} | {c['max']:.3f} |")


if __name__ == "__main__":
    main()
