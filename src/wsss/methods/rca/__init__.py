"""RCA: Regional Semantic Contrast and Aggregation (Zhou et al., CVPR 2022), up to its proxy labels.

The network (docs/methods/rca.md#modules) on any backbone of the toolkit (the paper's: ``vgg16_dilated``,
rca.md#backbone):

- coarse branch: 3 x [conv3x3 + ReLU] + conv1x1 -> (B, C-1, h, w) maps, GAP -> ``coarse`` loss;
- embedding branch (``extra_F``): conv3x3, BN, ReLU, conv3x3 -> the contrast queries;
- semantic aggregation: a non-local read of the per-class k-means centroids of the memory
  (``Q(x) K(centroids)^T V(centroids)``), projected and concatenated with the features;
- C-1 class-specific heads on the aggregated features -> (B, C-1, h, w) maps, GAP -> ``cls`` loss
  (these maps are the CAMs).

The regional memory (rca.md#memory-bank) holds a queue of region embeddings per class, written after each forward
for the ground-truth classes predicted with probability > 0.7; the centroids of each queue are
recomputed by k-means when an epoch starts (``on_epoch_start``, epoch >= 1). The semantic contrast
loss with embedding mix-up (rca.md#semantic-contrast) is ``contrast`` (``region_contrast.py``). Loss
staging (rca.md#training):
``loss.weights: {cls: 1, coarse: 0.4, contrast: 0.01}`` with ``contrast`` from epoch 2
(``loss.start_iters``); SGD (nesterov) with four groups (weights / biases x backbone / heads at
1, 2, 10, 20 x lr) and the lr divided by 10 at the epochs of ``options.lr_decay_epochs``.

Online attention accumulation (OAA, rca.md#attention): from epoch 1, the ReLU'd class maps of every training
image's ground-truth classes are merged by an element-wise max over epochs, stored **by image id**
(not by loader index) in the checkpoint (``get_extra_state``), and consumed by ``wsss pseudo --refine
rca`` (``proxy_labels.py``). Accumulation rule: each map is scaled to 0..255 by its own max and
rounded (as the official PNGs), then mapped to a fixed ``G x G`` grid over the whole original image
(``G = crop / stride``, 46 for VOC): the training view (``views.RCAViews``) is a box of the original image
squashed to the crop square and maybe flipped; grid cells inside the box sample the map bilinearly
(un-flipped), cells outside are left unchanged. With the official view (the whole image, no flip)
the mapping is the identity. Write rule per (id, class): skip if the class probability < 0.1, except
at the last epoch where a missing map is written anyway; a new map is written, an existing one
becomes ``max(old, new)``.

Differences from the official code that keep the math: the C-1 class-specific heads run as one
grouped convolution (same function, same initialisation distribution); the data order is shuffled
(the official loader is not, because its attention files are keyed by loader index); images without
labels or regions are skipped where the official code would divide by zero; the DataParallel
losses (memory updates of non-zero replicas discarded, attention file names colliding across GPUs)
have no twin: under DDP the memory and attention updates of every process are gathered and applied
by all of them, in rank order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.core.config import (
    AREA_RANGE,
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_NUMBER,
    POSITIVE,
    POSITIVE_NUMBER,
    Config,
    iterations_per_epoch,
    setting,
)
from wsss.core.distributed import all_gather_cat, all_gather_objects, rank
from wsss.core.errors import ConfigError, DataError
from wsss.methods.base import backbone_from_config
from wsss.methods.contract import (
    CamDeclaration,
    Method,
    PoolCall,
    RefineJob,
    Refiner,
    TrainContext,
    register_method,
    register_refiner,
)
from wsss.methods.imports import ImportLayout, key_mapped, register_import
from wsss.methods.rca.official_keys import rca_state_from_official
from wsss.methods.rca.proxy_labels import ProxyParams, attention_to_image, minmax01, rca_proxy_label, read_saliency
from wsss.methods.rca.region_contrast import draw_mixup_pairs, region_contrast_loss, region_embeddings, region_masks
from wsss.methods.rca.views import RCAViews
from wsss.utils.io import per_id_path


@dataclass
class RCAOptions:
    """RCA's own settings (docs/methods/rca.md#specification). The ``quirk_*`` switches keep an official behaviour
    (True, the paper presets) or use the intended one (False, ``voc_corrected`` and CPU presets)."""

    head_dim: int = setting(512, **POSITIVE)  # width of the coarse and class-specific heads (rca.md#modules)
    queue_len: int = setting(500, **POSITIVE)  # memory entries per class (rca.md#memory-bank)
    num_centroids: int = setting(10, **POSITIVE)  # k-means centres per class (rca.md#aggregation)
    kmeans_n_init: int = setting(10, **POSITIVE)  # sklearn KMeans restarts (the default of the sklearn of the time)
    # slot blend, with quirk_memory_momentum_blend (rca.md#memory-bank)
    memory_momentum: float = setting(0.99, **FRACTION)
    # a class enters the memory when its probability > 0.7 (rca.md#memory-bank)
    memory_threshold: float = setting(0.7, **FRACTION)
    temperature: float = setting(0.07, **POSITIVE_NUMBER)  # contrast temperature (rca.md#semantic-contrast)
    mixup: bool = True  # embedding mix-up (rca.md#semantic-contrast step 2); False: plain regional contrast (ablation)
    mixup_alpha: float = setting(8.0, **POSITIVE_NUMBER)  # lam ~ Beta(8, 8) (rca.md#semantic-contrast)
    # GPUs of the official DataParallel run (README: 4 V100), for the loss scale
    official_replicas: int = setting(4, **POSITIVE)
    # N(0, init_std) init of the new convolutions (rca.md#backbone: 0.01, for 512-wide heads on VGG-16); None: He's
    # N(0, 2 / fan_in) per convolution, which keeps narrow heads' maps image-dependent at the start
    init_std: float | None = setting(0.01, **POSITIVE_NUMBER)
    # the training view (rca.md#training): square resize of the whole image + ColorJitter(0.3, 0.3, 0.3, 0.1)
    # area fraction of a random box (1, 1 = whole image)
    view_crop_scale: tuple[float, float] = setting((1.0, 1.0), **AREA_RANGE)
    view_hflip: bool = False  # the official view is not flipped
    # brightness, contrast, saturation, hue
    view_jitter: tuple[float, float, float, float] = setting((0.3, 0.3, 0.3, 0.1), **NON_NEGATIVE_NUMBER)
    # online attention accumulation (rca.md#attention)
    attention_start_epoch: int = setting(1, **NON_NEGATIVE)
    attention_min_prob: float = setting(0.1, **FRACTION)
    # side of the stored maps; None = crop_size // backbone stride
    attention_grid: int | None = setting(None, **POSITIVE)
    # learning-rate steps (rca.md#training, decay_points '5,10'): base lr x lr_decay at each of these epochs; values
    # in (0, 1) are fractions of the training instead, each at the nearest epoch (the real_cpu preset's: they follow
    # train.epochs / train.max_iters). Either form: a training whose last step falls before half of it is refused
    # unless allow_early_decay (the paper presets: the official steps at epochs 5 and 10 of 30)
    lr_decay_epochs: tuple[int | float, ...] = (5, 10)  # its forms are checked by lr_decay_fractions
    lr_decay: float = setting(0.1, **POSITIVE_NUMBER)
    allow_early_decay: bool = False
    # proxy labels (rca.md#proxy-labels, proxy_labels.py)
    # "accumulated" attention of training, or "cam" (the saved `wsss cam` maps)
    proxy_source: str = setting("accumulated", choices=("accumulated", "cam"))
    proxy_alpha: float = setting(4.0, **NON_NEGATIVE_NUMBER)  # bg = (1 - max att)^alpha in the CRF unary
    proxy_conflict: float = setting(0.9, **FRACTION)  # more than one channel above this -> 255
    proxy_att_thre: float = setting(0.8, **FRACTION)  # CRF class score above this counts as salient
    proxy_bg_thre: float = setting(32.0, lo=0, hi=255, hi_open=False)  # bg pixels with saliency >= this (0..255) -> 255
    proxy_min_fg: float = setting(0.01, **FRACTION)  # images with less foreground are ignored entirely
    # saliency-free: bg pixels whose max attention >= this -> 255, only where ProxyParams gets no levels (the
    # Python API): `wsss pseudo --refine rca` uses the run's cam.low_thre (and cam.high_thre) instead
    proxy_cam_bg_thre: float = setting(0.25, **FRACTION)
    # official quirks (docs/methods/rca.md#quirk-switches)
    quirk_memory_momentum_blend: bool = True  # slot = 0.99 slot + 0.01 embedding (vs replace the slot)
    quirk_memory_masked_leak: bool = True  # a multi-label image's features stay masked by earlier classes
    quirk_query_memory_spaces: bool = True  # memory holds backbone features, queries extra_F ones (vs both extra_F)
    quirk_aggregation_no_softmax: bool = True  # sim = QK^T / 10 * 20, no softmax (vs softmax(QK^T / sqrt(d)))
    quirk_aggregation_backbone_lr: bool = True  # Q/K/V/aggre/concat_project at the backbone lr (vs the head lr)
    quirk_contrast_sum_over_images: bool = True  # summed over a replica's images (vs the mean over images)
    quirk_mixup_self_partner: bool = True  # the mix-up partner can be the image itself
    quirk_aggregation_scale_20: bool = True  # sim / num_centroids * 20 (VOC's count, also on COCO) vs * (C-1)
    quirk_proxy_crf_bgr: bool = True  # the proxy-label CRF reads the image as BGR (cv2's order) vs RGB


# ------------------------------------------------------------------------------------------------
# the learning-rate steps (rca.md#training)

# the fraction form's example in a refusal: the real_cpu preset's steps, 2/3 and 11/12 of the training
_FRACTIONS_EXAMPLE = (0.67, 0.92)


def lr_decay_fractions(steps: Sequence[float]) -> bool:
    """Whether ``options.lr_decay_epochs`` is in the fraction form (every value in (0, 1)) rather than in epochs
    (whole numbers >= 0); a ConfigError naming the key for a mix of the two or an epoch that is not whole."""
    fractions = [v for v in steps if 0 < v < 1]
    if fractions and len(fractions) < len(steps):
        raise ConfigError(
            f"options.lr_decay_epochs {list(steps)} mixes fractions of the training (values in (0, 1)) and epochs "
            "(whole numbers): give all the steps in one form"
        )
    bad = [v for v in steps if not 0 < v < 1 and (v < 0 or not float(v).is_integer())]
    if bad:
        raise ConfigError(
            f"options.lr_decay_epochs {list(steps)}: {bad[0]} is neither an epoch (a whole number >= 0) nor a "
            "fraction of the training (between 0 and 1)"
        )
    return bool(fractions)


def _short_number(v: float) -> str:
    """24.0 -> "24", 0.6667 -> "0.67": an epoch, a length in epochs or a fraction, for a message."""
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")


def check_lr_decay(steps: Sequence[float], step_epochs: Sequence[int], epochs: float, decay: float, lr: float) -> None:
    """A ConfigError naming ``options.lr_decay_epochs`` when the last lr step of a training of ``epochs`` epochs
    falls before half of it: the fraction form's last fraction below 0.5, or the last step epoch reached below
    ``epochs / 2`` (steps past the end are never reached). The case it stops: ``train.epochs=24`` on a preset whose
    steps were set for 12 epochs ran 13 of the 24 at a hundredth of the lr, unsaid."""
    reached = sorted(e for e in step_epochs if e < epochs)
    if not reached or not steps:
        return
    last, num = reached[-1], _short_number
    fractions = lr_decay_fractions(steps)
    if (max(steps) >= 0.5) if fractions else (last >= epochs / 2):
        return
    at = f"at {num(max(steps))} of the training, epoch {last}" if fractions else f"epoch {last}"
    given = "[" + ", ".join(num(v) for v in steps) + "]"
    example = ", ".join(str(max(1, math.floor(f * epochs + 0.5))) for f in _FRACTIONS_EXAMPLE)
    low = f"{lr * decay ** len(reached):g}"
    raise ConfigError(
        f"options.lr_decay_epochs {given}: the last lr step ({at}) falls before half of this training's "
        f"{num(epochs)} epochs, so {num(epochs - last)} of them run at lr {low}; give steps in its second half "
        f"(e.g. options.lr_decay_epochs=[{example}], or as fractions of the training: "
        f"[{', '.join(map(str, _FRACTIONS_EXAMPLE))}]) or set options.allow_early_decay=true"
    )


# ------------------------------------------------------------------------------------------------
# modules


def _conv_stack(c_in: int, c_mid: int, c_out: int, groups: int = 1, first_groups: int = 1) -> nn.Sequential:
    """3 x [conv3x3 + ReLU] + conv1x1 (rca.md#modules). ``groups`` > 1 runs that many independent stacks at once."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 3, padding=1, groups=first_groups),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_mid, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_mid, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 1, groups=groups),
    )


