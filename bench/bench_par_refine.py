"""Seconds per photo of ``wsss pseudo --refine par``'s refiner (runs/refiners.py: PAR with two background levels on
the full photo) on each device asked, at a photo size and class count of ccp-dev's (550 x 820, 10 garment groups)
and a preset's PAR settings. The CAM is random and smooth, the photo random; each photo is timed from its numpy
arrays to its label back in numpy (copies to the device and back included), after ``--warmup`` untimed ones.

    .venv/bin/python bench/bench_par_refine.py --devices cpu cuda --iters 20
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def seconds_per_photo(
    device: str, preset: Path, size: tuple[int, int], classes: int, present: int, iters: int, warmup: int
) -> float:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from wsss.core.config import load_config
    from wsss.runs.refiners import refine_par

    cfg = load_config(preset)
    rng = np.random.default_rng(0)
    h, w = size
    coarse = torch.from_numpy(rng.random((1, classes, h // 16, w // 16), dtype=np.float32))
    cam = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = np.zeros(classes, np.float32)
    labels[:present] = 1
    job = SimpleNamespace(
        run=SimpleNamespace(cfg=cfg, device=torch.device(device)), require_cams=lambda ids: None, cam=lambda id: cam
    )
    refine = refine_par(job, ["photo"])
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        refine("photo", image, labels)  # its label comes back as numpy: the device has finished
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import torch

    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_argument("--devices", nargs="+", default=["cpu"], help="devices to time (default: cpu)")
    p.add_argument("--preset", type=Path, default=REPO / "configs/rca/real_cpu.yaml", help="the PAR settings' preset")
    p.add_argument("--size", default="820x550", help="photo height x width (default %(default)s)")
    p.add_argument("--classes", type=int, default=10, help="foreground classes (default %(default)s)")
    p.add_argument("--present", type=int, default=3, help="classes present in the photo (default %(default)s)")
    p.add_iters(20, warmup=3)
    p.add_threads()
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    size = tuple(int(s) for s in a.size.split("x"))
    res = {d: seconds_per_photo(d, a.preset, size, a.classes, a.present, a.iters, a.warmup) for d in a.devices}
    names = {d: torch.cuda.get_device_name(d) if d.startswith("cuda") else f"cpu, {a.threads} thread(s)" for d in res}
    print(json.dumps({"seconds_per_photo": res, "devices": names, "size": a.size, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
