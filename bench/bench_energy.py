"""Accuracy and speed of the bilateral filters behind the dense-energy loss (``wsss.methods.seco.energy``).

Prints, at the training size (224x224 maps = 448 crop at scale 0.5, sigma_xy 50 px, sigma_rgb 15,
K = 21), the relative error of each approximation against the exact dense filter and its run time
on this CPU. Usage::

    .venv/bin/python bench/bench_energy.py [--threads 2] [--images 'GLOB'] [--probes 2048]

The exact filter at 224x224 costs (hw)^2 = 2.5e9 kernel values per image, so the reference is
evaluated exactly (double precision) at ``--probes`` target pixels drawn at random, each against
all 50176 source pixels; the relative error is ``||approx - exact|| / ||exact||`` over those
pixels and all K channels. Photos come from ``--images`` (default: the six VOC photos of the tests,
``tests/assets/voc-real-mini``) and, in any case, from two synthetic photo-like images.
No assertions: the figures are for the module docstring.
"""

from __future__ import annotations

import glob
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cli_common import script_parser
from wsss.methods.seco.energy import bilateral_filter, energy_loss_from_logits

SIZE = 224
SIGMA_RGB = 15.0
SIGMA_XY = 50.0
K = 21
DEFAULT_IMAGES = str(Path(__file__).resolve().parents[1] / "tests/assets/voc-real-mini/JPEGImages/*.jpg")


def synthetic_photo(seed: int, size: int = SIZE) -> torch.Tensor:
    """(1, 3, size, size) 0..255 image: smooth background, blurred-edge shapes, texture, noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.rand(3, 1, 1, generator=g) * 120 + 60
    img = base + 60 * torch.stack([xx - 0.5, yy - 0.5, (xx + yy) / 2 - 0.5])
    for _ in range(6):
        cy, cx, ry, rx = (torch.rand(4, generator=g) * torch.tensor([1, 1, 0.25, 0.25]) + 0.05).tolist()
        inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).float()
        col = torch.rand(3, 1, 1, generator=g) * 255
        shade = 1 + 0.2 * torch.sin(xx * 20 * torch.rand(1, generator=g) + 3 * yy)
        img = img * (1 - inside) + col * shade * inside
    img = img + 8 * torch.randn(3, size, size, generator=g)
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None]) / 16
    img = F.conv2d(F.pad(img[:, None], (1, 1, 1, 1), mode="replicate"), k[None, None])[:, 0]
    return img.clamp(0, 255)[None]


def load_photo(path: str, size: int = SIZE) -> torch.Tensor:
    from PIL import Image

    im = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).astype(np.float32)).permute(2, 0, 1)[None]


def soft_values(seed: int, size: int = SIZE, k: int = K) -> torch.Tensor:
    """Softmax of smooth random logits times a crop-box ROI, like S * roi in training."""
    g = torch.Generator().manual_seed(seed)
    logits = F.interpolate(torch.randn(1, k, 7, 7, generator=g) * 3, size=(size, size), mode="bilinear")
    roi = torch.zeros(1, 1, size, size)
    roi[..., size // 10 :, : size - size // 8] = 1
    return logits.softmax(1) * roi


def exact_at(image: torch.Tensor, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Exact filter output (float64) at flat pixel indices ``idx`` of a single image: (len(idx), K)."""
    _, k, h, w = values.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    f = torch.cat([torch.stack([xs, ys]) / SIGMA_XY, image[0].double() / SIGMA_RGB]).reshape(5, -1).T
    v = values[0].double().reshape(k, -1).T
    out = []
    for s in range(0, len(idx), 256):
        d2 = torch.cdist(f[idx[s : s + 256]], f, compute_mode="donot_use_mm_for_euclid_dist").square_()
        out.append(torch.exp(-0.5 * d2) @ v)
    return torch.cat(out)


def subsample_filter(image: torch.Tensor, values: torch.Tensor, stride: int) -> torch.Tensor:
    """Alternative (c): exact kernel against every ``stride``-th source pixel, weights x stride^2."""
    _, k, h, w = values.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    feat = torch.cat([torch.stack([xs, ys]) / SIGMA_XY, image[0] / SIGMA_RGB])
    o = (stride - 1) // 2
    fs = feat[:, o::stride, o::stride].reshape(5, -1).T
    vs = values[0, :, o::stride, o::stride].reshape(k, -1).T * stride**2
    f = feat.reshape(5, -1).T
    out = torch.empty(f.shape[0], k)
    for s in range(0, f.shape[0], 4096):
        out[s : s + 4096] = torch.exp(-0.5 * torch.cdist(f[s : s + 4096], fs).square_()) @ vs
    return out.T.reshape(1, k, h, w)


