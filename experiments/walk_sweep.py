"""Random-walk settings of a trained AffinityNet, swept on a few images
(docs/methods/affinitynet.md#random-walk).

For each image: the affinity features once per walk scale, the transition matrix once, its powers by
repeated squaring once; then every (alpha, logt) pair is only a product. Prints the mIoU of the labels
(255 in the ground truth ignored) against the raw seeds (argmax with ``cam.bkg_thre`` of the CAM run):

    .venv/bin/python experiments/walk_sweep.py runs/multistage/affinity runs/multistage/cam --images 120 \\
        --scales 1 2 --alphas 4 16 --logt 0 2 3 4 5 6

logt 0 is one step of the walk; "pool" rows are the CAM pooled to the grid and upsampled without a walk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cam.affinity import background_cam, dense_affinity, transition_matrix
from wsss.cli_common import script_parser
from wsss.data.transforms import normalize
from wsss.runs.run import load_run
from wsss.utils.io import load_cam_of


def miou(conf: np.ndarray) -> float:
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(100 * np.mean(inter[union > 0] / union[union > 0]))


def main(argv: list[str] | None = None) -> None:
    p = script_parser(__doc__)
    p.add_argument("affinity_run")
    p.add_argument("cam_run", help="a run with cams/<split>/ written by `wsss cam`")
    p.add_split("train")
    p.add_data_root()  # default: the CAM run's data.root
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--alphas", type=float, nargs="+", default=[4.0, 16.0])
    p.add_argument("--logt", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    a = p.parse_args(argv)

    aff = load_run(a.affinity_run, device="cpu")
    cam_run = load_run(a.cam_run, device="cpu")
    net, o = aff.method.eval(), aff.method.options
    from wsss.data import VOCDataset

    ds = VOCDataset(a.data_root or cam_run.cfg.data.root, a.split)
    c = ds.num_classes
    kinds = [("pool", -1), *(("walk", t) for t in a.logt)]
    keys = [("seeds", 0.0, 0.0, -1)] + [(kind, s, al, t) for s in a.scales for al in a.alphas for kind, t in kinds]
    conf = {k: np.zeros((c, c), np.int64) for k in keys}
    for id in ds.ids[: a.images]:
        image, gt = ds.load_image(id), ds.load_mask(id).astype(np.int64)
        h, w = gt.shape
        cam = torch.from_numpy(load_cam_of(Path(a.cam_run) / "cams" / a.split, id, c - 1))
        cam = cam * torch.as_tensor(ds.labels(id) > 0.5, dtype=cam.dtype).view(-1, 1, 1)
        scores: dict[tuple, torch.Tensor] = {keys[0]: torch.cat([torch.full((1, h, w), cam_run.cfg.cam.bkg_thre), cam])}
        for s in a.scales:
            x = normalize(image)[None]
            if s != 1.0:
                x = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            x = F.pad(x, (0, -x.shape[-1] % net.stride, 0, -x.shape[-2] % net.stride))
            with torch.no_grad():
                feat = net.features(x)[0]
                gh, gw = feat.shape[-2:]
                trans = transition_matrix(
                    dense_affinity(feat, o.radius, interior_sources=o.quirk_interior_sources), o.rw_beta
                )
                powers, t = {}, trans
                for k in range(max(a.logt) + 1):
                    powers[k] = t
                    t = t @ t
            for al in a.alphas:
                full = background_cam(cam, al)
                # the image region of the padded grid, as the walk of AffinityNet.random_walk_label
                sh, sw = round(h * s), round(w * s)
                full = F.interpolate(full[None], size=(sh, sw), mode="bilinear", align_corners=False)
                full = F.pad(full, (0, gw * net.stride - sw, 0, gh * net.stride - sh))
                small = F.adaptive_avg_pool2d(full, (gh, gw))[0].reshape(c, -1)
                for kind, _, _, logt in [k for k in keys if k[1] == s and k[2] == al]:
                    grid = small if kind == "pool" else small @ powers[logt]
                    up = F.interpolate(
                        grid.view(1, c, gh, gw),
                        size=(gh * net.stride, gw * net.stride),
                        mode="bilinear",
                        align_corners=False,
                    )[..., :sh, :sw]
                    scores[(kind, s, al, logt)] = F.interpolate(up, size=(h, w), mode="bilinear")[0]
        valid = gt != 255
        for k, sc in scores.items():
            pred = sc.argmax(0).numpy()
            conf[k] += np.bincount(c * gt[valid] + pred[valid], minlength=c * c).reshape(c, c)
    print(f"{a.images} images of {a.split}; mIoU %")
    for (kind, s, al, logt), cm in conf.items():
        what = (
            "seeds"
            if kind == "seeds"
            else f"scale {s:g} alpha {al:g} " + ("pool" if kind == "pool" else f"logt {logt}")
        )
        print(f"  {what:32s} {miou(cm):5.1f}")


if __name__ == "__main__":
    main()