class ClassSpecificHeads(nn.Module):
    """K independent heads ``3 x [conv3x3 dim->width + ReLU] + conv1x1 width->1`` (rca.md#modules ``extra_convs{i}``).

    Computed as one convolution dim -> K*width (K heads reading the same input) followed by grouped
    convolutions: the same function as K separate stacks, at one kernel launch per layer.
    """

    def __init__(self, dim: int, width: int, k: int):
        super().__init__()
        self.k = k
        self.net = _conv_stack(dim, width * k, k, groups=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SemanticAggregation(nn.Module):
    """Non-local read of the memory centroids (rca.md#aggregation): ``x -> concat_project([x, aggre(A V(c))])`` with
    ``A = Q(x) K(c)^T * scale`` (official, no softmax) or ``softmax(Q(x) K(c)^T / sqrt(d))``."""

    def __init__(self, dim: int, mem_dim: int, *, softmax: bool, scale: float):
        super().__init__()
        self.softmax, self.scale = softmax, scale
        self.Q = nn.Conv2d(dim, dim, 1)
        self.K = nn.Linear(mem_dim, dim)
        self.V = nn.Linear(mem_dim, dim)
        self.aggre = nn.Conv2d(dim, dim, 1)
        self.concat_project = nn.Conv2d(2 * dim, dim, 1)

    def forward(self, x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        cent = centroids.detach().to(x.dtype)
        q = self.Q(x).flatten(2).transpose(1, 2)  # (B, hw, d)
        sim = q @ self.K(cent).t()  # (B, hw, N)
        attn = torch.softmax(sim / math.sqrt(q.shape[-1]), dim=-1) if self.softmax else sim * self.scale
        read = (attn @ self.V(cent)).transpose(1, 2).reshape(b, -1, h, w)
        return self.concat_project(torch.cat([x, self.aggre(read)], dim=1))


# ------------------------------------------------------------------------------------------------
# the attention store


def maps_to_grid(
    maps: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map view maps (B, K, h, w) onto a ``grid x grid`` raster of each original image.

    Cell (i, j) has its centre at ((i + .5) / G, (j + .5) / G) in image fractions; a cell inside the
    image's box ``[y0, y1, x0, x1]`` samples the map bilinearly (``align_corners=False``) at its
    position in the box, mirrored when the view was flipped. Returns (values (B, K, G, G), covered
    (B, G, G) bool); uncovered cells are 0.
    """
    b = maps.shape[0]
    centres = (torch.arange(grid, dtype=torch.float32, device=maps.device) + 0.5) / grid
    boxes = boxes.to(maps.device, torch.float32)
    ty = (centres[None] - boxes[:, 0:1]) / (boxes[:, 1:2] - boxes[:, 0:1])  # (B, G)
    tx = (centres[None] - boxes[:, 2:3]) / (boxes[:, 3:4] - boxes[:, 2:3])
    covered = ((ty >= 0) & (ty < 1))[:, :, None] & ((tx >= 0) & (tx < 1))[:, None, :]
    tx = torch.where(flips.to(maps.device).bool()[:, None], 1 - tx, tx)
    gy, gx = (2 * ty - 1)[:, :, None].expand(b, grid, grid), (2 * tx - 1)[:, None, :].expand(b, grid, grid)
    sample = torch.stack([gx, gy], dim=-1)  # grid_sample wants (x, y)
    out = F.grid_sample(maps.float(), sample, mode="bilinear", padding_mode="border", align_corners=False)
    return out * covered[:, None], covered


class AttentionStore:
    """Accumulated attention per image id and class (OAA, docs/methods/rca.md#attention):
    ``{id: {class: (G, G) uint8}}``.

    Classes are 0-based foreground indices. Maps live on a ``grid x grid`` raster of the whole
    original image (squashed), see :func:`maps_to_grid`.
    """

    def __init__(self, grid: int):
        self.grid = int(grid)
        self.maps: dict[str, dict[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.maps)

    def get(self, id: str) -> dict[int, np.ndarray] | None:
        return self.maps.get(id)

    def update(
        self,
        id: str,
        cls: int,
        value: np.ndarray,
        covered: np.ndarray,
        prob: float,
        *,
        last_epoch: bool,
        min_prob: float = 0.1,
    ) -> None:
        """The official write rule (rca.md#attention) for one map already quantised to 0..255 on the grid."""
        entry = self.maps.setdefault(id, {})
        value = np.asarray(value, dtype=np.uint8)
        if cls not in entry:
            if last_epoch or prob >= min_prob:
                entry[cls] = np.where(covered, value, 0).astype(np.uint8)
            elif not entry:
                del self.maps[id]
            return
        if prob < min_prob:
            return
        old = entry[cls]
        entry[cls] = np.where(covered, np.maximum(old, value), old).astype(np.uint8)

    def state(self) -> dict[str, Any]:
        return {"grid": self.grid, "maps": self.maps}

    def load(self, state: dict[str, Any]) -> None:
        self.grid = int(state["grid"])
        self.maps = {
            str(k): {int(c): np.asarray(m, dtype=np.uint8) for c, m in v.items()} for k, v in state["maps"].items()
        }


def quantise_attention(maps: torch.Tensor) -> torch.Tensor:
    """ReLU, then each map scaled to 0..255 by its own max and rounded (rca.md#attention, the official PNG values)."""
    att = maps.detach().float().clamp(min=0)
    return torch.round(att / (att.amax(dim=(-2, -1), keepdim=True) + 1e-8) * 255)


# ------------------------------------------------------------------------------------------------
# the memory


@torch.no_grad()
def memory_embeddings(
    feats: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    *,
    threshold: float,
    leak: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region embeddings to write (rca.md#memory-bank): (emb (B, K, D), write (B, K) bool).

    ``write``: ground-truth classes with probability > ``threshold``. With ``leak`` (official quirk),
    within an image the features are multiplied by each written class's mask in turn (ascending
    class order), so the 2nd+ class sees the intersection of the masks; the average still divides by
    the class's own mask size. Empty masks are not written.
    """
    write = (labels > 0.5) & (probs > threshold) & masks.flatten(2).any(-1)
    if not leak:
        return region_embeddings(feats, masks), write
    b, k = labels.shape
    emb = torch.zeros(b, k, feats.shape[1], dtype=feats.dtype, device=feats.device)
    for j in range(b):
        x = feats[j]
        for c in torch.nonzero(write[j]).flatten().tolist():
            m = masks[j, c].to(feats.dtype)
            x = x * m
            emb[j, c] = x.sum(dim=(1, 2)) / m.sum()
    return emb, write


@torch.no_grad()
def memory_write(
    queue: torch.Tensor, ptr: torch.Tensor, emb: torch.Tensor, write: torch.Tensor, *, momentum: float, blend: bool
) -> None:
    """Ring-buffer writes into ``queue`` (K, L, D) at ``ptr`` (K,), image by image, class by class (rca.md#memory-bank).

    ``blend`` (official): ``slot = momentum * slot + (1 - momentum) * emb``; else the slot is replaced.
    """
    length = queue.shape[1]
    for j in range(emb.shape[0]):
        for c in torch.nonzero(write[j]).flatten().tolist():
            p = int(ptr[c])
            e = emb[j, c].to(queue.dtype)
            queue[c, p] = momentum * queue[c, p] + (1 - momentum) * e if blend else e
            ptr[c] = (p + 1) % length


def kmeans_centroids(
    queue: torch.Tensor,
    n_clusters: int,
    *,
    n_init: int = 10,
    seed: int = 0,
    random_state: np.random.RandomState | None = None,
    fit_dtype: type = np.float64,
) -> torch.Tensor:
    """(K, L, D) queues -> (K, n_clusters, D) k-means centres of each class's queue (sklearn KMeans,
    rca.md#aggregation).

    Seeding: class c's fit uses ``random_state=seed + c``; or, when ``random_state`` is given, that one
    ``np.random.RandomState`` is passed to the fits of all classes in class order, which is what the
    official call (no ``random_state``: numpy's global RNG) amounts to. With ``RandomState(1234)``,
    ``n_init=1`` (sklearn >= 1.4's 'auto') and ``fit_dtype=np.float32`` (the official input) this replays
    golden ``rca_kmeans.npz`` bit for bit. ``n_init`` 10 is the default of the sklearn the authors ran.
    """
    from sklearn.cluster import KMeans

    out = []
    for c in range(queue.shape[0]):
        data = queue[c].detach().cpu().numpy().astype(fit_dtype)
        state = random_state if random_state is not None else seed + c
        km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=state).fit(data)
        out.append(torch.from_numpy(np.asarray(km.cluster_centers_, dtype=np.float64)))
    return torch.stack(out).to(queue.dtype)


# ------------------------------------------------------------------------------------------------
# the method


@register_method
class RCA(Method):
    name = "rca"
    Options = RCAOptions
    # its module registers `--refine rca`, which every run with CAMs accepts (an RCA run's accumulated attention
    # first): no refiner is for RCA runs alone
    cams = CamDeclaration(pooling="gap")  # rca.md#modules: the class maps' spatial mean; ``model.pooling`` is not read

    @classmethod
    def tiny_overrides(cls) -> tuple[str, dict[str, object]]:
        """Two steps in seconds on the CPU (the contract test; ``{root}``: the synthetic dataset)."""
        return "configs/rca/synthetic_cpu.yaml", {
            "model.backbone": "vgg16_dilated",
            "model.backbone_kwargs": "{width: 0.0625}",
            "options.head_dim": 8,
            "options.queue_len": 8,
            "options.num_centroids": 2,
            "options.kmeans_n_init": 1,
            "options.lr_decay_epochs": "[1]",
        }

    def __init__(self, cfg: Config, classes: Sequence[str]):
        super().__init__(cfg, classes)
        num_classes = self.num_classes
        o = self.options
        self.backbone = backbone_from_config(cfg.model)
        dim = self.backbone.out_dim
        k = self.num_fg = num_classes - 1
        self.coarse_head = _conv_stack(dim, o.head_dim, k)  # extra_convs
        self.class_heads = ClassSpecificHeads(dim, o.head_dim, k)  # extra_convs{i}
        self.embed = nn.Sequential(  # extra_F
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1),
        )
        # official: sim / num_centroids * 20, a hard-coded 20 (VOC's classes, also on COCO): x2 with 10
        # centroids; corrected: the class count of the data (the same on VOC)
        scale = (20 if o.quirk_aggregation_scale_20 else k) / o.num_centroids
        self.aggregation = SemanticAggregation(dim, dim, softmax=not o.quirk_aggregation_no_softmax, scale=scale)
        for m in [
            *self.coarse_head.modules(),
            *self.class_heads.modules(),
            *self.embed.modules(),
            *self.aggregation.modules(),
        ]:
            if isinstance(m, nn.Conv2d) and o.init_std is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, o.init_std)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # memory (rca.md#memory-bank) and centroids (rca.md#aggregation): randn-initialised buffers, saved and resumed
        self.register_buffer("queue", torch.randn(k, o.queue_len, dim))
        self.register_buffer("queue_ptr", torch.zeros(k, dtype=torch.long))
        self.register_buffer("centroids", torch.randn(k, o.num_centroids, dim))
        self.register_buffer("centroid_epoch", torch.zeros((), dtype=torch.long))
        grid = o.attention_grid or max(1, cfg.data.crop_size // int(getattr(self.backbone, "stride", 8)))
        self.attention = AttentionStore(grid)
        self._epoch = 0
        self._last_epoch: int | None = None
        # the step epochs of lr_factor: the fraction form's once the training's length is known (set_training_length)
        self._decay_fractions = lr_decay_fractions(o.lr_decay_epochs)
        self._decay_epochs: tuple[int, ...] | None = (
            None if self._decay_fractions else tuple(int(e) for e in o.lr_decay_epochs)
        )
        self._micro_step, self._micro = -1, 0

    # -- engine interface ------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official four groups by name (rca.md#training): weights / biases of the backbone and of the heads."""
        o = self.options
        heads = [self.coarse_head, self.class_heads, self.embed]
        base = [self.backbone]
        (base if o.quirk_aggregation_backbone_lr else heads).append(self.aggregation)
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_bias": [], "head": [], "head_bias": []}
        for prefix, modules in (("backbone", base), ("head", heads)):
            for mod in modules:
                for name, p in mod.named_parameters():
                    if p.requires_grad:
                        groups[prefix if "weight" in name else f"{prefix}_bias"].append(p)
        return groups

    def param_group_options(self) -> dict[str, dict[str, float]]:
        head = self.cfg.train.head_lr_mult
        return {
            "backbone": {"lr_mult": 1.0},
            "backbone_bias": {"lr_mult": 2.0},
            "head": {"lr_mult": head},
            "head_bias": {"lr_mult": 2.0 * head},
        }

    def train_transform_views(self) -> RCAViews:
        o = self.options
        return RCAViews(self.cfg.data.crop_size, o.view_crop_scale, o.view_hflip, o.view_jitter)

    def on_train_start(self, ctx: TrainContext) -> None:
        per_epoch = iterations_per_epoch(len(ctx.train_data), self.cfg.train.batch_size)
        self._last_epoch = (self.cfg.train.max_iters - 1) // per_epoch

    def on_epoch_start(self, epoch: int) -> None:
        """k-means centroids of the memory (epoch >= 1, once per epoch, rca.md#aggregation)."""
        o = self.options
        self._epoch = epoch
        if epoch > 0 and epoch > int(self.centroid_epoch):
            cent = kmeans_centroids(
                self.queue, o.num_centroids, n_init=o.kmeans_n_init, seed=self.cfg.run.seed + 1000 * epoch
            )
            self.centroids.copy_(cent.to(self.centroids.device))
            self.centroid_epoch.fill_(epoch)

    def set_training_length(self, epochs: float) -> None:
        """The step epochs of a training of ``epochs`` epochs (the fraction form's, each at the nearest epoch, at
        least 1), and the refusal of a training whose last step falls before half of it (:func:`check_lr_decay`)."""
        o = self.options
        if self._decay_fractions:
            self._decay_epochs = tuple(max(1, math.floor(f * epochs + 0.5)) for f in o.lr_decay_epochs)
        if not o.allow_early_decay:
            check_lr_decay(o.lr_decay_epochs, self._decay_epochs or (), epochs, o.lr_decay, self.cfg.train.lr)

    def lr_factor(self, epoch: int) -> float | None:
        """The lr steps (rca.md#training): base lr x ``lr_decay`` at each step epoch of ``lr_decay_epochs`` reached."""
        o = self.options
        if not o.lr_decay_epochs:
            return None
        if self._decay_epochs is None:
            raise RuntimeError("options.lr_decay_epochs holds fractions of the training: set_training_length first")
        return o.lr_decay ** sum(epoch >= e for e in self._decay_epochs)

    def get_extra_state(self) -> dict[str, Any]:
        return {"attention": self.attention.state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.attention.load(state["attention"])

    @property
    def has_seg_head(self) -> bool:
        return False

    def seg_logits(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("RCA has no segmentation head: `wsss pseudo --refine rca`, then the deeplab stage")

    # -- forward pieces --------------------------------------------------------------------------
    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.backbone(images).final
        coarse = self.coarse_head(feats)
        maps = self.class_heads(self.aggregation(feats, self.centroids.flatten(0, 1)))
        return feats, coarse, maps

    def cam_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(refined class maps, coarse maps): the CAM and the aux CAM."""
        _, coarse, maps = self._forward(images)
        return maps, coarse

    # -- one training step (rca.md#specification) -------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int, active: set[str]) -> dict[str, torch.Tensor]:
        """The unweighted terms of one step. ``batch``: ``rca_image``, ``labels``, (for the attention) ``id``,
        ``rca_box``, ``rca_flip``; optionally ``mixup_pairs`` (a :class:`MixupPairs`): the mix-up draws to use
        instead of drawing them (replays a recorded step, golden ``rca_model.npz``)."""
        o = self.options
        images, labels = batch["rca_image"], batch["labels"]
        feats, coarse, maps = self._forward(images)
        xs, xss = maps.mean(dim=(2, 3)), coarse.mean(dim=(2, 3))
        terms = {
            "cls": F.multilabel_soft_margin_loss(xs, labels),
            "coarse": F.multilabel_soft_margin_loss(xss, labels),
        }
        masks = region_masks(coarse)
        emb = self.embed(feats) if ("contrast" in active or not o.quirk_query_memory_spaces) else None
        if "contrast" in active:
            pairs = batch.get("mixup_pairs")  # injected draws (a replay), else drawn here
            if pairs is None:
                pairs = draw_mixup_pairs(
                    labels,
                    o.mixup_alpha,
                    self_partner=o.quirk_mixup_self_partner,
                    mixup=o.mixup,
                    rng=self._step_rng(step),
                )
            loss = region_contrast_loss(
                region_embeddings(emb, masks), self.queue, pairs, temperature=o.temperature, reduce="mean"
            )
            if o.quirk_contrast_sum_over_images:  # the sum over a replica's images, averaged over replicas
                loss = loss * (self.cfg.train.batch_size / o.official_replicas)
            terms["contrast"] = loss
        probs = torch.sigmoid(xs.detach())
        mem_feats = feats.detach() if o.quirk_query_memory_spaces else emb.detach()
        self._update_memory(mem_feats, masks, labels, probs)
        if self.training and self._epoch >= o.attention_start_epoch:
            self._accumulate(batch, maps, labels, probs)
        return terms

    def _step_rng(self, step: int) -> np.random.Generator:
        """The mix-up draws of a forward: a function of (seed, step, process, micro-batch of the step), so a
        resumed run replays them (the global RNG also feeds the data loader, which a resume re-creates)."""
        self._micro = self._micro + 1 if self._micro_step == step else 0
        self._micro_step = step
        return np.random.default_rng([self.cfg.run.seed, step, rank(), self._micro])

    @torch.no_grad()
    def _update_memory(self, feats: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor):
        o = self.options
        emb, write = memory_embeddings(
            feats.float(), masks, labels, probs, threshold=o.memory_threshold, leak=o.quirk_memory_masked_leak
        )
        emb, write = all_gather_cat(emb), all_gather_cat(write.to(torch.uint8)).bool()
        memory_write(
            self.queue, self.queue_ptr, emb, write, momentum=o.memory_momentum, blend=o.quirk_memory_momentum_blend
        )

    @torch.no_grad()
    def _accumulate(self, batch: dict[str, Any], maps: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor):
        o = self.options
        values, covered = maps_to_grid(
            quantise_attention(maps), batch["rca_box"], batch["rca_flip"], self.attention.grid
        )
        values = values.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        covered = covered.cpu().numpy()
        lab, pr = (labels > 0.5).cpu().numpy(), probs.float().cpu().numpy()
        updates = []
        for j, id in enumerate(batch["id"]):
            for c in np.flatnonzero(lab[j]).tolist():
                updates.append((str(id), c, values[j, c], covered[j], float(pr[j, c])))
        last = self._last_epoch is not None and self._epoch >= self._last_epoch
        for part in all_gather_objects(updates):
            for id, c, value, cov, prob in part:
                self.attention.update(id, c, value, cov, prob, last_epoch=last, min_prob=o.attention_min_prob)


@register_refiner("rca", options=("saliency",))
def refine_rca(job: RefineJob, ids: Sequence[str], *, saliency: str | Path | None = None) -> Refiner:
    """RCA's CRF proxy labels (docs/methods/rca.md#proxy-labels, ``proxy_labels.py``), of any run with CAMs.

    Attention: the run's accumulated training maps (RCA, ``options.proxy_source: accumulated``) for
    the ids that have them, else the saved CAMs (``wsss cam`` first); the background from ``saliency``
    (a directory of ``<id>.png``) if given, else saliency-free (CAM thresholds + CRF).
    """
    method, ds = job.run.method, job.ds
    options = method.options if isinstance(method, RCA) else None
    params = ProxyParams.from_options(options)
    if saliency is None:  # saliency-free: the run's CAM levels (`--levels`) decide, as for the other refiners
        params = dataclasses.replace(params, free_levels=(job.run.cfg.cam.high_thre, job.run.cfg.cam.low_thre))
    store = method.attention if options is not None and options.proxy_source == "accumulated" else None
    sal_dir = Path(saliency) if saliency is not None else None
    if sal_dir is not None and not sal_dir.is_dir():
        raise DataError(f"{sal_dir}: saliency directory not found")

    def stored(id: str) -> dict[int, np.ndarray] | None:
        return store.get(id) if store is not None else None

    job.require_cams(ids, have=lambda i: stored(i) is not None, also=" and no accumulated attention")

    def refine(id: str, image: np.ndarray, labels: np.ndarray) -> PoolCall:
        size = image.shape[:2]
        fg = np.flatnonzero(labels > 0.5).tolist()
        entry = stored(id)
        if entry is not None:  # the official skips a class whose attention file is missing
            classes, att = attention_to_image({c: entry[c] for c in fg if c in entry}, size)
        else:
            cam = job.cam(id)
            if cam.shape[1:] != size:
                cam = np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in cam])
            classes, att = fg, minmax01(cam[fg]) if fg else np.zeros((0, *size), dtype=np.float32)
        sal = read_saliency(per_id_path(sal_dir, id, ".png"), size) if sal_dir is not None else None
        return PoolCall(rca_proxy_label, (image, att, classes, ds.num_classes, sal, params))  # the pool runs it

    return refine


# `wsss import rca`: the centroid refresh epoch and the accumulated attention (by image id) are ours
register_import(
    ImportLayout(
        "rca",
        "rca",
        key_mapped(rca_state_from_official, "coarse_head.6.weight", ("centroid_epoch", "_extra_state"), official="RCA"),
        summary="rca: RCA's official checkpoint (per-class heads and memory stacked)",
    )
)