def timeit(fn, repeat: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_threads(2)
    ap.add_argument("--images", default=DEFAULT_IMAGES, help="glob of photos (resized to 224x224)")
    ap.add_argument("--probes", type=int, default=2048, help="target pixels with an exact reference per image")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    images = [(Path(p).stem, load_photo(p)) for p in sorted(glob.glob(args.images))]
    images += [(f"synthetic{s}", synthetic_photo(s)) for s in (0, 1)]
    methods = {
        "fast (chosen)": lambda im, v: bilateral_filter(im, v, SIGMA_RGB, SIGMA_XY, method="fast"),
        "permutohedral, raw": lambda im, v: bilateral_filter(im, v, SIGMA_RGB, SIGMA_XY, method="permutohedral"),
        "permutohedral / 0.57": lambda im, v: (
            bilateral_filter(im, v, SIGMA_RGB, SIGMA_XY, method="permutohedral") / 0.57
        ),
        "subsample stride 4": lambda im, v: subsample_filter(im, v, 4),
        "subsample stride 8": lambda im, v: subsample_filter(im, v, 8),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {SIZE}x{SIZE}, K={K}, "
        f"sigma_xy={SIGMA_XY}, sigma_rgb={SIGMA_RGB}; {len(images)} images, {args.probes} exact probes each"
    )
    print("\n== relative error vs the exact dense filter (per image) ==")
    errs: dict[str, list[float]] = {m: [] for m in methods}
    gains: list[float] = []
    header = f"{'image':22s}" + "".join(f"{m:>22s}" for m in methods) + f"{'perm. gain':>12s}"
    print(header)
    for i, (name, im) in enumerate(images):
        v = soft_values(100 + i)
        idx = torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(i))[: args.probes]
        ref = exact_at(im, v, idx)
        row = f"{name:22s}"
        for m, fn in methods.items():
            out = fn(im, v)[0].reshape(K, -1).T[idx].double()
            e = ((out - ref).norm() / ref.norm()).item()
            errs[m].append(e)
            row += f"{100 * e:21.2f}%"
            if m == "permutohedral, raw":
                gains.append(((out * ref).sum() / (ref * ref).sum()).item())
        print(row + f"{gains[-1]:12.3f}")
    print(f"{'mean':22s}" + "".join(f"{100 * statistics.mean(errs[m]):21.2f}%" for m in methods))
    print(f"{'max':22s}" + "".join(f"{100 * max(errs[m]):21.2f}%" for m in methods))
    print("(perm. gain = least-squares scale of the official lattice output against the exact filter)")

    print("\n== speed (min / median of 5 runs, seconds) ==")
    ims = torch.cat([im for _, im in images[:4]] + [synthetic_photo(9)] * max(0, 4 - len(images)))[:4]
    vs = torch.cat([soft_values(200 + i) for i in range(4)])
    for bsz in (1, 4):
        for m in ("fast", "permutohedral"):
            tmin, tmed = timeit(lambda m=m, b=bsz: bilateral_filter(ims[:b], vs[:b], SIGMA_RGB, SIGMA_XY, method=m))
            print(f"bilateral_filter {m:14s} B={bsz}: {tmin:.3f} / {tmed:.3f}")
    for s in (4, 8):
        tmin, tmed = timeit(lambda s=s: subsample_filter(ims[:1], vs[:1], s), repeat=3)
        print(f"subsample stride {s}              B=1: {tmin:.3f} / {tmed:.3f}")
    small_im, small_v = ims[:1, :, ::4, ::4].contiguous(), vs[:1, :, ::4, ::4].contiguous()
    tmin, tmed = timeit(lambda: bilateral_filter(small_im, small_v, SIGMA_RGB, SIGMA_XY / 4, method="dense"))
    print(f"bilateral_filter dense (56x56)    B=1: {tmin:.3f} / {tmed:.3f}")

    # the full training call: 448 crop, B = 4, K = 21, forward + backward through softmax
    g = torch.Generator().manual_seed(0)
    x = (F.interpolate(ims, scale_factor=2, mode="bilinear") - 120) / 58
    logits = F.interpolate(torch.randn(4, K, 28, 28, generator=g), size=(448, 448), mode="bilinear")
    label = torch.randint(0, K, (4, 448, 448), generator=g).float()
    label[:, 100:200] = 255
    box = torch.tensor([[0, 448, 0, 448], [20, 440, 0, 400], [0, 300, 50, 448], [10, 448, 10, 448]])
    for m in ("fast", "permutohedral"):

        def step(m=m):
            lg = logits.clone().requires_grad_(True)
            energy_loss_from_logits(x, lg, label, box, method=m).backward()

        tmin, tmed = timeit(step)
        print(f"energy loss fwd+bwd {m:14s} (B=4, 448x448): {tmin:.3f} / {tmed:.3f}")
    if math.isfinite(statistics.mean(gains)):
        print(
            f"\nofficial lattice gain vs exact: mean {statistics.mean(gains):.3f}, "
            f"range {min(gains):.3f}-{max(gains):.3f}"
        )


if __name__ == "__main__":
    main()
